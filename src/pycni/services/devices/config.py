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

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pycni.protocol.schemacheck import first_error, resolved, strict_check
from pycni.services.devices.model import DeviceType, NodePaths, OptionError, Resource
from pycni.services.devices.paths import SRIOV_RESOURCE_PREFIX
from pycni.services.devices.registry import BUILT_IN_TYPES, SCHEMA_DOCUMENT, Registry, UnknownType

COMMON_KEYS = ("resourceName", "type", "cdi")  # of every `resources` entry; the rest is its type's

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class ConfigError(Exception):
    """A config refused: the file (`path`), where in it (`where`, a JSON path; "" for the file as a whole)
    and what is wrong (`message`)."""

    def __init__(self, path: str, message: str, where: str = "") -> None:
        super().__init__(f"{path}: `{where}`: {message}" if where else f"{path}: {message}")
        self.path = path
        self.where = where
        self.message = message


@dataclass(frozen=True)
class Settings:
    """What the daemon was told of the node, and the SR-IOV device plugin's `--resource-prefix`."""

    node: NodePaths = field(default_factory=NodePaths)
    resource_prefix: str = SRIOV_RESOURCE_PREFIX


def check_resource_name(name: object) -> str:
    """The kubelet's rule for extended resources, `domain/name` not in the kubernetes.io domains: "" when
    `name` keeps it, else why not."""
    if not isinstance(name, str) or not name:
        return "resourceName is missing"
    domain, slash, part = name.partition("/")
    if not slash or not DNS_SUBDOMAIN.match(domain) or len(domain) > 253 or not NAME_PART.match(part) \
            or len(part) > 63:
        return f"resourceName {name!r} is not domain/name (e.g. pycni.io/nic)"
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        return f"resourceName {name!r} is in the kubernetes.io domain, which the kubelet refuses"
    return ""


def load_fingerprinted(path: str, settings: Settings) -> list[tuple[Resource, str]]:
    """Each resource with a fingerprint of the config it was built from (its entry, and the entries it depends
    on): a reload keeps a running resource whose fingerprint did not change."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, f"cannot read it: {e.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(path, f"not JSON: {e}") from None
    return parse_fingerprinted(data, path, settings)


def parse(data: object, path: str, settings: Settings) -> list[Resource]:
    return [resource for resource, _ in parse_fingerprinted(data, path, settings)]


def parse_fingerprinted(data: object, path: str, settings: Settings) -> list[tuple[Resource, str]]:
    findings = strict_check(schema_view(data), SCHEMA_DOCUMENT)
    if findings:
        raise ConfigError(path, findings[0].text, findings[0].path or ".")
    assert isinstance(data, dict)
    builder = _Builder(path, settings)
    sriov_entries = data.get("resourceList", [])
    for i, entry in enumerate(sriov_entries):  # first: they are the more specific, and take their devices first
        prefix = entry.get("resourcePrefix", settings.resource_prefix)
        kind = entry.get("deviceType", "netDevice")
        builder.add(builder.registry.sriov_kinds[kind], kind, f"{prefix}/{entry['resourceName']}", entry,
                    f"resourceList[{i}]", _fingerprint(sriov_entries[:i + 1]))
    for i, entry in enumerate(data.get("resources", [])):
        where = f"resources[{i}]"
        try:
            device_type = builder.registry.resource_type(entry["type"])
        except UnknownType as e:
            raise ConfigError(path, str(e), f"{where}.type") from None
        depends = sriov_entries if entry["type"] == "netdev" else []  # it leaves their devices to them
        builder.add(device_type, entry["type"], entry["resourceName"], entry, where, _fingerprint([*depends, entry]))
    return list(zip(builder.resources, builder.fingerprints, strict=True))


def _fingerprint(entries: list[Any]) -> str:
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


class _Builder:
    """Resources in the order the kubelet will see them, each name once, each built by its type."""

    def __init__(self, path: str, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.registry = Registry.for_config()
        self.resources: list[Resource] = []
        self.fingerprints: list[str] = []
        self.names: set[str] = set()

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(self.path, message, where)

    def add(self, device_type: DeviceType, type_name: str, name: str, entry: dict[str, Any], where: str,
            fingerprint: str) -> None:
        """Check the entry's keys against its type's schema, build it, and keep it."""
        problem = check_resource_name(name)
        if problem:
            raise self.fail(where, problem)
        if name in self.names:
            raise self.fail(where, f"resourceName {name!r} appears twice")
        self.names.add(name)
        options = {k: v for k, v in entry.items() if k not in COMMON_KEYS}
        self._check_options(device_type, type_name, options, where)
        try:
            resource = device_type.build(name, options, self.settings.node)
        except OptionError as e:
            raise self.fail(f"{where}.{e.key}" if e.key else where, e.message) from None
        except ValueError as e:
            raise self.fail(where, f"type {type_name!r}: {e}") from None
        if not isinstance(resource, Resource) or resource.name != name:
            raise self.fail(where, f"type {type_name!r} built no Resource named {name!r}")
        if entry.get("cdi"):  # (a resource name the kubelet takes is a CDI kind as it is)
            if resource.describe is None:
                raise self.fail(f"{where}.cdi", f"type {type_name!r} does not describe its devices for CDI")
            resource = dataclasses.replace(resource, cdi=True)
        self.resources.append(dataclasses.replace(resource, type_name=type_name))
        self.fingerprints.append(fingerprint)

    def _check_options(self, device_type: DeviceType, type_name: str, options: dict[str, Any], where: str) -> None:
        known_keys = resolved(device_type.schema).get("properties", {})
        for key in options:
            if key not in known_keys:
                raise self.fail(f"{where}.{key}", f"unknown key for type {type_name!r}" +
                                (f"; it knows {', '.join(sorted(known_keys))}" if known_keys else ""))
        error = first_error(options, device_type.schema)
        if error is not None:
            at, message = error
            raise self.fail(f"{where}.{at}" if at else where, message)
