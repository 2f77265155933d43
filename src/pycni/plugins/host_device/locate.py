"""Finding the node's network device a host-device config names: by link name, MAC, sysfs kernel path,
PCI address, auxiliary-bus device or (beyond the reference) a plain netdev name given as deviceID."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pycni.host.sysfs import PCI_ADDRESS, Sysfs, normal_pci_address
from pycni.protocol.errors import InvalidConfig


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """How the config names the device: the key it came from and its value."""

    key: str
    value: str


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
