"""The device plugin's config file: `{"resources": [{"resourceName", "type", ...}]}`, checked whole before
anything is served, with one line naming the first problem."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pycni.host.sysfs import Sysfs
from pycni.services.devices.framework import Resource
from pycni.services.devices.netdev import NetdevResource, Selector
from pycni.services.devices.tun import TUN_PATH, TunResource

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
TYPES = ("netdev", "tun")


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    sysfs_root: str = "/sys"
    pod_resources_socket: str = ""
    extra: dict = field(default_factory=dict)


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


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


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
    if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
        raise ConfigError(f"{path}: needs a \"resources\" list")
    resources: list[Resource] = []
    seen: set[str] = set()
    for i, entry in enumerate(data["resources"]):
        where = f"{path}: resources[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be an object")
        name = check_resource_name(entry.get("resourceName"), where)
        if name in seen:
            raise ConfigError(f"{where}: resourceName {name!r} appears twice")
        seen.add(name)
        kind = entry.get("type")
        if kind not in TYPES:
            raise ConfigError(f"{where}: unknown type {kind!r} (one of {', '.join(TYPES)})")
        if kind == "tun":
            count = entry.get("count", 64)
            if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
                raise ConfigError(f"{where}: count must be a whole number above 0, not {count!r}")
            resources.append(TunResource(name, count, entry.get("path", TUN_PATH)).resource())
        else:
            selector = entry.get("selector") or {}
            if not isinstance(selector, dict):
                raise ConfigError(f"{where}: selector must be an object")
            sel = Selector(_strings(selector.get("ifNames"), f"{where}.selector.ifNames"),
                           _strings(selector.get("drivers"), f"{where}.selector.drivers"),
                           _strings(selector.get("pciAddresses"), f"{where}.selector.pciAddresses"))
            resources.append(NetdevResource(name, sel, Sysfs(settings.sysfs_root),
                                            settings.pod_resources_socket).resource())
    return resources
