"""The kubelet device plugin API (v1beta1) served for any resource: a resource says which devices it has
and what Allocate returns; this module serves `v1beta1.DevicePlugin` on the resource's own socket before
registering it with the kubelet, streams the full device list on every change, checks every request's
device IDs, and registers again whenever the kubelet restarts."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from pycni.kubelet import deviceplugin_pb2 as api
from pycni.kubelet import deviceplugin_pb2_grpc as api_grpc
from pycni.services.devices import cdi

API_VERSION = "v1beta1"
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"
KUBELET_SOCKET = "kubelet.sock"
DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
REGISTER_TIMEOUT = 30.0
SOCKET_NAME_LENGTH = 40  # of the resource name's part
LOGGER = "pycni.devices"  # the framework's and pycni's resources' logger: silent unless the program says
logging.getLogger(LOGGER).addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    healthy: bool = True
    numa_node: int = -1  # -1: no topology


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
    read_only: bool = True


@dataclass(slots=True)
class Allocation:
    """What the container gets for its devices."""

    envs: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    device_nodes: list[DeviceNode] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NodePaths:
    """Where a resource type reads the node: its /dev and /sys (mounted elsewhere when the daemon runs in a
    container), and the kubelet's PodResources socket ("" when there is none)."""

    dev_root: str = "/dev"
    sysfs_root: str = "/sys"
    pod_resources_socket: str = ""


@dataclass(frozen=True)
class DeviceType:
    """A resource type that `pycni device-plugin --config` builds by its `type` name, from a package that
    declares it in the `pycni.device_types` entry-point group. `schema` is the JSON Schema (2020-12) of its
    config keys: every key of an entry other than `resourceName`, `type` and `cdi` must be one of its
    `properties`, and the entry must be valid against it, before `build(resource_name, options, node)` is
    called with those keys. `build` raises ValueError to refuse a config with a reason."""

    schema: dict
    build: Callable[[str, dict, NodePaths], Resource]


class InvalidRequest(Exception):
    """A request the resource cannot honour; the kubelet gets INVALID_ARGUMENT with this message."""


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


@dataclass
class Resource:
    """A device plugin resource. `watch(changed)` is started once and calls `changed()` whenever the device
    list or a device's health changes (it may block: it runs in a thread of its own); `close()`, when given,
    is called when the daemon drops the resource (a reload, the exit) and should make `watch` return.

    With `cdi`, Allocate answers with CDI device names and a spec file describes each device:
    `describe(id)` says, without side effects, what one device gives a container."""

    name: str
    list_devices: Callable[[], Iterable[Device]]
    allocate: Callable[[list[str]], Allocation]
    preferred: Callable[[list[Device], list[str], int], list[str]] | None = prefer_one_numa_node
    pre_start: Callable[[list[str]], None] | None = None
    watch: Callable[[Callable[[], None]], None] | None = None
    excluded: Callable[[], dict[str, str]] | None = None  # devices it matches but keeps back, and why
    describe: Callable[[str], Allocation] | None = None
    close: Callable[[], None] | None = None
    cdi: bool = False

    @property
    def socket_name(self) -> str:
        """The socket's file name in the plugin directory, which is also the endpoint registered: readable,
        and short enough that the directory and it fit a unix socket's 108 bytes (a long resource name is cut
        and told apart by a digest)."""
        readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name)
        if len(readable) > SOCKET_NAME_LENGTH:
            import hashlib

            readable = readable[:SOCKET_NAME_LENGTH - 9] + "-" + hashlib.sha256(self.name.encode()).hexdigest()[:8]
        return f"pycni-{readable}.sock"


class ScannedResource:
    """What the resources pycni ships have in common: a device list read from the node under `lock`, a
    `watch` that keeps it current, and the devices matched but kept back (`excluded`: ID -> why)."""

    name: str
    lock: threading.Lock
    excluded: dict[str, str]

    def devices(self) -> list[Device]:
        raise NotImplementedError

    def allocate(self, ids: list[str]) -> Allocation:
        raise NotImplementedError

    def watch(self, changed: Callable[[], None]) -> None:
        raise NotImplementedError

    def resource(self) -> Resource:
        return Resource(self.name, self.devices, self.allocate, watch=self.watch, excluded=self.exclusions)

    def exclusions(self) -> dict[str, str]:
        with self.lock:
            return dict(self.excluded)


class _Servicer(api_grpc.DevicePluginServicer):
    def __init__(self, plugin: ResourcePlugin) -> None:
        self.plugin = plugin

    def GetDevicePluginOptions(self, request, context):  # noqa: N802 - gRPC method names
        return self.plugin.options()

    def ListAndWatch(self, request, context):  # noqa: N802
        return self.plugin.stream(context)

    def GetPreferredAllocation(self, request, context):  # noqa: N802
        responses = []
        for container in request.container_requests:
            try:
                ids = self.plugin.preferred(list(container.available_deviceIDs), list(container.must_include_deviceIDs),
                                            container.allocation_size)
            except InvalidRequest as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            responses.append(api.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return api.PreferredAllocationResponse(container_responses=responses)

    def Allocate(self, request, context):  # noqa: N802
        responses = []
        for container in request.container_requests:
            try:
                responses.append(self.plugin.container_response(list(container.devices_ids)))
            except InvalidRequest as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return api.AllocateResponse(container_responses=responses)

    def PreStartContainer(self, request, context):  # noqa: N802
        if self.plugin.resource.pre_start is not None:
            try:
                self.plugin.resource.pre_start(list(request.devices_ids))
            except InvalidRequest as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return api.PreStartContainerResponse()


class ResourcePlugin:
    """One resource served on its own socket in the plugin directory and registered with the kubelet."""

    def __init__(self, resource: Resource, plugin_dir: str, cdi_dir: str = cdi.SPEC_DIR) -> None:
        self.plugin_dir = plugin_dir
        self.cdi_dir = cdi_dir
        self.socket_path = os.path.join(plugin_dir, resource.socket_name)
        self.server: grpc.Server | None = None
        self.changes = threading.Condition()
        self.generation = 0
        self.stopping = False
        self.allocated_devices = 0  # devices handed out by Allocate so far (a metric)
        self.allocated_ids: set[str] = set()  # their IDs: held, as far as this process can tell
        self.retired = False  # dropped by a reload: its watch ends
        self.withheld: dict[str, str] = {}  # device ID -> why it is Unhealthy whatever the resource says
        self.resource = resource
        self.cdi_file: cdi.SpecFile | None = None
        self.replace(resource)

    def replace(self, resource: Resource) -> None:
        """Serve another version of the resource (same name) from now on: a reloaded config."""
        if resource.cdi and resource.describe is None:
            raise ValueError(f"{resource.name}: CDI needs describe(), what one device gives a container")
        kind = cdi.kind_of(resource.name) if resource.cdi else ""
        if self.cdi_file is not None and self.cdi_file.kind != kind:
            self.cdi_file.remove()
            self.cdi_file = None
        if kind and self.cdi_file is None:
            self.cdi_file = cdi.SpecFile(self.cdi_dir, kind)
        self.resource = resource
        self.changed()

    # device list and its changes

    def changed(self) -> None:
        self.write_cdi_spec()  # first: a device the kubelet sees listed is one the runtime can resolve
        with self.changes:
            self.generation += 1
            self.changes.notify_all()

    def devices(self, withheld: dict[str, str] | None = None) -> dict[str, Device]:
        """The resource's devices, those held back (`self.withheld`, or `withheld`) Unhealthy."""
        devices = {d.id: d for d in self.resource.list_devices()}
        for device_id in (self.withheld if withheld is None else withheld).keys() & devices.keys():
            devices[device_id] = dataclasses.replace(devices[device_id], healthy=False)
        return devices

    def write_cdi_spec(self) -> None:
        spec_file, describe = self.cdi_file, self.resource.describe
        if spec_file is not None and describe is not None:
            try:
                spec_file.write({device_id: describe(device_id) for device_id in self.devices()})
            except OSError as e:
                logging.getLogger(LOGGER).error("%s: cannot write the CDI spec %s: %s", self.resource.name,
                                                spec_file.path, e)

    def stream(self, context: grpc.ServicerContext) -> Iterator[api.ListAndWatchResponse]:
        """The full list now, and again after every change, until the kubelet or the plugin goes away."""
        context.add_callback(self.changed)  # wakes the wait below when the stream ends
        seen = -1
        while True:
            with self.changes:
                while self.generation == seen and context.is_active() and not self.stopping:
                    self.changes.wait()
                if not context.is_active() or self.stopping:
                    return
                seen = self.generation
            yield api.ListAndWatchResponse(devices=[
                api.Device(ID=d.id, health=HEALTHY if d.healthy else UNHEALTHY,
                           topology=api.TopologyInfo(nodes=[api.NUMANode(ID=d.numa_node)]) if d.numa_node >= 0
                           else None)
                for d in sorted(self.devices().values(), key=lambda d: d.id)])

    # requests

    def options(self) -> api.DevicePluginOptions:
        return api.DevicePluginOptions(pre_start_required=self.resource.pre_start is not None,
                                       get_preferred_allocation_available=self.resource.preferred is not None)

    def _usable(self, ids: list[str]) -> dict[str, Device]:
        devices = self.devices()
        unknown = [i for i in ids if i not in devices]
        if unknown:
            raise InvalidRequest(f"{self.resource.name}: unknown device IDs {unknown}")
        unhealthy = [i for i in ids if not devices[i].healthy]
        if unhealthy:
            raise InvalidRequest(f"{self.resource.name}: unhealthy device IDs {unhealthy}")
        return devices

    def preferred(self, available: list[str], must_include: list[str], size: int) -> list[str]:
        devices = self._usable(available + must_include)
        missing = [i for i in must_include if i not in available]
        if missing:
            raise InvalidRequest(f"{self.resource.name}: must_include devices {missing} are not available")
        if size < len(must_include) or size > len(available):
            raise InvalidRequest(f"{self.resource.name}: allocation size {size} cannot hold must_include "
                                 f"{must_include} from {len(available)} available devices")
        policy = self.resource.preferred or prefer_one_numa_node
        return policy([devices[i] for i in available], must_include, size)

    def allocate(self, ids: list[str]) -> Allocation:
        if not ids:
            raise InvalidRequest(f"{self.resource.name}: Allocate with no device IDs")
        self._usable(ids)
        allocation = self.resource.allocate(ids)
        self.allocated_devices += len(ids)
        self.allocated_ids.update(ids)
        return allocation

    def container_response(self, ids: list[str]) -> api.ContainerAllocateResponse:
        """Allocate's answer for one container: the device nodes and mounts, or with CDI the devices' names
        (in the field, and in the annotation for runtimes that read that form); the spec file has the rest."""
        allocation = self.allocate(ids)
        if self.cdi_file is not None:
            try:
                names = [cdi.qualified(self.cdi_file.kind, i) for i in ids]
            except ValueError as e:
                raise InvalidRequest(f"{self.resource.name}: {e}") from None
            return api.ContainerAllocateResponse(
                envs=allocation.envs, cdi_devices=[api.CDIDevice(name=n) for n in names],
                annotations={**allocation.annotations, cdi.annotation_key(self.cdi_file.kind): ",".join(names)})
        return api.ContainerAllocateResponse(
            envs=allocation.envs, annotations=allocation.annotations,
            devices=[api.DeviceSpec(container_path=d.container_path, host_path=d.host_path,
                                    permissions=d.permissions) for d in allocation.device_nodes],
            mounts=[api.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
                    for m in allocation.mounts])

    # serving and registering

    def serve(self) -> None:
        """Serve on the socket (replacing a stale one), before any registration."""
        self.stop_serving()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="devplugin"))
        api_grpc.add_DevicePluginServicer_to_server(_Servicer(self), server)
        try:
            server.add_insecure_port(f"unix://{self.socket_path}")
        except RuntimeError:  # grpc's word for any bind failure
            server.stop(0)
            raise OSError(f"cannot serve {self.resource.name} on {self.socket_path} (the directory is not "
                          "writable, or the path is longer than a unix socket allows)") from None
        server.start()
        self.server = server

    def register(self) -> None:
        kubelet = os.path.join(self.plugin_dir, KUBELET_SOCKET)
        with grpc.insecure_channel(f"unix://{kubelet}") as channel:
            api_grpc.RegistrationStub(channel).Register(api.RegisterRequest(
                version=API_VERSION, endpoint=self.resource.socket_name, resource_name=self.resource.name,
                options=self.options()), timeout=REGISTER_TIMEOUT)

    def stop_serving(self) -> None:
        if self.server is not None:
            with self.changes:
                self.stopping = True
                self.changes.notify_all()
            self.server.stop(grace=1).wait()
            self.server = None
            self.stopping = False

    def close(self) -> None:
        self.stopping = True
        self.stop_serving()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        if self.cdi_file is not None:
            self.cdi_file.remove()
