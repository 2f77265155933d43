"""The `netdev` resource: the node's network interfaces that match a selector, as devices for pods.

Health follows the kernel's link events (admin up and carrier = Healthy). A device handed out by
Allocate that leaves the namespace (host-device moved it into a pod) stays listed and Healthy until it
comes back: it counts as allocated while the kubelet's PodResources lists a pod holding it, or, where
PodResources cannot be reached, from Allocate until it is seen on the node again."""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pycni.host import netlink
from pycni.host.sysfs import Sysfs
from pycni.services.devices import uplink
from pycni.services.devices.framework import LOGGER, Allocation, Device, ScannedResource

log = logging.getLogger(LOGGER)


@dataclass(frozen=True, slots=True)
class Selector:
    """Fields combine with AND, the values of one field with OR; an empty field is no constraint."""

    if_names: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    pci_addresses: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.if_names or self.drivers or self.pci_addresses)

    def names_literally(self, name: str) -> bool:
        return name in self.if_names

    def matches(self, name: str, driver: str, pci: str) -> bool:
        return ((not self.if_names or any(fnmatch.fnmatchcase(name, g) for g in self.if_names))
                and (not self.drivers or driver in self.drivers)
                and (not self.pci_addresses or any(fnmatch.fnmatchcase(pci, g) for g in self.pci_addresses)))


def env_name(resource_name: str) -> str:
    """The SR-IOV device plugin's variable: `pycni.io/nic` -> `PCIDEVICE_PYCNI_IO_NIC`."""
    return "PCIDEVICE_" + "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_"
                                  for c in resource_name.upper())


@dataclass(slots=True)
class _Link:
    name: str
    pci: str
    numa_node: int
    healthy: bool


@dataclass
class NetdevResource(ScannedResource):
    name: str
    selector: Selector
    sysfs: Sysfs = field(default_factory=Sysfs)
    pod_resources_socket: str = ""
    node: uplink.NodeAddresses = field(default_factory=uplink.NodeAddresses)
    allow_uplink: bool = False
    claimed_elsewhere: Callable[[str], bool] = lambda pci: False  # a PCI function another resource takes
    excluded: dict[str, str] = field(default_factory=dict)  # selected interfaces the node keeps, and why
    links: dict[str, _Link] = field(default_factory=dict)  # by netdev name, on the node now
    away: set[str] = field(default_factory=set)  # device IDs allocated and out of the namespace
    allocated: set[str] = field(default_factory=set)  # device IDs handed out by Allocate
    lock: threading.Lock = field(default_factory=threading.Lock)
    scanned: threading.Event = field(default_factory=threading.Event)

    # the device list

    def _ids(self) -> dict[str, _Link]:
        """Device ID -> link: the PCI address when the link has one of its own, else its name."""
        by_pci: dict[str, int] = {}
        for link in self.links.values():
            if link.pci:
                by_pci[link.pci] = by_pci.get(link.pci, 0) + 1
        return {(link.pci if link.pci and by_pci[link.pci] == 1 else link.name): link for link in self.links.values()}

    def devices(self) -> list[Device]:
        if not self.scanned.is_set():  # the first list must be whole: read the node before answering
            self.scan()
        with self.lock:
            present = {i: Device(i, link.healthy, link.numa_node) for i, link in self._ids().items()}
            for device_id in self.away - present.keys():
                present[device_id] = Device(device_id, True)  # in a pod: held, and healthy as far as we know
            return list(present.values())

    def allocate(self, ids: list[str]) -> Allocation:
        with self.lock:
            self.allocated.update(ids)
        joined = ",".join(ids)
        return Allocation(envs={env_name(self.name): joined}, annotations={self.name: joined})

    # link events

    def _read(self, nl: netlink.Netlink, name: str, uplinks: uplink.Uplinks | None = None) -> _Link | None:
        info = nl.link_named(name)
        if info is None:
            return None
        driver = self.sysfs.driver_of(name) or info.kind
        pci = self.sysfs.pci_address_of(name)
        if name == "lo" or not self.selector.matches(name, driver, pci) or (pci and self.claimed_elsewhere(pci)):
            return None
        uplinks = uplink.find(nl, self.node) if uplinks is None else uplinks
        reason = uplinks.excludes(name)
        if reason and not (self.allow_uplink and self.selector.names_literally(name)):
            with self.lock:
                known = self.excluded.get(name) == reason
                self.excluded[name] = reason
            if not known:
                log.warning("%s: not offering %s: it %s", self.name, name, reason)
            return None
        with self.lock:
            self.excluded.pop(name, None)
        return _Link(name, pci, self.sysfs.numa_node_of(name), info.up and info.carrier)

    def scan(self) -> None:
        with netlink.session() as nl:
            links = nl.links()
            uplinks = uplink.find(nl, self.node, links)
            found = [self._read(nl, link.name, uplinks) for link in links]
        with self.lock:
            self.links = {link.name: link for link in found if link is not None}
        self.scanned.set()

    def watch(self, changed: Callable[[], None]) -> None:
        with netlink.link_events() as events, netlink.session() as nl:
            self.scan()  # subscribed first: no change between this dump and the events is lost
            changed()
            for kind, name in events:
                if self._update(nl, kind, name):
                    changed()

    def _update(self, nl: netlink.Netlink, kind: str, name: str) -> bool:
        """Apply one link event; True when the device list changed."""
        link = self._read(nl, name) if kind == "new" else None
        with self.lock:
            before = self._snapshot()
            old = self.links.pop(name, None)
            if link is not None:
                self.links[name] = link
                if old is None:  # (back) on the node: whatever pod held it has given it back
                    self.away.discard(self._id_of(link))
                    self.allocated.discard(self._id_of(link))
            elif old is not None:  # deleted, moved to another namespace, or no longer selected
                device_id = self._id_of(old, gone=True)
                if device_id in self.allocated or self._held_by_a_pod(device_id):
                    self.away.add(device_id)
            return self._snapshot() != before

    def _id_of(self, link: _Link, gone: bool = False) -> str:
        if not link.pci:
            return link.name
        sharing = sum(1 for other in self.links.values() if other.pci == link.pci) + (1 if gone else 0)
        return link.pci if sharing <= 1 else link.name

    def _snapshot(self) -> tuple:
        return tuple(sorted((i, link.healthy) for i, link in self._ids().items())) + tuple(sorted(self.away))

    def _held_by_a_pod(self, device_id: str) -> bool:
        """Whether the kubelet's PodResources lists a pod holding `device_id` (False when it cannot say)."""
        if not self.pod_resources_socket or not os.path.exists(self.pod_resources_socket):
            return False
        from pycni.kubelet.podresources import PodResourcesClient, PodResourcesError

        try:
            with PodResourcesClient(self.pod_resources_socket) as client:
                return any(h.resource_name == self.name and device_id in h.device_ids for h in client.holdings())
        except PodResourcesError:
            return False
