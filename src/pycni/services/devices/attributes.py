"""What a NIC is, as attributes a DRA claim selects by (`device.attributes["pycni.io"].pfName == "ens1f0"`):
the same names for a `netdev` interface and an SR-IOV function, read from sysfs (and the link's type and
carrier from netlink by the caller). Names are the DRA API's attribute names (C identifiers of at most 32
characters)."""

from __future__ import annotations

from pycni.host.sysfs import PciFunction, Sysfs
from pycni.services.devices.model import Attributes


def nic_attributes(*, ifname: str, link_type: str, driver: str, numa_node: int, function: PciFunction | None,
                   pf_netdev: str = "", carrier: bool | None = None) -> Attributes:
    """`ifName`, `linkType`, `driver`, `numaNode`, `carrier` (when known); and for a PCI function `pciAddress`,
    `vendorID`, `deviceID`, `sriovVF`, `pfName` (a VF's PF interface), `rdma`."""
    found: Attributes = {"driver": driver, "numaNode": numa_node}
    if ifname:
        found["ifName"] = ifname
        found["linkType"] = link_type or "ether"
    if carrier is not None:
        found["carrier"] = carrier
    if function is not None:
        found.update(pciAddress=function.address, vendorID=function.vendor, deviceID=function.device,
                     sriovVF=bool(function.pf), rdma=bool(function.rdma))
        if pf_netdev:
            found["pfName"] = pf_netdev
    return found


def pf_netdev_of(sysfs: Sysfs, function: PciFunction | None) -> str:
    """A VF's PF's interface in this namespace ("" for a PF, or a PF with none)."""
    if function is None or not function.pf:
        return ""
    pf = sysfs.pci_function(function.pf)
    return pf.netdevs[0] if pf is not None and pf.netdevs else ""
