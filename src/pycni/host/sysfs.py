"""sysfs read under a root that can be moved: a containerised node agent mounts the host's /sys elsewhere,
and tests point it at a tree of their own. PCI functions, auxiliary devices, drivers, NUMA nodes of netdevs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

PCI_ADDRESS = re.compile(r"^(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


def normal_pci_address(address: str) -> str:
    """`04:00.5` -> `0000:04:00.5`, lower case."""
    return (address if address.count(":") == 2 else f"0000:{address}").lower()


@dataclass(frozen=True, slots=True)
class Sysfs:
    root: str = "/sys"

    def _path(self, absolute: str) -> str:
        """`/sys/...` below this root."""
        return os.path.join(self.root, os.path.relpath(absolute, "/sys"))

    def _netdevs_in(self, directory: str) -> list[str]:
        try:
            return sorted(os.listdir(os.path.join(directory, "net")))
        except OSError:
            return []

    def netdevs_of_pci(self, address: str) -> list[str]:
        return self._netdevs_in(self._path(f"/sys/bus/pci/devices/{normal_pci_address(address)}"))

    def is_auxiliary(self, device: str) -> bool:
        return "/" not in device and os.path.isdir(self._path(f"/sys/bus/auxiliary/devices/{device}"))

    def netdevs_of_auxiliary(self, device: str) -> list[str]:
        return self._netdevs_in(self._path(f"/sys/bus/auxiliary/devices/{device}"))

    def netdevs_under(self, kernel_path: str) -> list[str]:
        return self._netdevs_in(self._path(kernel_path))

    def pci_address_of(self, ifname: str) -> str:
        """The PCI function a netdev belongs to, "" when it has none (virtual devices)."""
        try:
            target = os.readlink(self._path(f"/sys/class/net/{ifname}/device"))
        except OSError:
            return ""
        name = os.path.basename(target)
        return name if PCI_ADDRESS.match(name) else ""

    def driver_of(self, ifname: str) -> str:
        """The kernel driver bound to a netdev's device ("" for virtual devices, which have none in sysfs)."""
        try:
            return os.path.basename(os.readlink(self._path(f"/sys/class/net/{ifname}/device/driver")))
        except OSError:
            return ""

    def numa_node_of(self, ifname: str) -> int:
        """The NUMA node of a netdev's device, -1 when the node has no topology or the device no node."""
        try:
            with open(self._path(f"/sys/class/net/{ifname}/device/numa_node"), encoding="ascii") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return -1

    # ---------------------------------------------------------------- PCI functions and auxiliary devices

    def pci_addresses(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._path("/sys/bus/pci/devices")) if PCI_ADDRESS.match(n))
        except OSError:
            return []

    def pci_function(self, address: str) -> PciFunction | None:
        """What sysfs says of one PCI function, None when it is not there (any more)."""
        base = self._path(f"/sys/bus/pci/devices/{address}")
        if not os.path.isdir(base):
            return None
        virtfns = {int(n[6:]): _link_name(os.path.join(base, n)) for n in _listdir(base)
                   if n.startswith("virtfn") and n[6:].isdigit()}
        return PciFunction(
            address=address,
            vendor=hex_id(_read(os.path.join(base, "vendor"))),
            device=hex_id(_read(os.path.join(base, "device"))),
            class_code=int(_read(os.path.join(base, "class")) or "0", 16),
            driver=_link_name(os.path.join(base, "driver")),
            pf=_link_name(os.path.join(base, "physfn")),
            virtfns=tuple(virtfns[i] for i in sorted(virtfns)),
            vfs=int(_read(os.path.join(base, "sriov_numvfs")) or "0"),
            netdevs=tuple(self._netdevs_in(base)),
            iommu_group=_link_name(os.path.join(base, "iommu_group")),
            numa_node=int(_read(os.path.join(base, "numa_node")) or "-1"),
            acpi_index=_read(os.path.join(base, "acpi_index")),
            rdma=tuple(_listdir(os.path.join(base, "infiniband"))),
            rdma_nodes=tuple(f"{group}/{n}" for group in ("infiniband_verbs", "infiniband_mad")
                             for n in _listdir(os.path.join(base, group))),
        )

    def auxiliary_devices(self) -> list[tuple[str, str]]:
        """(auxiliary device name, the PCI function it belongs to) for every auxiliary device."""
        bus = self._path("/sys/bus/auxiliary/devices")
        found = []
        for name in _listdir(bus):
            parent = os.path.basename(os.path.dirname(os.path.realpath(os.path.join(bus, name))))
            if PCI_ADDRESS.match(parent):
                found.append((name, parent))
        return found

    def auxiliary_driver(self, name: str) -> str:
        return _link_name(self._path(f"/sys/bus/auxiliary/devices/{name}/driver"))

    def usb_devices(self) -> list[UsbDevice]:
        """Every USB device (not its interfaces, which have no IDs of their own), by sysfs name."""
        bus = self._path("/sys/bus/usb/devices")
        found = []
        for name in _listdir(bus):
            base = os.path.join(bus, name)
            vendor = _read(os.path.join(base, "idVendor")).lower()
            try:
                number = (int(_read(os.path.join(base, "busnum"))), int(_read(os.path.join(base, "devnum"))))
            except ValueError:
                continue
            if vendor:
                found.append(UsbDevice(name, vendor, _read(os.path.join(base, "idProduct")).lower(),
                                       _read(os.path.join(base, "serial")), *number))
        return found


@dataclass(frozen=True, slots=True)
class UsbDevice:
    """A USB device as sysfs shows it: `1-1.2`, its IDs (lower-case hex), serial, and where devtmpfs puts
    its node."""

    name: str
    vendor: str
    product: str
    serial: str
    bus: int
    number: int

    @property
    def node(self) -> str:
        return f"/dev/bus/usb/{self.bus:03d}/{self.number:03d}"


@dataclass(frozen=True, slots=True)
class PciFunction:
    """One PCI function as sysfs shows it. `pf` is set for an SR-IOV VF; a PF lists its VFs in `virtfns`, by
    VF number (`virtfn0`, ...); `vfs` is the number
    of VFs a PF has enabled (`sriov_numvfs`); `netdevs` are the interfaces sysfs lists for it in this
    network namespace (none when it is bound to vfio-pci, or its interface is in a pod)."""

    address: str
    vendor: str = ""
    device: str = ""
    class_code: int = 0
    driver: str = ""
    pf: str = ""
    virtfns: tuple[str, ...] = ()
    vfs: int = 0
    netdevs: tuple[str, ...] = ()
    iommu_group: str = ""
    numa_node: int = -1
    acpi_index: str = ""
    rdma: tuple[str, ...] = ()  # RDMA devices (mlx5_0)
    rdma_nodes: tuple[str, ...] = ()  # their character devices below /dev/infiniband's classes (uverbs0, umad0)

    @property
    def is_network(self) -> bool:
        return self.class_code >> 16 == 0x02

    @property
    def is_accelerator(self) -> bool:
        return self.class_code >> 16 == 0x12


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _link_name(path: str) -> str:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return ""


def hex_id(text: str) -> str:
    """`0x8086` -> `8086`, as the SR-IOV device plugin's `vendors`/`devices` write them."""
    return text.lower().removeprefix("0x")
