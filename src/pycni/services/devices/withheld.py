"""Devices withheld from a resource: a pod holds them through another resource that no longer offers them
(its selector changed, it was renamed or removed). The kubelet keeps that pod's allocation under the old name
and would hand the device out again under the new one, so the new one lists it Unhealthy until it is given
back; and a device prepared for a DRA claim by `pycni dra`. `withheld` and `prepared_for_claims` decide, pure;
`Withholding` gathers what they decide from (PodResources, what the daemon handed out, the DRA driver's
checkpoint) and tells the resources whose withheld devices changed."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Set

from pycni.services.devices.framework import ResourcePlugin
from pycni.services.devices.holdings import Held, Holdings
from pycni.services.devices.model import LOGGER
from pycni.services.devices.state import StateFile
from pycni.services.dra.checkpoint import prepared_devices
from pycni.services.dra.names import DRIVER_NAME, device_name, prefixes

log = logging.getLogger(LOGGER)

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


class Withholding:
    """The daemon's withheld devices, kept current: from PodResources (or, where the kubelet cannot say,
    what this daemon handed out, removed resources included) and `pycni dra`'s checkpoint (`dra_checkpoint`,
    '' without the driver)."""

    def __init__(self, holdings: Holdings, state: StateFile, dra_checkpoint: str = "") -> None:
        self.holdings = holdings
        self.state = state
        self.dra_checkpoint = dra_checkpoint
        self.dra_unreadable = ""  # the checkpoint's last error, said once
        self.removed_allocations: dict[str, set[str]] = {}  # resource name -> IDs it handed out, once removed

    def removed(self, plugins: Sequence[ResourcePlugin]) -> None:
        """Keep what resources no longer served handed out: pods still hold it."""
        for plugin in plugins:
            self.removed_allocations.setdefault(plugin.resource.name, set()).update(plugin.allocated_ids)

    def held(self, plugins: Sequence[ResourcePlugin]) -> Held:
        """Device IDs held by pods, per resource name, each with its holder."""
        held = self.holdings.current(quiet=False)
        if held is not None:
            return held
        allocated = {name: set(ids) for name, ids in self.removed_allocations.items()}
        for plugin in plugins:
            allocated.setdefault(plugin.resource.name, set()).update(plugin.allocated_ids)
        return held_here(allocated)

    def update(self, plugins: Sequence[ResourcePlugin]) -> bool:
        """Mark Unhealthy, in every resource, the devices a pod holds through another resource that no longer
        offers them, and those prepared for a DRA claim. True while any is (PodResources is asked again)."""
        offered = {p.resource.name: [d.id for d in p.resource.list_devices()] for p in plugins}
        listed = {p.resource.name: set(offered[p.resource.name]) - p.withheld.keys() for p in plugins}
        now = withheld(offered, listed, self.held(plugins))
        for resource_name, devices in prepared_for_claims(offered, self.prepared_through_dra()).items():
            now[resource_name].update(devices)
        changed = {p: now[p.resource.name] for p in plugins if now[p.resource.name] != p.withheld}
        for plugin, devices in changed.items():
            for device_id in devices.keys() - plugin.withheld.keys():
                log.warning("%s: not offering %s: %s", plugin.resource.name, device_id, devices[device_id])
        if changed:
            self.state.write(plugins, changed)  # first: what the kubelet hears of, `pycni status` explains
        for plugin in changed:
            plugin.changed()
        return any(now.values())

    def prepared_through_dra(self) -> dict[str, str]:
        """Device name in `pycni dra`'s pool -> the claim it is prepared for ({} without the driver)."""
        if not self.dra_checkpoint:
            return {}
        try:
            claimed = prepared_devices(self.dra_checkpoint)
        except ValueError as e:
            if str(e) != self.dra_unreadable:
                log.error("%s", e)
                self.dra_unreadable = str(e)
            return {}
        self.dra_unreadable = ""
        return claimed
