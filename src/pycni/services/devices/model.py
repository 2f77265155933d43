"""The device side's model: what a device is, what a container gets for it, what a resource is and where it
reads the node. Frozen values with their optional parts keyword-only (the leading fields stay positional,
as the README's examples pass them), so a resource, once built, is what the daemon serves: nothing patches
it afterwards. Nothing here imports gRPC: resources and their policies are written and tested without it.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar

from pycni.services.devices.paths import DEVICE_INFO_DIR

LOGGER = "pycni.devices"  # the framework's and pycni's resources' logger: silent unless the program says
logging.getLogger(LOGGER).addHandler(logging.NullHandler())
SOCKET_NAME_LENGTH = 40  # of the resource name's part of a socket's file name


@dataclass(frozen=True, slots=True)
class Device:
    """One device of a resource, by its ID; `numa_node` -1 when the node has no topology for it."""

    id: str
    _: KW_ONLY
    healthy: bool = True
    numa_node: int = -1


@dataclass(frozen=True, slots=True)
class DeviceNode:
    """A device node the runtime creates in the container (`permissions`: a subset of "rwm")."""

    container_path: str
    host_path: str
    permissions: str = "rwm"


@dataclass(frozen=True, slots=True)
class Mount:
    """A host path the runtime bind-mounts into the container."""

    container_path: str
    host_path: str
    _: KW_ONLY
    read_only: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """What the container gets for its devices. The variables and annotations are the allocation's own
    copies (a resource may still add to them before it answers); the nodes and mounts are tuples."""

    envs: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    device_nodes: Sequence[DeviceNode] = ()
    mounts: Sequence[Mount] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "envs", dict(self.envs))
        object.__setattr__(self, "annotations", dict(self.annotations))
        object.__setattr__(self, "device_nodes", tuple(self.device_nodes))
        object.__setattr__(self, "mounts", tuple(self.mounts))


@dataclass(frozen=True, slots=True)
class NodeAddresses:
    """What the node is known by: the kubelet's node IPs and the API server's address (either may be
    unknown, and then that rule of the uplink guard does not apply)."""

    node_ips: tuple[str, ...] = ()
    api_server: str = ""


@dataclass(frozen=True, slots=True)
class NodePaths:
    """Where a resource type reads the node: its /dev and /sys (mounted elsewhere when the daemon runs in a
    container), the kubelet's PodResources socket ("" when there is none); and, keyword-only, the node's
    addresses (interfaces holding them are never offered) and where device-info files for Multus go."""

    dev_root: str = "/dev"
    sysfs_root: str = "/sys"
    pod_resources_socket: str = ""
    _: KW_ONLY
    addresses: NodeAddresses = NodeAddresses()
    device_info_dir: str = DEVICE_INFO_DIR


Policy = Callable[[list[Device], list[str], int], list[str]]
Attributes = dict[str, bool | int | str]  # what a device is, for selection by attribute (DRA): name -> value


def prefer_one_numa_node(available: list[Device], must_include: list[str], size: int) -> list[str]:
    """The default preferred-allocation policy: `must_include` first, then devices from one NUMA node (the
    must-include devices' node, else the node with the most available devices), then the rest."""
    chosen = list(must_include)
    rest = [d for d in available if d.id not in must_include]
    by_node: dict[int, int] = {}
    for d in rest:
        by_node[d.numa_node] = by_node.get(d.numa_node, 0) + 1
    nodes_of_must = [d.numa_node for d in available if d.id in must_include]
    target = nodes_of_must[0] if nodes_of_must else max(by_node, key=lambda n: (by_node[n], -n), default=-1)
    rest.sort(key=lambda d: (d.numa_node != target, d.numa_node, d.id))
    return chosen + [d.id for d in rest][: max(0, size - len(chosen))]


@dataclass(frozen=True)
class Resource:
    """A device plugin resource: a name, its devices (`list_devices`) and what Allocate gives
    (`allocate`). Every other capability is optional, keyword-only, and absent when None:

    - `preferred(available, must_include, size)`: the preferred-allocation policy (one NUMA node first);
    - `pre_start(ids)`: a hook the kubelet runs before the container starts;
    - `watch(changed)`: started once in a thread of its own; calls `changed()` whenever the device list or a
      device's health changes (it may block);
    - `excluded()`: devices it matches but keeps back, and why (shown by `pycni status`);
    - `describe(id)`: without side effects, what one device gives a container (needed with `cdi`);
    - `attributes(id)`: what one device is (`ifName`, `pciAddress`, `numaNode` …), for `pycni dra` to
      publish (DRA claims select devices by them);
    - `close()`: called once when the daemon drops the resource (a reload, the exit); makes `watch` return;
    - `cdi`: Allocate answers with CDI device names, and a spec file describes each device;
    - `type_name`: the config `type` it was built from (set by the config loader)."""

    name: str
    list_devices: Callable[[], Iterable[Device]]
    allocate: Callable[[list[str]], Allocation]
    _: KW_ONLY
    preferred: Policy | None = prefer_one_numa_node
    pre_start: Callable[[list[str]], None] | None = None
    watch: Callable[[Callable[[], None]], None] | None = None
    excluded: Callable[[], dict[str, str]] | None = None
    describe: Callable[[str], Allocation] | None = None
    attributes: Callable[[str], Attributes] | None = None
    close: Callable[[], None] | None = None
    cdi: bool = False
    type_name: str = ""

    def __post_init__(self) -> None:
        if self.cdi and self.describe is None:
            raise ValueError(f"{self.name}: CDI needs describe(), what one device gives a container")

    @property
    def socket_name(self) -> str:
        """The socket's file name in the plugin directory, which is also the endpoint registered: readable,
        and short enough that the directory and it fit a unix socket's 108 bytes (a long resource name is cut
        and told apart by a digest)."""
        readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name)
        if len(readable) > SOCKET_NAME_LENGTH:
            readable = readable[:SOCKET_NAME_LENGTH - 9] + "-" + hashlib.sha256(self.name.encode()).hexdigest()[:8]
        return f"pycni-{readable}.sock"


@dataclass(frozen=True)
class DeviceType:
    """A resource type that `pycni device-plugin --config` builds by its `type` name: pycni's own types and
    those a package declares in the `pycni.device_types` entry-point group alike. `schema` is the JSON Schema
    (2020-12) of its config keys: every key of an entry other than `resourceName`, `type` and `cdi` must be
    one of its `properties`, and the entry must be valid against it, before `build(resource_name, options,
    node)` is called with those keys. `build` raises ValueError to refuse a config with a reason."""

    schema: dict[str, Any]
    build: Callable[[str, dict[str, Any], NodePaths], Resource]


class OptionError(ValueError):
    """A config entry refused by its type's `build`, at one of its keys (a JSON path below the entry, such
    as `selector` or `groups[1].paths[0].path`; "" for the entry as a whole)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"`{key}`: {message}" if key else message)
        self.key = key
        self.message = message


class InvalidRequest(Exception):
    """A request the resource cannot honour; the kubelet gets INVALID_ARGUMENT with this message."""


class ScannedResource(abc.ABC):
    """What the resources pycni ships have in common: a device list read from the node (`scan`) under
    `lock`, read once before the first answer; a `watch` that keeps it current; the devices matched but
    kept back (`excluded`: ID -> why). A type that can describe one device for CDI says so (`describes`)."""

    describes: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.excluded: dict[str, str] = {}
        self.scanned = threading.Event()

    @abc.abstractmethod
    def scan(self) -> object:
        """Read the node into this resource's state (under `lock`)."""

    @abc.abstractmethod
    def listed(self) -> list[Device]:
        """The devices as last scanned; called under `lock`."""

    @abc.abstractmethod
    def allocate(self, ids: list[str]) -> Allocation: ...

    @abc.abstractmethod
    def watch(self, changed: Callable[[], None]) -> None: ...

    def describe(self, device_id: str) -> Allocation:
        raise NotImplementedError(f"{type(self).__name__} does not describe devices")  # describes is False

    def close(self) -> None:  # noqa: B027 - optional: a type whose watch ends by itself need not
        """Make `watch` return."""

    def attributes(self, device_id: str) -> Attributes:
        """What one listed device is ({} when it is not listed)."""
        return {}

    def devices(self) -> list[Device]:
        if not self.scanned.is_set():  # the first list must be whole: read the node before answering
            self.scan()
            self.scanned.set()
        with self.lock:
            return self.listed()

    def exclusions(self) -> dict[str, str]:
        with self.lock:
            return dict(self.excluded)

    def resource(self, *, cdi: bool = False) -> Resource:
        return Resource(self.name, self.devices, self.allocate, watch=self.watch, excluded=self.exclusions,
                        describe=self.describe if self.describes else None, attributes=self.attributes,
                        close=self.close, cdi=cdi)
