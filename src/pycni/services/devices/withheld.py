"""Devices withheld from a resource: a pod holds them through another resource that no longer offers them
(its selector changed, it was renamed or removed). The kubelet keeps that pod's allocation under the old name
and would hand the device out again under the new one, so the new one lists it Unhealthy until it is given
back; and a device prepared for a DRA claim by `pycni dra`. Pure: `withheld` and `prepared_for_claims` decide
from what the daemon gathered."""

from __future__ import annotations

from collections.abc import Mapping, Set

from pycni.services.devices.holdings import Held
from pycni.services.dra.names import DRIVER_NAME, device_name, prefixes

ALLOCATED_HERE = "a container (Allocate)"


def withheld(offered: Mapping[str, list[str]], listed: Mapping[str, Set[str]], held: Held) -> dict[str, dict[str, str]]:
    """Per resource, the devices it offers (`offered`: resource -> device IDs) that a pod holds (`held`)
    through another resource which does not list them (`listed`: what each lists as its own), each with why."""
    out: dict[str, dict[str, str]] = {}
    for name, device_ids in offered.items():
        out[name] = {}
        for device_id in device_ids:
            for holder_resource, holders in held.items():
                if holder_resource != name and device_id in holders \
                        and device_id not in listed.get(holder_resource, ()):
                    out[name][device_id] = (f"held by {holders[device_id]} through {holder_resource}: offered again "
                                            "once it is given back")
    return out


def prepared_for_claims(offered: Mapping[str, list[str]], prepared: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Per resource, the devices it offers that `pycni dra` prepared for a claim (`prepared`: device name in its
    pool -> the claim), each with why: one owner per device."""
    names = prefixes(list(offered))
    out: dict[str, dict[str, str]] = {}
    for resource_name, device_ids in offered.items():
        for device_id in device_ids:
            claim = prepared.get(device_name(names[resource_name], device_id))
            if claim:
                out.setdefault(resource_name, {})[device_id] = (
                    f"prepared for claim {claim} by the DRA driver {DRIVER_NAME}: offered again once it is unprepared")
    return out


def held_here(allocated: Mapping[str, Set[str]]) -> Held:
    """What this daemon handed out, per resource: the holdings where the kubelet cannot say (kept until the
    daemon exits: it cannot see them freed)."""
    return {name: dict.fromkeys(ids, ALLOCATED_HERE) for name, ids in allocated.items()}
