"""A claim's allocation, read from the API server: the kubelet names a claim (namespace, name, UID), the
scheduler wrote which devices it got (`status.allocation.devices.results`), and a driver prepares only its
own of them."""

from __future__ import annotations

from typing import Any, Protocol

from pycni.services.apiserver import Connection, in_one_line
from pycni.services.dra.model import AllocatedDevice, ClaimRef, PrepareFailed

READ_TIMEOUT = (5, 15)  # seconds to connect, to read: the kubelet's own call has a deadline


class ClaimSource(Protocol):
    def allocated(self, claim: ClaimRef, driver: str) -> tuple[AllocatedDevice, ...]:
        """The devices of `claim`'s allocation that `driver` serves; PrepareFailed when it has none to give."""


class ApiClaims:
    """Claims read with the official client (`resource.k8s.io/v1`), as JSON."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def allocated(self, claim: ClaimRef, driver: str) -> tuple[AllocatedDevice, ...]:
        try:
            document = self.connection.request(
                "GET", f"/apis/resource.k8s.io/v1/namespaces/{claim.namespace}/resourceclaims/{claim.name}",
                timeout=READ_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - the API away, 404, TLS: the kubelet calls again later
            raise PrepareFailed(f"reading ResourceClaim {claim.namespace}/{claim.name}: {in_one_line(e)}") from None
        return allocation_of(document, claim, driver)


def allocation_of(document: dict[str, Any], claim: ClaimRef, driver: str) -> tuple[AllocatedDevice, ...]:
    """`driver`'s devices in a ResourceClaim's JSON, checked to be the claim the kubelet meant."""
    where = f"ResourceClaim {claim.namespace}/{claim.name}"
    uid = (document.get("metadata") or {}).get("uid")
    if uid != claim.uid:
        raise PrepareFailed(f"{where} is now another claim (UID {uid}, not {claim.uid})")
    allocation = (document.get("status") or {}).get("allocation")
    if not allocation:
        raise PrepareFailed(f"{where} is not allocated")
    results = ((allocation.get("devices") or {}).get("results")) or []
    return tuple(AllocatedDevice(request=r.get("request", ""), pool=r["pool"], device=r["device"])
                 for r in results if r.get("driver") == driver)
