"""PCI devices as resources, the way the SR-IOV network device plugin offers them: VFs and PFs (`netDevice`),
accelerators, and auxiliary devices such as subfunctions (`auxNetDevice`), enumerated from sysfs and chosen by
that plugin's selectors. A VF bound to vfio-pci has no netdev and is a device all the same, handed to the pod
as its `/dev/vfio` nodes.

Health: a VF (or SF) follows its PF's link (up with carrier); a VF that is in a pod stays listed, since the
PCI function is still on the node. A device without a PF follows its own link, or is healthy while present.
Changes are seen as they happen: link events for carrier, the kernel's uevents for functions that come and go
(`sriov_numvfs` changed, a driver bound). Allocate answers the SR-IOV device plugin's `PCIDEVICE_<NAME>` and
`PCIDEVICE_<NAME>_INFO` variables and writes the device-info file Multus reads (k8snetworkplumbingwg
device-info spec), removed again once no pod holds the device.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pycni.host import netlink, uevent
from pycni.host.files import replace_file
from pycni.host.sysfs import PciFunction, Sysfs, normal_pci_address
from pycni.services.devices.framework import LOGGER, Allocation, Device, DeviceNode, ScannedResource
from pycni.services.devices.netdev import env_name
from pycni.services.devices.uplink import NodeAddresses, Uplinks, find

log = logging.getLogger(LOGGER)

NET_DEVICE, ACCELERATOR, AUX_NET_DEVICE = "netDevice", "accelerator", "auxNetDevice"
DEVICE_INFO_DIR = "/var/run/k8s.cni.cncf.io/devinfo/dp"
DEVICE_INFO_VERSION = "1.1.0"
DEVICE_INFO_GRACE = 60.0  # seconds a fresh device-info file is kept before PodResources can be asked about it
VFIO_DRIVERS = ("vfio-pci",)
SUBSCRIBE_TIMEOUT = 10.0


def parse_functions(entry: str) -> tuple[str, frozenset[int] | None]:
    """`enp1s0f0#0,2-7,9` -> (`enp1s0f0`, {0, 2..7, 9}); no `#`: every function. ValueError when malformed."""
    name, hash_sign, spec = entry.partition("#")
    if not name:
        raise ValueError(f"{entry!r} names no PF")
    if not hash_sign:
        return name, None
    indexes: set[int] = set()
    for part in spec.split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{entry!r}: {part!r} is not a function index or a range first-last")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"{entry!r}: range {part!r} ends before it starts")
        indexes.update(range(low, high + 1))
    return name, frozenset(indexes)


@dataclass(frozen=True)
class Candidate:
    """A device as a selector sees it. For a VF or SF, `pf_*` describe its PF and `index` its number there."""

    id: str
    function: PciFunction  # the device's PCI function (an auxiliary device's parent)
    driver: str
    netdev: str = ""  # its interface in this namespace now, "" when none
    pf_address: str = ""
    pf_netdev: str = ""
    index: int = -1
    link_type: str = ""
    aux_type: str = ""

    @property
    def vfio(self) -> bool:
        return self.driver in VFIO_DRIVERS and bool(self.function.iommu_group)


@dataclass(frozen=True)
class PciSelector:
    """One selector object: its fields combine with AND, the values of one field with OR."""

    vendors: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    pci_addresses: tuple[str, ...] = ()
    acpi_indexes: tuple[str, ...] = ()
    pf_names: tuple[tuple[str, frozenset[int] | None], ...] = ()
    root_devices: tuple[tuple[str, frozenset[int] | None], ...] = ()
    link_types: tuple[str, ...] = ()
    aux_types: tuple[str, ...] = ()
    is_rdma: bool = False
    need_vhost_net: bool = False

    def is_empty(self) -> bool:
        return not (self.vendors or self.devices or self.drivers or self.pci_addresses or self.acpi_indexes
                    or self.pf_names or self.root_devices or self.link_types or self.aux_types or self.is_rdma)

    def names_literally(self, candidate: Candidate) -> bool:
        """Whether this selector names the device itself (not a pattern or a family of devices)."""
        return candidate.id in self.pci_addresses

    def matches(self, c: Candidate) -> bool:
        f = c.function
        return ((not self.vendors or f.vendor in self.vendors)
                and (not self.devices or f.device in self.devices)
                and (not self.drivers or c.driver in self.drivers)
                and (not self.pci_addresses or c.id in self.pci_addresses)
                and (not self.acpi_indexes or f.acpi_index in self.acpi_indexes)
                and (not self.pf_names or _in_functions(self.pf_names, c.pf_netdev, c.index))
                and (not self.root_devices or _in_functions(self.root_devices, c.pf_address, c.index))
                and (not self.link_types or c.link_type in self.link_types)
                and (not self.aux_types or c.aux_type in self.aux_types)
                and (not self.is_rdma or bool(f.rdma)))


def _in_functions(wanted: tuple[tuple[str, frozenset[int] | None], ...], parent: str, index: int) -> bool:
    return bool(parent) and index >= 0 and any(
        name == parent and (indexes is None or index in indexes) for name, indexes in wanted)


@dataclass
class _InfoFile:
    written: float  # time.monotonic()
    away: bool = False  # its interface has left the node (into the pod) since
    content: str = ""

@dataclass
class _Listed:
    candidate: Candidate
    selector: PciSelector
    healthy: bool


@dataclass
class PciResource(ScannedResource):
    name: str
    kind: str
    selectors: list[PciSelector]
    sysfs: Sysfs = field(default_factory=Sysfs)
    node: NodeAddresses = field(default_factory=NodeAddresses)
    allow_uplink: bool = False
    exclude_topology: bool = False
    additional_info: dict[str, dict[str, str]] = field(default_factory=dict)
    device_info_dir: str = DEVICE_INFO_DIR
    pod_resources_socket: str = ""
    dev_root: str = "/dev"
    earlier: list[PciResource] = field(default_factory=list)  # resources before this one claim first
    listed: dict[str, _Listed] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # device ID -> why the node keeps it
    relevant_links: set[str] = field(default_factory=set)  # netdevs whose events can change the list
    info_files: dict[str, _InfoFile] = field(default_factory=dict)  # device ID -> its device-info file
    lock: threading.Lock = field(default_factory=threading.Lock)
    scanned: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------ what is on the node

    def candidates(self, links: dict[str, netlink.LinkInfo]) -> list[Candidate]:
        """Every device of this resource's kind on the node, each PCI function read from sysfs once."""
        functions = {a: f for a in self.sysfs.pci_addresses() if (f := self.sysfs.pci_function(a)) is not None}
        if self.kind == AUX_NET_DEVICE:
            return self._auxiliary(functions, links)
        found = []
        for address, f in functions.items():
            if f.vfs > 0:  # a PF whose VFs are the devices
                continue
            if (f.is_accelerator if self.kind == ACCELERATOR else f.is_network):
                pf = functions.get(f.pf)
                found.append(self._candidate(address, f, f.driver, f.netdevs, pf, _vf_number(pf, address), links))
        return found

    @staticmethod
    def _candidate(device_id: str, f: PciFunction, driver: str, netdevs: tuple[str, ...], pf: PciFunction | None,
                   index: int, links: dict[str, netlink.LinkInfo], aux_type: str = "") -> Candidate:
        netdev = next((n for n in netdevs if n in links), "")
        pf_netdev = next((n for n in pf.netdevs if n in links), "") if pf else ""
        typed = links.get(netdev) or links.get(pf_netdev)
        return Candidate(device_id, f, driver, netdev, pf.address if pf else "", pf_netdev, index,
                         typed.link_type if typed else "", aux_type)

    def _auxiliary(self, functions: dict[str, PciFunction], links: dict[str, netlink.LinkInfo]) -> list[Candidate]:
        found = []
        for name, parent in self.sysfs.auxiliary_devices():
            f = functions.get(parent)
            if f is None:
                continue
            parts = name.split(".")
            index = int(parts[-1]) if len(parts) == 3 and parts[-1].isdigit() else -1
            aux_type = parts[1] if len(parts) == 3 else ""
            netdevs = tuple(self.sysfs.netdevs_of_auxiliary(name))
            found.append(self._candidate(name, f, self.sysfs.auxiliary_driver(name), netdevs, f, index, links,
                                         aux_type))
        return found

    def select(self, candidate: Candidate) -> PciSelector | None:
        """The first selector that takes the device (the SR-IOV device plugin's order)."""
        return next((s for s in self.selectors if s.matches(candidate)), None)

    def _claimed_earlier(self, candidate: Candidate) -> bool:
        return any(other.kind == self.kind and other.select(candidate) is not None for other in self.earlier)

    def selects_address(self, address: str) -> bool:
        """Whether this resource takes the PCI function `address` (another resource must then leave it)."""
        f = self.sysfs.pci_function(normal_pci_address(address))
        if f is None or self.kind == AUX_NET_DEVICE:
            return False
        pf = self.sysfs.pci_function(f.pf) if f.pf else None
        return self.select(self._candidate(f.address, f, f.driver, f.netdevs, pf, _vf_number(pf, f.address),
                                           {})) is not None

    def scan(self) -> None:
        with netlink.session() as nl:
            link_list = nl.links()
            uplinks = find(nl, self.node, link_list)
        links = {link.name: link for link in link_list}
        listed: dict[str, _Listed] = {}
        excluded: dict[str, str] = {}
        relevant: set[str] = set()
        for candidate in self.candidates(links):
            relevant.update(candidate.function.netdevs, (candidate.netdev, candidate.pf_netdev))
            selector = self.select(candidate)
            if selector is None or self._claimed_earlier(candidate):
                continue
            reason = self._uplink_reason(candidate, selector, uplinks)
            if reason:
                excluded[candidate.id] = reason
                continue
            listed[candidate.id] = _Listed(candidate, selector, _healthy(candidate, links))
        with self.lock:
            self.listed = listed
            self.relevant_links = relevant
            newly = {k: v for k, v in excluded.items() if self.excluded.get(k) != v}
            self.excluded = excluded
        for device_id, reason in sorted(newly.items()):
            log.warning("%s: not offering %s: %s", self.name, device_id, reason)
        self.scanned.set()

    def _matters(self, event) -> bool:
        """Whether an event can change this resource: a PCI or auxiliary device's uevent, or a link event of
        a device's (or its PF's) netdev, or of any netdev backed by a PCI function (one coming back)."""
        if isinstance(event, uevent.UEvent):
            return event.subsystem in ("pci", "auxiliary") or event.devpath.startswith("/devices/pci")
        _, name = event
        with self.lock:
            known = name in self.relevant_links
        return known or bool(self.sysfs.pci_address_of(name))

    def _uplink_reason(self, candidate: Candidate, selector: PciSelector, uplinks: Uplinks) -> str:
        reason = uplinks.excludes(candidate.netdev) if candidate.netdev else ""
        if reason and self.allow_uplink and selector.names_literally(candidate):
            return ""
        return f"its interface {candidate.netdev} {reason}" if reason else ""

    def devices(self) -> list[Device]:
        if not self.scanned.is_set():
            self.scan()
        with self.lock:
            return [Device(i, entry.healthy, -1 if self.exclude_topology else entry.candidate.function.numa_node)
                    for i, entry in self.listed.items()]

    def _snapshot(self) -> tuple:
        with self.lock:
            return tuple(sorted((i, e.healthy) for i, e in self.listed.items()))

    def watch(self, changed: Callable[[], None]) -> None:
        """Rescan on every link event and device uevent (a burst of them: once), and say when the list or a
        device's health changed."""
        wake: queue.Queue = queue.Queue()
        stop = threading.Event()
        subscribed = []
        for subscribe in (netlink.link_events, uevent.events):
            ready = threading.Event()
            subscribed.append(ready)
            threading.Thread(target=_forward, args=(subscribe, ready, stop, wake), daemon=True,
                             name=f"events {self.name}").start()
        try:
            for ready in subscribed:  # subscribed first: nothing between the scan and the events is lost
                ready.wait(SUBSCRIBE_TIMEOUT)
            self.scan()
            changed()
            while True:
                burst = [wake.get()]
                while not wake.empty():
                    burst.append(wake.get_nowait())
                if None in burst:  # a subscription ended: let the daemon start the watch again
                    return
                if not any(map(self._matters, burst)):  # a pod's veth, an ifb: nothing of ours
                    continue
                before = self._snapshot()
                self.scan()
                self.release_device_info()
                if self._snapshot() != before:
                    changed()
        finally:
            stop.set()

    # ------------------------------------------------------------ Allocate

    def allocate(self, ids: list[str]) -> Allocation:
        with self.lock:
            entries = {i: self.listed[i] for i in ids if i in self.listed}
        info: dict[str, dict] = {}
        nodes: list[DeviceNode] = []
        for device_id in ids:
            entry = entries.get(device_id)
            if entry is None:
                continue
            device_info, device_nodes = self._describe(entry)
            info[device_id] = device_info
            nodes += [n for n in device_nodes if n not in nodes]
            if self.kind != AUX_NET_DEVICE:
                self._write_device_info(entry)
        variable = env_name(self.name)
        return Allocation(envs={variable: ",".join(ids), f"{variable}_INFO": json.dumps(info, sort_keys=True)},
                          device_nodes=nodes)

    def _describe(self, entry: _Listed) -> tuple[dict, list[DeviceNode]]:
        """The device's `_INFO` entry (the SR-IOV device plugin's info providers) and its device nodes."""
        c, selector = entry.candidate, entry.selector
        info: dict = {}
        nodes: list[DeviceNode] = []
        if c.vfio:
            group = f"/dev/vfio/{c.function.iommu_group}"
            info["vfio"] = {"mount": "/dev/vfio/vfio", "dev-mount": group}
            nodes += [DeviceNode("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"), DeviceNode(group, group, "rw")]
        else:
            info["generic"] = {"deviceID": c.id}
        if selector.need_vhost_net:
            present = [p for p in ("/dev/vhost-net", "/dev/net/tun") if self._exists(p)]
            if len(present) == 2:
                info["vhost"] = {"net-mount": "/dev/vhost-net", "tun-mount": "/dev/net/tun"}
                nodes += [DeviceNode(p, p, "rw") for p in present]
            else:
                log.error("%s: needVhostNet, but the node has no /dev/vhost-net or /dev/net/tun", self.name)
        if selector.is_rdma:
            rdma = {}
            for node in ["rdma_cm"] + [n.split("/")[1] for n in c.function.rdma_nodes]:
                path = f"/dev/infiniband/{node}"
                nodes.append(DeviceNode(path, path, "rw"))
                rdma[node.rstrip("0123456789")] = path
            info["rdma"] = rdma
        extra = {**self.additional_info.get("*", {}), **self.additional_info.get(c.id, {})}
        if extra:
            info["extraInfo"] = extra
        return info, nodes

    def _exists(self, path: str) -> bool:
        return os.path.exists(os.path.join(self.dev_root, os.path.relpath(path, "/dev")))

    # ------------------------------------------------------------ device-info files

    def device_info_path(self, device_id: str) -> str:
        """`<dir>/<resource name, '/' as '-'>-<device ID>-device.json`, where Multus looks for it."""
        return os.path.join(self.device_info_dir, f"{self.name.replace('/', '-')}-{device_id}-device.json")

    def _write_device_info(self, entry: _Listed) -> None:
        c, selector = entry.candidate, entry.selector
        pci: dict[str, str] = {"pci-address": c.id}
        if c.pf_address:
            pci["pf-pci-address"] = c.pf_address
        if selector.need_vhost_net:
            pci["vhost-net"] = "/dev/vhost-net"
        if selector.is_rdma and c.function.rdma:
            pci["rdma-device"] = ",".join(c.function.rdma)
        path = self.device_info_path(c.id)
        content = json.dumps({"type": "pci", "version": DEVICE_INFO_VERSION, "pci": pci})
        with self.lock:
            kept = self.info_files.get(c.id)
        if kept is None or kept.content != content or not os.path.exists(path):  # else: the same file, there
            try:
                replace_file(path, content.encode())
            except OSError as e:
                log.error("%s: cannot write the device-info file of %s: %s", self.name, c.id, e)
                return
        with self.lock:
            self.info_files[c.id] = _InfoFile(time.monotonic(), content=content)

    def release_device_info(self) -> None:
        """Remove the device-info files of devices no pod holds any more: by PodResources where the kubelet
        answers, else once the device's interface is back on the node."""
        with self.lock:
            files = dict(self.info_files)
            listed = dict(self.listed)
        if not files:
            return
        held = self._held()
        now = time.monotonic()
        for device_id, info in files.items():
            entry = listed.get(device_id)
            here = entry is not None and bool(entry.candidate.netdev)
            info.away = info.away or not here
            if held is not None:
                free = device_id not in held and now - info.written >= DEVICE_INFO_GRACE  # the kubelet may lag
            else:
                free = info.away and here
            if free:
                try:
                    os.unlink(self.device_info_path(device_id))
                except FileNotFoundError:
                    pass
                with self.lock:
                    self.info_files.pop(device_id, None)

    def _held(self) -> set[str] | None:
        if not self.pod_resources_socket or not os.path.exists(self.pod_resources_socket):
            return None
        from pycni.kubelet.podresources import PodResourcesClient, PodResourcesError

        try:
            with PodResourcesClient(self.pod_resources_socket) as client:
                return {i for h in client.holdings() if h.resource_name == self.name for i in h.device_ids}
        except PodResourcesError:
            return None


def _vf_number(pf: PciFunction | None, address: str) -> int:
    """A VF's number on its PF (its `virtfnN`), -1 for a function that is not a VF."""
    return pf.virtfns.index(address) if pf is not None and address in pf.virtfns else -1


def _healthy(c: Candidate, links: dict[str, netlink.LinkInfo]) -> bool:
    """A VF or SF follows its PF's link; anything else its own link; a device with neither is healthy."""
    link = links.get(c.pf_netdev) or links.get(c.netdev)
    return link.up and link.carrier if link is not None else True


def _forward(subscribe, ready: threading.Event, stop: threading.Event, wake: queue.Queue) -> None:
    """Subscribe in this thread (pyroute2's sockets are read in the thread that made them) and pass every
    event on, until the watch that started it has stopped."""
    try:
        with subscribe() as events:
            ready.set()
            for event in events:
                if stop.is_set():
                    return
                wake.put(event)
    except Exception as e:  # noqa: BLE001 - the subscription failed: the watch starts again
        log.error("device events: %s: %s", type(e).__name__, e)
    finally:
        ready.set()
    wake.put(None)
