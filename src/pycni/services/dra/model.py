"""What a DRA driver deals in, as frozen typed objects: the claims the kubelet names, the devices the
scheduler allocated to them, and what preparing them gave the containers. No gRPC, no API client: a driver's
logic is testable without either."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from pycni.services.devices.model import Allocation


@dataclass(frozen=True, kw_only=True)
class ClaimRef:
    """A ResourceClaim as the kubelet names it: the UID tells a claim from a later one of the same name."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, kw_only=True)
class AllocatedDevice:
    """One result of a claim's allocation for this driver (`status.allocation.devices.results[]`)."""

    request: str
    pool: str
    device: str


@dataclass(frozen=True, kw_only=True)
class PreparedDevice:
    """A device made ready for a claim: what its containers get (`edits`, written to the claim's CDI spec)
    and for which of the claim's requests."""

    pool: str
    device: str
    request_names: tuple[str, ...] = ()
    edits: Allocation = field(default_factory=Allocation)


class PrepareFailed(Exception):
    """A claim that cannot be prepared (or unprepared); its message is what the kubelet reports on the pod."""


class Driver(ABC):
    """A DRA driver's node logic. `prepare` and `unprepare` are called at most once at a time per claim, and
    never again for a claim whose preparation is checkpointed: they need not be idempotent themselves."""

    name: str  # the driver's name (a DNS subdomain, `example.com`): the ResourceSlices' and claims' `driver`

    @abstractmethod
    def prepare(self, claim: ClaimRef, devices: Sequence[AllocatedDevice]) -> Sequence[PreparedDevice]:
        """Make `devices` ready for `claim`'s pod; PrepareFailed when they cannot be."""

    @abstractmethod
    def unprepare(self, claim: ClaimRef, devices: Sequence[PreparedDevice]) -> None:
        """Undo `prepare` (the pod is gone); PrepareFailed when it cannot be undone now."""
