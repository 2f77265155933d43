"""The `netdev` resource: the node's network interfaces that match a selector, as devices for pods.

Health follows the kernel's link events (admin up and carrier = Healthy). A device handed out by
Allocate that leaves the namespace (host-device moved it into a pod) stays listed and Healthy until it
comes back: it counts as allocated while the kubelet's PodResources lists a pod holding it, or, where
PodResources cannot be reached, from Allocate until it is seen on the node again."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycni.host import netlink
from pycni.host.sysfs import PCI_ADDRESS, Sysfs, normal_pci_address
from pycni.services.devices import uplink
from pycni.services.devices.attributes import nic_attributes, pf_netdev_of
from pycni.services.devices.holdings import Holdings
from pycni.services.devices.model import (
    LOGGER,
    Allocation,
    Attributes,
    Device,
    NodePaths,
    OptionError,
    Resource,
    ScannedResource,
)

log = logging.getLogger(LOGGER)
DEFAULT_NODE = NodePaths()


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
    carrier: bool = False
    driver: str = ""
    link_type: str = ""


class NetdevResource(ScannedResource):
    def __init__(self, name: str, selector: Selector, *, node: NodePaths = DEFAULT_NODE, allow_uplink: bool = False,
                 claimed_elsewhere: Callable[[str], bool] = lambda pci: False) -> None:
        super().__init__(name)
        self.selector = selector
        self.sysfs = Sysfs(node.sysfs_root)
        self.holdings = Holdings(node.pod_resources_socket)
        self.addresses = node.addresses
        self.allow_uplink = allow_uplink
        self.claimed_elsewhere = claimed_elsewhere  # a PCI function another resource takes
        self.links: dict[str, _Link] = {}  # by netdev name, on the node now
        self.away: set[str] = set()  # device IDs allocated and out of the namespace
        self.allocated: set[str] = set()  # device IDs handed out by Allocate

    # the device list

    def _ids(self) -> dict[str, _Link]:
        """Device ID -> link: the PCI address when the link has one of its own, else its name."""
        by_pci: dict[str, int] = {}
        for link in self.links.values():
            if link.pci:
                by_pci[link.pci] = by_pci.get(link.pci, 0) + 1
        return {(link.pci if link.pci and by_pci[link.pci] == 1 else link.name): link for link in self.links.values()}

    def listed(self) -> list[Device]:
        present = {i: Device(i, healthy=link.healthy, numa_node=link.numa_node) for i, link in self._ids().items()}
        for device_id in self.away - present.keys():
            present[device_id] = Device(device_id)  # in a pod: held, and healthy as far as we know
        return list(present.values())

    def allocate(self, ids: list[str]) -> Allocation:
        with self.lock:
            self.allocated.update(ids)
        joined = ",".join(ids)
        return Allocation(envs={env_name(self.name): joined}, annotations={self.name: joined})

    def attributes(self, device_id: str) -> Attributes:
        with self.lock:
            link = self._ids().get(device_id)
        if link is None:
            return {}
        function = self.sysfs.pci_function(link.pci) if link.pci else None
        return nic_attributes(ifname=link.name, link_type=link.link_type, driver=link.driver,
                              numa_node=link.numa_node, function=function,
                              pf_netdev=pf_netdev_of(self.sysfs, function), carrier=link.carrier)

    # link events

    def _read(self, nl: netlink.Netlink, name: str, uplinks: uplink.Uplinks | None = None) -> _Link | None:
        info = nl.link_named(name)
        if info is None:
            return None
        driver = self.sysfs.driver_of(name) or info.kind
        pci = self.sysfs.pci_address_of(name)
        if name == "lo" or not self.selector.matches(name, driver, pci) or (pci and self.claimed_elsewhere(pci)):
            return None
        uplinks = uplink.find(nl, self.addresses) if uplinks is None else uplinks
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
        return _Link(name, pci, self.sysfs.numa_node_of(name), info.up and info.carrier, info.carrier, driver,
                     info.link_type)

    def scan(self) -> None:
        with netlink.session() as nl:
            links = nl.links()
            uplinks = uplink.find(nl, self.addresses, links)
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
                if device_id in self.allocated or device_id in (self.holdings.of(self.name) or ()):
                    self.away.add(device_id)
            return self._snapshot() != before

    def _id_of(self, link: _Link, gone: bool = False) -> str:
        if not link.pci:
            return link.name
        sharing = sum(1 for other in self.links.values() if other.pci == link.pci) + (1 if gone else 0)
        return link.pci if sharing <= 1 else link.name

    def _snapshot(self) -> tuple[object, ...]:
        return tuple(sorted((i, link.healthy, link.carrier) for i, link in self._ids().items())) \
            + tuple(sorted(self.away))


EMPTY_SELECTOR = ("selects every interface of the node: name what to offer in ifNames, drivers or pciAddresses "
                  "(all of them, deliberately: \"ifNames\": [\"*\"])")


def build(name: str, options: dict[str, Any], node: NodePaths,
          claimed_elsewhere: Callable[[str], bool] = lambda pci: False) -> Resource:
    """The `netdev` type from its config keys (`selector`, `allowUplink`); OptionError when it would offer
    more than it names."""
    raw = options["selector"]
    addresses = tuple(normal_pci_address(a) if PCI_ADDRESS.match(a) else a for a in raw.get("pciAddresses", ()))
    selector = Selector(tuple(raw.get("ifNames", ())), tuple(raw.get("drivers", ())), addresses)
    if selector.is_empty():
        raise OptionError("selector", EMPTY_SELECTOR)
    allow_uplink = options.get("allowUplink", False)
    if allow_uplink and not any(not re.search(r"[*?\[]", n) for n in selector.if_names):
        raise OptionError("allowUplink", "offers an interface the node uses only when ifNames names it literally, "
                         "and none is named without a wildcard")
    return NetdevResource(name, selector, node=node, allow_uplink=allow_uplink,
                          claimed_elsewhere=claimed_elsewhere).resource()
