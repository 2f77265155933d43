"""PCI devices as a resource, the way the SR-IOV network device plugin offers them: the devices of one kind
(`kinds.py`) that the resource's selectors take, enumerated from sysfs. A VF bound to vfio-pci has no
netdev and is a device all the same, handed to the pod as its `/dev/vfio` nodes.

Health: a VF (or SF) follows its PF's link (up with carrier); a VF that is in a pod stays listed, since the
PCI function is still on the node. A device without a PF follows its own link, or is healthy while present.
Changes are seen as they happen: link events for carrier, the kernel's uevents for functions that come and go
(`sriov_numvfs` changed, a driver bound). Allocate answers the SR-IOV device plugin's `PCIDEVICE_<NAME>` and
`PCIDEVICE_<NAME>_INFO` variables and writes the device-info file Multus reads.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pycni.host import netlink, uevent
from pycni.host.sysfs import Sysfs, normal_pci_address
from pycni.services.devices.attributes import nic_attributes
from pycni.services.devices.holdings import Holdings
from pycni.services.devices.model import (
    LOGGER,
    Allocation,
    Attributes,
    Device,
    DeviceNode,
    NodePaths,
    ScannedResource,
)
from pycni.services.devices.netdev import env_name
from pycni.services.devices.pci.device_info import DeviceInfoFiles
from pycni.services.devices.pci.events import device_events
from pycni.services.devices.pci.kinds import PciKind
from pycni.services.devices.pci.selectors import Candidate, PciSelector, candidate, healthy, vf_number
from pycni.services.devices.uplink import Uplinks, find

log = logging.getLogger(LOGGER)

DEFAULT_NODE = NodePaths()


@dataclass(frozen=True)
class PciOptions:
    """A `resourceList` entry as the resource reads it."""

    selectors: tuple[PciSelector, ...]
    allow_uplink: bool = False
    exclude_topology: bool = False
    additional_info: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class _Listed:
    candidate: Candidate
    selector: PciSelector
    healthy: bool
    carrier: bool | None = None  # its interface's, None without one


class PciClaims:
    """The PCI resources of one config in its order: a device goes to the first resource that selects it
    (SR-IOV `resourceList` entries before `netdev` resources, as they are the more specific)."""

    def __init__(self) -> None:
        self.resources: list[PciResource] = []

    def taken_before(self, resource: PciResource, c: Candidate) -> bool:
        earlier = self.resources[:self.resources.index(resource)] if resource in self.resources else self.resources
        return any(other.kind is resource.kind and other.select(c) is not None for other in earlier)

    def takes_address(self, address: str) -> bool:
        """Whether any PCI resource takes the PCI function `address` (a `netdev` resource must leave it)."""
        return any(r.selects_address(address) for r in self.resources)


class PciResource(ScannedResource):
    def __init__(self, name: str, kind: PciKind, options: PciOptions, *, node: NodePaths = DEFAULT_NODE,
                 claims: PciClaims | None = None) -> None:
        super().__init__(name)
        self.kind = kind
        self.options = options
        self.sysfs = Sysfs(node.sysfs_root)
        self.addresses = node.addresses
        self.dev_root = node.dev_root
        self.claims = claims or PciClaims()
        self.claims.resources.append(self)
        self.info_files = DeviceInfoFiles(name, node.device_info_dir, Holdings(node.pod_resources_socket))
        self.entries: dict[str, _Listed] = {}
        self.relevant_links: set[str] = set()  # netdevs whose events can change the list

    # what is on the node

    def candidates(self, links: dict[str, netlink.LinkInfo]) -> list[Candidate]:
        functions = {a: f for a in self.sysfs.pci_addresses() if (f := self.sysfs.pci_function(a)) is not None}
        return self.kind.candidates(self.sysfs, functions, links)

    def select(self, c: Candidate) -> PciSelector | None:
        """The first selector that takes the device (the SR-IOV device plugin's order)."""
        return next((s for s in self.options.selectors if s.matches(c)), None)

    def selects_address(self, address: str) -> bool:
        """Whether this resource takes the PCI function `address` (another resource must then leave it)."""
        f = self.sysfs.pci_function(normal_pci_address(address))
        if f is None or self.kind.name == "auxNetDevice":
            return False
        pf = self.sysfs.pci_function(f.pf) if f.pf else None
        return self.select(candidate(f.address, f, f.driver, f.netdevs, pf, vf_number(pf, f.address), {})) is not None

    def scan(self) -> None:
        with netlink.session() as nl:
            link_list = nl.links()
            uplinks = find(nl, self.addresses, link_list)
        links = {link.name: link for link in link_list}
        entries: dict[str, _Listed] = {}
        excluded: dict[str, str] = {}
        relevant: set[str] = set()
        for c in self.candidates(links):
            relevant.update(c.function.netdevs, (c.netdev, c.pf_netdev))
            selector = self.select(c)
            if selector is None or self.claims.taken_before(self, c):
                continue
            reason = self._uplink_reason(c, selector, uplinks)
            if reason:
                excluded[c.id] = reason
                continue
            link = links.get(c.netdev)
            entries[c.id] = _Listed(c, selector, healthy(c, links), link.carrier if link is not None else None)
        with self.lock:
            self.entries = entries
            self.relevant_links = relevant
            newly = {k: v for k, v in excluded.items() if self.excluded.get(k) != v}
            self.excluded = excluded
        for device_id, reason in sorted(newly.items()):
            log.warning("%s: not offering %s: %s", self.name, device_id, reason)
        self.scanned.set()

    def _uplink_reason(self, c: Candidate, selector: PciSelector, uplinks: Uplinks) -> str:
        reason = uplinks.excludes(c.netdev) if c.netdev else ""
        if reason and self.options.allow_uplink and selector.names_literally(c):
            return ""
        return f"its interface {c.netdev} {reason}" if reason else ""

    def listed(self) -> list[Device]:
        return [Device(i, healthy=entry.healthy,
                       numa_node=-1 if self.options.exclude_topology else entry.candidate.function.numa_node)
                for i, entry in self.entries.items()]

    def attributes(self, device_id: str) -> Attributes:
        with self.lock:
            entry = self.entries.get(device_id)
        if entry is None:
            return {}
        c = entry.candidate
        return nic_attributes(ifname=c.netdev, link_type=c.link_type, driver=c.driver, function=c.function,
                              numa_node=-1 if self.options.exclude_topology else c.function.numa_node,
                              pf_netdev=c.pf_netdev, carrier=entry.carrier)

    # changes

    def _matters(self, event: object) -> bool:
        """Whether an event can change this resource: a PCI or auxiliary device's uevent, or a link event of
        a device's (or its PF's) netdev, or of any netdev backed by a PCI function (one coming back)."""
        if isinstance(event, uevent.UEvent):
            return event.subsystem in ("pci", "auxiliary") or event.devpath.startswith("/devices/pci")
        assert isinstance(event, tuple)
        name: str = event[1]
        with self.lock:
            known = name in self.relevant_links
        return known or bool(self.sysfs.pci_address_of(name))

    def _snapshot(self) -> tuple[tuple[str, bool, bool | None], ...]:
        with self.lock:
            return tuple(sorted((i, e.healthy, e.carrier) for i, e in self.entries.items()))

    def watch(self, changed: Callable[[], None]) -> None:
        """Rescan on every link event and device uevent (a burst of them: once), and say when the list or a
        device's health changed."""
        with device_events(self.name) as bursts:
            self.scan()
            changed()
            for burst in bursts:
                if not any(map(self._matters, burst)):  # a pod's veth, an ifb: nothing of ours
                    continue
                before = self._snapshot()
                self.scan()
                self.release_device_info()
                if self._snapshot() != before:
                    changed()

    # Allocate

    def allocate(self, ids: list[str]) -> Allocation:
        with self.lock:
            entries = {i: self.entries[i] for i in ids if i in self.entries}
        info: dict[str, dict[str, Any]] = {}
        nodes: list[DeviceNode] = []
        for device_id in ids:
            entry = entries.get(device_id)
            if entry is None:
                continue
            c = entry.candidate
            device_info, device_nodes = self.kind.describe(c, entry.selector, self._present)
            extra = {**self.options.additional_info.get("*", {}), **self.options.additional_info.get(c.id, {})}
            if extra:
                device_info["extraInfo"] = extra
            info[device_id] = device_info
            nodes += [n for n in device_nodes if n not in nodes]
            content = self.kind.device_info(c, entry.selector)
            if content:
                self.info_files.write(c.id, content)
        variable = env_name(self.name)
        return Allocation(envs={variable: ",".join(ids), f"{variable}_INFO": json.dumps(info, sort_keys=True)},
                          device_nodes=nodes)

    def _present(self, path: str) -> bool:
        return os.path.exists(os.path.join(self.dev_root, os.path.relpath(path, "/dev")))

    def release_device_info(self) -> None:
        with self.lock:
            here = {i: bool(entry.candidate.netdev) for i, entry in self.entries.items()}
        self.info_files.release(here)

