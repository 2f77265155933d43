"""One plugin invocation as data: the CNI_* environment and the stdin config, validated."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pycni.protocol.errors import InvalidConfig, InvalidEnvironment
from pycni.protocol.jsonkeys import lookup
from pycni.protocol.result import Result

CONTAINER_ID_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
NETWORK_NAME_PATTERN = CONTAINER_ID_PATTERN
MAX_NAME_LENGTH = 253
MAX_IFNAME_LENGTH = 15

# Which CNI_* variables each verb needs (spec 1.1.0, section "Parameters").
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}

VALID_ATTACHMENT_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


@dataclass(slots=True)
class Request:
    command: str
    cni_version: str
    network_name: str
    config: dict  # the whole stdin config, keys spelled as the plugin's schema spells them
    raw_config: bytes  # stdin as received, handed on unchanged to delegated plugins
    container_id: str = ""
    netns: str = ""
    netns_fd: int | None = None  # CNI_NETNS as opened by the caller (the CNI service gets it handed over)
    ifname: str = ""
    cni_args: dict[str, str] = field(default_factory=dict)
    cni_path: list[str] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)
    prev_result: Result | None = None
    valid_attachments: frozenset[tuple[str, str]] | None = None

    @property
    def runtime_config(self) -> dict:
        return self.config.get("runtimeConfig") or {}


def check_environment(command: str, environ: Mapping[str, str]) -> None:
    missing = [name for name in REQUIRED_ENV.get(command, ()) if not environ.get(name)]
    if missing:
        raise InvalidEnvironment(f"required env variables [{','.join(missing)}] missing")
    container_id = environ.get("CNI_CONTAINERID", "")
    if container_id and not CONTAINER_ID_PATTERN.match(container_id):
        raise InvalidEnvironment(
            f"CNI_CONTAINERID {container_id!r} has invalid characters",
            "it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        )
    ifname = environ.get("CNI_IFNAME", "")
    if ifname:
        check_ifname(ifname, "CNI_IFNAME", InvalidEnvironment)


def check_ifname(ifname: str, where: str, error=InvalidConfig) -> None:
    problem = ""
    if len(ifname) > MAX_IFNAME_LENGTH:
        problem = f"is longer than {MAX_IFNAME_LENGTH} characters"
    elif ifname in (".", ".."):
        problem = "is not a valid interface name"
    elif any(c in ifname for c in "/:") or any(c.isspace() for c in ifname):
        problem = "contains '/', ':' or whitespace"
    if problem:
        raise error(f"{where} {ifname!r} {problem}")


def check_network_name(name) -> str:
    if name is None or name == "":
        raise InvalidConfig("missing network name")
    if not isinstance(name, str) or not NETWORK_NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        raise InvalidConfig(
            "invalid characters found in network name",
            f"name {name!r} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ and be at most {MAX_NAME_LENGTH} characters; "
            "it names a directory on the node",
        )
    return name


def parse_cni_args(text: str, known: frozenset[str]) -> dict[str, str]:
    """CNI_ARGS `K1=V1;K2=V2`. Unknown keys are an error unless IgnoreUnknown is true (as in Go)."""
    pairs: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidEnvironment(f"CNI_ARGS: invalid pair {item!r}", "CNI_ARGS is K1=V1;K2=V2")
        pairs[key] = value
    ignore_unknown = pairs.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = [k for k in pairs if k not in known and k != "IgnoreUnknown" and not k.startswith("K8S_")]
    if unknown and not ignore_unknown:
        raise InvalidEnvironment(f"CNI_ARGS: unknown args {unknown}", "set IgnoreUnknown=1 to pass them anyway")
    return pairs


def parse_valid_attachments(config: dict) -> frozenset[tuple[str, str]] | None:
    for key in VALID_ATTACHMENT_KEYS:
        entries = config.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise InvalidConfig(f"invalid network config: {key} must be a list (got {entries!r})")
        valid = set()
        for entry in entries:
            container_id = lookup(entry, "containerID") if isinstance(entry, dict) else None
            ifname = lookup(entry, "ifname") if isinstance(entry, dict) else None
            if not isinstance(container_id, str) or not isinstance(ifname, str):
                raise InvalidConfig(
                    f"invalid network config: {key} entries need string containerID and ifname (got {entry!r})"
                )
            valid.add((container_id, ifname))
        return frozenset(valid)
    return None
