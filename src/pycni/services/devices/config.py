"""The device plugin's config file, checked whole before anything is served; the first problem is one line.

Two shapes, in one file or apart: pycni's own `{"resources": [...]}` (`netdev`, `tun`), and the SR-IOV
network device plugin's `{"resourceList": [...]}`, read as that plugin reads it. The file is checked against
`schemas/device-plugin.json` with jsonschema, every key that the schema does not know is refused by name, and
what no schema can say is checked here: a config that would select more than it names is refused, never
widened (an empty selector, an uplink opt-in with nothing named literally).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pycni.host.sysfs import PCI_ADDRESS, Sysfs, hex_id, normal_pci_address
from pycni.protocol.schemacheck import strict_check
from pycni.services.devices.framework import Resource
from pycni.services.devices.netdev import NetdevResource, Selector
from pycni.services.devices.pci import DEVICE_INFO_DIR, NET_DEVICE, PciResource, PciSelector, parse_functions
from pycni.services.devices.tun import TUN_PATH, TunResource
from pycni.services.devices.uplink import NodeAddresses

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
SRIOV_DEFAULT_PREFIX = "intel.com"  # the SR-IOV device plugin's --resource-prefix default
EMPTY_NETDEV = ("selects every interface of the node: name what to offer in ifNames, drivers or pciAddresses "
                "(all of them, deliberately: \"ifNames\": [\"*\"])")
EMPTY_PCI = ("selects every device of the node: name what to offer (vendors, devices, drivers, pciAddresses, "
             "pfNames, rootDevices, ...)")


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    sysfs_root: str = "/sys"
    pod_resources_socket: str = ""
    resource_prefix: str = SRIOV_DEFAULT_PREFIX
    node: NodeAddresses = field(default_factory=NodeAddresses)
    device_info_dir: str = DEVICE_INFO_DIR
    dev_root: str = "/dev"


def check_resource_name(name: object, where: str) -> str:
    """The kubelet's rule for extended resources: `domain/name`, not in the kubernetes.io domains."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: resourceName is missing")
    domain, slash, part = name.partition("/")
    if not slash or not DNS_SUBDOMAIN.match(domain) or len(domain) > 253 or not NAME_PART.match(part) \
            or len(part) > 63:
        raise ConfigError(f"{where}: resourceName {name!r} is not domain/name (e.g. pycni.io/nic)")
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        raise ConfigError(f"{where}: resourceName {name!r} is in the kubernetes.io domain, which the kubelet refuses")
    return name


def load(path: str, settings: Settings) -> list[Resource]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON: {e}") from None
    return parse(data, path, settings)


def parse(data: object, path: str, settings: Settings) -> list[Resource]:
    findings = strict_check(data, "device-plugin.json")
    if findings:
        raise ConfigError(f"{path}: {findings[0]}")
    assert isinstance(data, dict)
    builder = _Builder(path, settings)
    for i, entry in enumerate(data.get("resourceList", [])):
        builder.sriov(entry, f"resourceList[{i}]")
    for i, entry in enumerate(data.get("resources", [])):
        builder.native(entry, f"resources[{i}]")
    return builder.resources


class _Builder:
    """Resources in the order the kubelet will see them; each name once; a PCI device claimed by the first
    resource that selects it (SR-IOV `resourceList` entries first, as they are the more specific)."""

    def __init__(self, path: str, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.sysfs = Sysfs(settings.sysfs_root)
        self.resources: list[Resource] = []
        self.pci: list[PciResource] = []
        self.names: set[str] = set()

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: `{where}`: {message}")

    def named(self, name: str, where: str) -> str:
        check_resource_name(name, f"{self.path}: `{where}`")
        if name in self.names:
            raise self.fail(where, f"resourceName {name!r} appears twice")
        self.names.add(name)
        return name

    def native(self, entry: dict, where: str) -> None:
        name = self.named(entry["resourceName"], where)
        if entry["type"] == "tun":
            self.resources.append(TunResource(name, entry.get("count", 64), entry.get("path", TUN_PATH)).resource())
            return
        raw = entry["selector"]
        selector = Selector(tuple(raw.get("ifNames", ())), tuple(raw.get("drivers", ())),
                            tuple(normal_pci_address(a) if PCI_ADDRESS.match(a) else a
                                  for a in raw.get("pciAddresses", ())))
        if selector.is_empty():
            raise self.fail(f"{where}.selector", EMPTY_NETDEV)
        allow_uplink = entry.get("allowUplink", False)
        if allow_uplink and not any(not re.search(r"[*?\[]", n) for n in selector.if_names):
            raise self.fail(f"{where}.allowUplink", "offers an interface the node uses only when ifNames names it "
                                                   "literally, and none is named without a wildcard")
        pci_resources = list(self.pci)
        self.resources.append(NetdevResource(
            name, selector, self.sysfs, self.settings.pod_resources_socket, node=self.settings.node,
            allow_uplink=allow_uplink,
            claimed_elsewhere=lambda pci: any(r.selects_address(pci) for r in pci_resources)).resource())

    def sriov(self, entry: dict, where: str) -> None:
        prefix = entry.get("resourcePrefix", self.settings.resource_prefix)
        name = self.named(f"{prefix}/{entry['resourceName']}", where)
        raw = entry.get("selectors")
        if raw is None:
            raise self.fail(where, f"has no selectors: it {EMPTY_PCI}")
        raw_list = raw if isinstance(raw, list) else [raw]
        selectors = [self.selector(s, f"{where}.selectors" + (f"[{i}]" if isinstance(raw, list) else ""))
                     for i, s in enumerate(raw_list)]
        allow_uplink = entry.get("allowUplink", False)
        if allow_uplink and not any(s.pci_addresses for s in selectors):
            raise self.fail(f"{where}.allowUplink", "offers a device whose interface the node uses only when "
                                                   "pciAddresses names it, and none is named")
        resource = PciResource(name, entry.get("deviceType", NET_DEVICE), selectors, self.sysfs, self.settings.node,
                               allow_uplink, entry.get("excludeTopology", False), entry.get("additionalInfo", {}),
                               self.settings.device_info_dir, self.settings.pod_resources_socket,
                               self.settings.dev_root, earlier=list(self.pci))
        self.pci.append(resource)
        self.resources.append(resource.resource())

    def selector(self, raw: dict, where: str) -> PciSelector:
        def functions(key: str, normal=lambda v: v) -> tuple:
            out = []
            for value in raw.get(key, ()):
                try:
                    parent, indexes = parse_functions(value)
                except ValueError as e:
                    raise self.fail(f"{where}.{key}", str(e)) from None
                out.append((normal(parent), indexes))
            return tuple(out)

        def pci(key: str) -> tuple[str, ...]:
            bad = [a for a in raw.get(key, ()) if not PCI_ADDRESS.match(a)]
            if bad:
                raise self.fail(f"{where}.{key}", f"{bad[0]!r} is not a PCI address (0000:03:02.0)")
            return tuple(normal_pci_address(a) for a in raw.get(key, ()))

        def hex_ids(key: str) -> tuple[str, ...]:
            return tuple(hex_id(v) for v in raw.get(key, ()))

        root_devices = functions("rootDevices", normal_pci_address)
        bad_root = [p for p, _ in root_devices if not PCI_ADDRESS.match(p)]
        if bad_root:
            raise self.fail(f"{where}.rootDevices", f"{bad_root[0]!r} is not a PF's PCI address (0000:86:00.0)")
        selector = PciSelector(
            vendors=hex_ids("vendors"), devices=hex_ids("devices"), drivers=tuple(raw.get("drivers", ())),
            pci_addresses=pci("pciAddresses"), acpi_indexes=tuple(raw.get("acpiIndexes", ())),
            pf_names=functions("pfNames"), root_devices=root_devices,
            link_types=tuple(t.lower() for t in raw.get("linkTypes", ())), aux_types=tuple(raw.get("auxTypes", ())),
            is_rdma=raw.get("isRdma", False), need_vhost_net=raw.get("needVhostNet", False))
        if selector.is_empty():
            raise self.fail(where, EMPTY_PCI)
        return selector
