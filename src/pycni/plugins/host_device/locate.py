"""Finding the node's network device a host-device config names: by link name, MAC, sysfs kernel path,
PCI address, auxiliary-bus device or (beyond the reference) a plain netdev name given as deviceID.

sysfs is read under a root the config may move (`sysfsRoot`): a containerised node agent mounts the
host's /sys elsewhere, and tests point it at a tree of their own."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pycni.protocol.errors import InvalidConfig

PCI_ADDRESS = re.compile(r"^(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


def normal_pci_address(address: str) -> str:
    """`04:00.5` -> `0000:04:00.5`, lower case."""
    return (address if address.count(":") == 2 else f"0000:{address}").lower()


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """How the config names the device: the key it came from and its value."""

    key: str
    value: str


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


def netdev_candidates(ref: DeviceRef, sysfs: Sysfs) -> tuple[list[str], str]:
    """(netdev names that may be the device, its PCI address when the config named one) for every way of
    naming a device except the MAC, which needs the node's links."""
    if ref.key == "device":
        return [ref.value], ""
    if ref.key == "kernelpath":
        if not os.path.isabs(ref.value) or not os.path.normpath(ref.value).startswith("/sys/devices/"):
            raise InvalidConfig(f"invalid network config: kernelpath {ref.value!r} must be absolute and begin "
                                "with /sys/devices/")
        return sysfs.netdevs_under(os.path.normpath(ref.value)), ""
    if ref.key == "pciBusID" or PCI_ADDRESS.match(ref.value):
        return sysfs.netdevs_of_pci(ref.value), normal_pci_address(ref.value)
    if sysfs.is_auxiliary(ref.value):
        return sysfs.netdevs_of_auxiliary(ref.value), ""
    return [ref.value], ""  # deviceID naming a netdev: devices without a PCI address are handed out by name
