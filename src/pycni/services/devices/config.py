"""The device plugin's config file, checked whole before anything is served; the first problem is one line.

Two shapes, in one file or apart: pycni's own `{"resources": [...]}` (`netdev`, `tun`, `devices`, and types
that installed packages declare in the `pycni.device_types` entry-point group), and the SR-IOV network
device plugin's `{"resourceList": [...]}`, read as that plugin reads it. The file is checked against
`schemas/device-plugin.json` with jsonschema (a third-party type's own keys against the schema it declares),
every key that a schema does not know is refused by name, and what no schema can say is checked here: a
config that would select more than it names is refused, never widened (an empty selector, an uplink opt-in
with nothing named literally).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import metadata

from pycni.host.sysfs import PCI_ADDRESS, Sysfs, hex_id, normal_pci_address
from pycni.protocol.schemacheck import json_path, strict_check
from pycni.services.devices.framework import DeviceType, NodePaths, Resource
from pycni.services.devices.netdev import NetdevResource, Selector
from pycni.services.devices.nodes import Group, NodeDevices, PathPattern, UsbMatch, has_glob, id_of_path
from pycni.services.devices.pci import DEVICE_INFO_DIR, NET_DEVICE, PciResource, PciSelector, parse_functions
from pycni.services.devices.uplink import NodeAddresses

ENTRY_POINT_GROUP = "pycni.device_types"
BUILT_IN_TYPES = ("netdev", "tun", "devices")
COMMON_KEYS = ("resourceName", "type", "cdi")  # of every `resources` entry; the rest is its type's
TUN_PATH = "/dev/net/tun"

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
    return [resource for resource, _ in load_fingerprinted(path, settings)]


def load_fingerprinted(path: str, settings: Settings) -> list[tuple[Resource, str]]:
    """Each resource with a fingerprint of the config it was built from (its entry, and the entries it depends
    on): a reload keeps a running resource whose fingerprint did not change."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON: {e}") from None
    return parse_fingerprinted(data, path, settings)


def parse(data: object, path: str, settings: Settings) -> list[Resource]:
    return [resource for resource, _ in parse_fingerprinted(data, path, settings)]


def parse_fingerprinted(data: object, path: str, settings: Settings) -> list[tuple[Resource, str]]:
    findings = strict_check(schema_view(data), "device-plugin.json")
    if findings:
        raise ConfigError(f"{path}: {findings[0]}")
    assert isinstance(data, dict)
    builder = _Builder(path, settings)
    sriov_entries = data.get("resourceList", [])
    for i, entry in enumerate(sriov_entries):
        builder.sriov(entry, f"resourceList[{i}]", fingerprint=_fingerprint(sriov_entries[:i + 1]))
    for i, entry in enumerate(data.get("resources", [])):
        depends = sriov_entries if entry.get("type") == "netdev" else []  # it leaves their devices to them
        builder.native(entry, f"resources[{i}]", fingerprint=_fingerprint([*depends, entry]))
    return list(zip(builder.resources, builder.fingerprints, strict=True))


def _fingerprint(entries: list) -> str:
    return json.dumps(entries, sort_keys=True)


def schema_view(data: object) -> object:
    """The config as pycni's schema checks it: an entry of a type pycni does not build keeps only the keys
    every entry has (its type's schema checks the rest)."""
    if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
        return data
    entries = [{k: v for k, v in e.items() if k in COMMON_KEYS}
               if isinstance(e, dict) and isinstance(e.get("type"), str) and e["type"] not in BUILT_IN_TYPES else e
               for e in data["resources"]]
    return {**data, "resources": entries}


def installed_types() -> dict[str, metadata.EntryPoint]:
    """The resource types installed packages declare, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


class _Builder:
    """Resources in the order the kubelet will see them; each name once; a PCI device claimed by the first
    resource that selects it (SR-IOV `resourceList` entries first, as they are the more specific)."""

    def __init__(self, path: str, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.sysfs = Sysfs(settings.sysfs_root)
        self.resources: list[Resource] = []
        self.fingerprints: list[str] = []
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

    def add(self, resource: Resource, fingerprint: str, entry: dict, where: str) -> None:
        if entry.get("cdi"):  # (a resource name the kubelet takes is a CDI kind as it is)
            if resource.describe is None:
                raise self.fail(f"{where}.cdi", f"type {entry.get('type')!r} does not describe its devices for CDI")
            resource.cdi = True
        self.resources.append(resource)
        self.fingerprints.append(fingerprint)

    def native(self, entry: dict, where: str, fingerprint: str) -> None:
        name = self.named(entry["resourceName"], where)
        kind = entry["type"]
        if kind == "tun":
            group = Group((PathPattern(entry.get("path", TUN_PATH), TUN_PATH, "rwm"),), count=entry.get("count", 64),
                          name="tun")
            resource = NodeDevices(name, (group,), self.settings.dev_root, self.settings.sysfs_root).resource()
        elif kind == "devices":
            resource = self.devices(name, entry, where)
        elif kind == "netdev":
            resource = self.netdev(name, entry, where)
        else:
            resource = self.third_party(name, entry, where)
        self.add(resource, fingerprint, entry, where)

    def devices(self, name: str, entry: dict, where: str) -> Resource:
        groups = []
        literal_ids: dict[str, int] = {}
        for i, raw in enumerate(entry["groups"]):
            at = f"{where}.groups[{i}]"
            paths = tuple(PathPattern(p["path"], p.get("mountPath", ""), p.get("permissions", "rw"),
                                      p.get("optional", False)) for p in raw.get("paths", ()))
            for j, pattern in enumerate(paths):
                if ".." in pattern.path.split("/"):
                    raise self.fail(f"{at}.paths[{j}].path", f"{pattern.path!r} leaves /dev through `..`")
                if pattern.container_path and has_glob(pattern.path):
                    raise self.fail(f"{at}.paths[{j}].mountPath", "is for a path without glob characters: the "
                                                                 "matches of a glob keep their own paths")
            usb = tuple(UsbMatch(hex_id(u["vendor"]), hex_id(u["product"]), u.get("serial", ""))
                        for u in raw.get("usb", ()))
            if bool(paths) == bool(usb):
                raise self.fail(at, "needs `paths` or `usb` (one of them)")
            group = Group(paths, usb, raw.get("count", 0), raw.get("name", ""), raw.get("together", False))
            if not group.per_match:
                if not group.name and (usb or any(has_glob(p.path) for p in paths)):
                    raise self.fail(at, "goes together and has glob characters or USB devices: give it a `name`, "
                                        "its device's ID")
                for device_id in group.ids(group.name or id_of_path(paths[0].path)):
                    if device_id in literal_ids:
                        raise self.fail(at, f"makes device ID {device_id!r}, as groups[{literal_ids[device_id]}] "
                                            "does: give one of them a `name`")
                    literal_ids[device_id] = i
            groups.append(group)
        return NodeDevices(name, tuple(groups), self.settings.dev_root, self.settings.sysfs_root).resource()

    def third_party(self, name: str, entry: dict, where: str) -> Resource:
        kind = entry["type"]
        installed = installed_types()
        if kind not in installed:
            known = ", ".join(BUILT_IN_TYPES + tuple(sorted(installed)))
            raise self.fail(f"{where}.type", f"unknown type {kind!r}: known are {known} (a package adds one in the "
                                             f"{ENTRY_POINT_GROUP!r} entry-point group)")
        point = installed[kind]
        try:
            device_type = point.load()
        except Exception as e:  # noqa: BLE001 - a broken package: say which, whatever it raised
            raise self.fail(f"{where}.type", f"type {kind!r} ({point.value}) cannot be loaded: "
                                             f"{type(e).__name__}: {e}") from None
        if not isinstance(device_type, DeviceType):
            raise self.fail(f"{where}.type", f"{point.value} is not a pycni.devices.DeviceType")
        options = {k: v for k, v in entry.items() if k not in COMMON_KEYS}
        known_keys = device_type.schema.get("properties", {})
        for key in options:
            if key not in known_keys:
                raise self.fail(f"{where}.{key}", f"unknown key for type {kind!r}" +
                                (f"; it knows {', '.join(sorted(known_keys))}" if known_keys else ""))
        import jsonschema

        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(device_type.schema)
                                                 .iter_errors(options))
        if error is not None:
            raise self.fail(json_path([where, *error.absolute_path]), error.message)
        try:
            resource = device_type.build(name, options, NodePaths(self.settings.dev_root, self.settings.sysfs_root,
                                                                  self.settings.pod_resources_socket))
        except ValueError as e:
            raise self.fail(where, f"type {kind!r}: {e}") from None
        if not isinstance(resource, Resource) or resource.name != name:
            raise self.fail(where, f"type {kind!r} built no Resource named {name!r}")
        return resource

    def netdev(self, name: str, entry: dict, where: str) -> Resource:
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
        return NetdevResource(
            name, selector, self.sysfs, self.settings.pod_resources_socket, node=self.settings.node,
            allow_uplink=allow_uplink,
            claimed_elsewhere=lambda pci: any(r.selects_address(pci) for r in pci_resources)).resource()

    def sriov(self, entry: dict, where: str, fingerprint: str) -> None:
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
        self.add(resource.resource(), fingerprint, entry, where)

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
