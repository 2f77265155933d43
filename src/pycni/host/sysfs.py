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
