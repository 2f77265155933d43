"""PCI devices as resources, as the SR-IOV network device plugin offers them: VFs and PFs (`netDevice`),
accelerators, and auxiliary devices such as subfunctions (`auxNetDevice`), each kind a provider
(`kinds.py`) chosen by that plugin's selectors (`selectors.py`), served by `resource.py`, with the
device-info files Multus reads (`device_info.py`). `build` makes one from a `resourceList` entry."""

from __future__ import annotations

from typing import Any

from pycni.host.sysfs import PCI_ADDRESS, hex_id, normal_pci_address
from pycni.services.devices.model import NodePaths, OptionError, Resource
from pycni.services.devices.pci.kinds import KINDS
from pycni.services.devices.pci.resource import PciClaims, PciOptions, PciResource
from pycni.services.devices.pci.selectors import PciSelector, parse_functions

__all__ = ["EMPTY_SELECTOR", "KINDS", "NET_DEVICE", "PciClaims", "PciResource", "PciSelector", "build"]

NET_DEVICE = "netDevice"
EMPTY_SELECTOR = ("selects every device of the node: name what to offer (vendors, devices, drivers, pciAddresses, "
                  "pfNames, rootDevices, ...)")


def build(name: str, options: dict[str, Any], node: NodePaths, claims: PciClaims) -> Resource:
    """A resource of the entry's `deviceType` from a `resourceList` entry (its `resourceName` already
    prefixed); OptionError for what its schema cannot say (a config that would select more than it names)."""
    raw = options.get("selectors")
    if raw is None:
        raise OptionError("", f"has no selectors: it {EMPTY_SELECTOR}")
    raw_list = raw if isinstance(raw, list) else [raw]
    selectors = tuple(selector(s, "selectors" + (f"[{i}]" if isinstance(raw, list) else ""))
                      for i, s in enumerate(raw_list))
    allow_uplink = options.get("allowUplink", False)
    if allow_uplink and not any(s.pci_addresses for s in selectors):
        raise OptionError("allowUplink", "offers a device whose interface the node uses only when pciAddresses "
                                         "names it, and none is named")
    kind = KINDS[options.get("deviceType", NET_DEVICE)]
    pci_options = PciOptions(selectors, allow_uplink, options.get("excludeTopology", False),
                             options.get("additionalInfo", {}))
    return PciResource(name, kind, pci_options, node=node, claims=claims).resource()


def selector(raw: dict[str, Any], where: str) -> PciSelector:
    """One selector object of an entry (at `where` below it)."""
    def functions(key: str, normal: Any = lambda v: v) -> tuple[tuple[str, frozenset[int] | None], ...]:
        out = []
        for value in raw.get(key, ()):
            try:
                parent, indexes = parse_functions(value)
            except ValueError as e:
                raise OptionError(f"{where}.{key}", str(e)) from None
            out.append((normal(parent), indexes))
        return tuple(out)

    def pci(key: str) -> tuple[str, ...]:
        bad = [a for a in raw.get(key, ()) if not PCI_ADDRESS.match(a)]
        if bad:
            raise OptionError(f"{where}.{key}", f"{bad[0]!r} is not a PCI address (0000:03:02.0)")
        return tuple(normal_pci_address(a) for a in raw.get(key, ()))

    def hex_ids(key: str) -> tuple[str, ...]:
        return tuple(hex_id(v) for v in raw.get(key, ()))

    root_devices = functions("rootDevices", normal_pci_address)
    bad_root = [p for p, _ in root_devices if not PCI_ADDRESS.match(p)]
    if bad_root:
        raise OptionError(f"{where}.rootDevices", f"{bad_root[0]!r} is not a PF's PCI address (0000:86:00.0)")
    chosen = PciSelector(
        vendors=hex_ids("vendors"), devices=hex_ids("devices"), drivers=tuple(raw.get("drivers", ())),
        pci_addresses=pci("pciAddresses"), acpi_indexes=tuple(raw.get("acpiIndexes", ())),
        pf_names=functions("pfNames"), root_devices=root_devices,
        link_types=tuple(t.lower() for t in raw.get("linkTypes", ())), aux_types=tuple(raw.get("auxTypes", ())),
        is_rdma=raw.get("isRdma", False), need_vhost_net=raw.get("needVhostNet", False))
    if chosen.is_empty():
        raise OptionError(where, EMPTY_SELECTOR)
    return chosen
