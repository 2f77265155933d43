"""How the SR-IOV network device plugin chooses PCI devices: a device as its selectors see it (`Candidate`),
the selectors themselves (fields AND, values OR), the `pfNames`/`rootDevices` function ranges, and a
device's health. Pure: nothing here reads the node."""

from __future__ import annotations

from dataclasses import dataclass

from pycni.host import netlink
from pycni.host.sysfs import PciFunction

VFIO_DRIVERS = ("vfio-pci",)
FunctionRanges = tuple[tuple[str, frozenset[int] | None], ...]  # (PF name or address, indexes; None: all)


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


def candidate(device_id: str, f: PciFunction, driver: str, netdevs: tuple[str, ...], pf: PciFunction | None,
              index: int, links: dict[str, netlink.LinkInfo], aux_type: str = "") -> Candidate:
    """A device with its interface and its PF's as they are in `links` now."""
    netdev = next((n for n in netdevs if n in links), "")
    pf_netdev = next((n for n in pf.netdevs if n in links), "") if pf else ""
    typed = links.get(netdev) or links.get(pf_netdev)
    return Candidate(device_id, f, driver, netdev, pf.address if pf else "", pf_netdev, index,
                     typed.link_type if typed else "", aux_type)


@dataclass(frozen=True)
class PciSelector:
    """One selector object: its fields combine with AND, the values of one field with OR."""

    vendors: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    pci_addresses: tuple[str, ...] = ()
    acpi_indexes: tuple[str, ...] = ()
    pf_names: FunctionRanges = ()
    root_devices: FunctionRanges = ()
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


def _in_functions(wanted: FunctionRanges, parent: str, index: int) -> bool:
    return bool(parent) and index >= 0 and any(
        name == parent and (indexes is None or index in indexes) for name, indexes in wanted)


def vf_number(pf: PciFunction | None, address: str) -> int:
    """A VF's number on its PF (its `virtfnN`), -1 for a function that is not a VF."""
    return pf.virtfns.index(address) if pf is not None and address in pf.virtfns else -1


def healthy(c: Candidate, links: dict[str, netlink.LinkInfo]) -> bool:
    """A VF or SF follows its PF's link; anything else its own link; a device with neither is healthy."""
    link = links.get(c.pf_netdev) or links.get(c.netdev)
    return link.up and link.carrier if link is not None else True
