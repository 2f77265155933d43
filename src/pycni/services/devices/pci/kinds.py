"""The SR-IOV device plugin's device kinds, a provider each: which devices of the node are of the kind
(`candidates`), what a container gets for one (`describe`: its `_INFO` entry and device nodes, the SR-IOV
device plugin's info providers) and the device-info file Multus reads for it (k8snetworkplumbingwg
device-info spec; an auxiliary device has none)."""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from pycni.host import netlink
from pycni.host.sysfs import PciFunction, Sysfs
from pycni.services.devices.model import LOGGER, DeviceNode
from pycni.services.devices.pci.selectors import Candidate, PciSelector, candidate, vf_number

log = logging.getLogger(LOGGER)

DEVICE_INFO_VERSION = "1.1.0"
Links = dict[str, netlink.LinkInfo]


class PciKind(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    def candidates(self, sysfs: Sysfs, functions: dict[str, PciFunction], links: Links) -> list[Candidate]:
        """Every device of this kind on the node, from its PCI functions (each read once by the caller)."""

    def describe(self, c: Candidate, selector: PciSelector, present: Callable[[str], bool]
                 ) -> tuple[dict[str, Any], list[DeviceNode]]:
        """The device's `_INFO` entry and its device nodes (`present` tells whether a node path exists)."""
        info: dict[str, Any] = {}
        nodes: list[DeviceNode] = []
        if c.vfio:
            group = f"/dev/vfio/{c.function.iommu_group}"
            info["vfio"] = {"mount": "/dev/vfio/vfio", "dev-mount": group}
            nodes += [DeviceNode("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"), DeviceNode(group, group, "rw")]
        else:
            info["generic"] = {"deviceID": c.id}
        extra_info, extra_nodes = self.extras(c, selector, present)
        info.update(extra_info)
        nodes += extra_nodes
        if selector.is_rdma:
            rdma = {}
            for node in ["rdma_cm"] + [n.split("/")[1] for n in c.function.rdma_nodes]:
                path = f"/dev/infiniband/{node}"
                nodes.append(DeviceNode(path, path, "rw"))
                rdma[node.rstrip("0123456789")] = path
            info["rdma"] = rdma
        return info, nodes

    def extras(self, c: Candidate, selector: PciSelector, present: Callable[[str], bool]
               ) -> tuple[dict[str, Any], list[DeviceNode]]:
        """What this kind adds after the device's own access (none by default)."""
        return {}, []

    def device_info(self, c: Candidate, selector: PciSelector) -> str:
        """The device-info file's content ("" for a kind that has none)."""
        pci: dict[str, str] = {"pci-address": c.id}
        if c.pf_address:
            pci["pf-pci-address"] = c.pf_address
        if selector.need_vhost_net:
            pci["vhost-net"] = "/dev/vhost-net"
        if selector.is_rdma and c.function.rdma:
            pci["rdma-device"] = ",".join(c.function.rdma)
        return json.dumps({"type": "pci", "version": DEVICE_INFO_VERSION, "pci": pci})


class _FunctionKind(PciKind):
    """A kind whose devices are PCI functions themselves (a PF with VFs enabled is not one: its VFs are)."""

    @abc.abstractmethod
    def takes(self, f: PciFunction) -> bool: ...

    def candidates(self, sysfs: Sysfs, functions: dict[str, PciFunction], links: Links) -> list[Candidate]:
        found = []
        for address, f in functions.items():
            if f.vfs == 0 and self.takes(f):
                pf = functions.get(f.pf)
                found.append(candidate(address, f, f.driver, f.netdevs, pf, vf_number(pf, address), links))
        return found


class NetDevice(_FunctionKind):
    """`netDevice`: network functions, VFs and PFs, bound to their netdev driver or to vfio-pci."""

    name = "netDevice"

    def takes(self, f: PciFunction) -> bool:
        return f.is_network

    def extras(self, c: Candidate, selector: PciSelector, present: Callable[[str], bool]
               ) -> tuple[dict[str, Any], list[DeviceNode]]:
        """With `needVhostNet`, the node's /dev/vhost-net and /dev/net/tun."""
        if not selector.need_vhost_net:
            return {}, []
        found = [p for p in ("/dev/vhost-net", "/dev/net/tun") if present(p)]
        if len(found) < 2:
            log.error("needVhostNet, but the node has no /dev/vhost-net or /dev/net/tun (device %s)", c.id)
            return {}, []
        return {"vhost": {"net-mount": "/dev/vhost-net", "tun-mount": "/dev/net/tun"}}, \
            [DeviceNode(p, p, "rw") for p in found]


class Accelerator(_FunctionKind):
    """`accelerator`: processing accelerators (crypto, FPGA, compression functions)."""

    name = "accelerator"

    def takes(self, f: PciFunction) -> bool:
        return f.is_accelerator


class AuxNetDevice(PciKind):
    """`auxNetDevice`: auxiliary devices such as subfunctions, named `<driver>.<type>.<index>`."""

    name = "auxNetDevice"

    def candidates(self, sysfs: Sysfs, functions: dict[str, PciFunction], links: Links) -> list[Candidate]:
        found = []
        for name, parent in sysfs.auxiliary_devices():
            f = functions.get(parent)
            if f is None:
                continue
            parts = name.split(".")
            index = int(parts[-1]) if len(parts) == 3 and parts[-1].isdigit() else -1
            aux_type = parts[1] if len(parts) == 3 else ""
            netdevs = tuple(sysfs.netdevs_of_auxiliary(name))
            found.append(candidate(name, f, sysfs.auxiliary_driver(name), netdevs, f, index, links, aux_type))
        return found

    def device_info(self, c: Candidate, selector: PciSelector) -> str:
        return ""


KINDS: dict[str, PciKind] = {kind.name: kind for kind in (NetDevice(), Accelerator(), AuxNetDevice())}
