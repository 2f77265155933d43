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


USERSPACE_DRIVERS = ("vfio-pci", "uio_pci_generic", "igb_uio")


def without_netdev(ref: DeviceRef, sysfs: Sysfs) -> str:
    """Why a PCI device the config names has no interface host-device could move: it is bound to a userspace
    driver (vfio-pci: DPDK, VMs), to none, or its interface is elsewhere; "" when that is not the case."""
    if ref.key not in ("pciBusID", "deviceID") or not PCI_ADDRESS.match(ref.value):
        return ""
    address = normal_pci_address(ref.value)
    function = sysfs.pci_function(address)
    if function is None or function.netdevs:
        return ""
    if function.driver in USERSPACE_DRIVERS:
        return (f"PCI device {address} is bound to {function.driver} and has no network interface: a pod uses it "
                "through the /dev/vfio nodes the device plugin hands out, and host-device has nothing to move")
    if not function.driver:
        return f"PCI device {address} is bound to no driver and has no network interface"
    return ""
