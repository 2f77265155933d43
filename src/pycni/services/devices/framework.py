"""The kubelet device plugin API (v1beta1) served for one resource: the resource (`model.Resource`) says
which devices it has and what Allocate returns; this module serves `v1beta1.DevicePlugin` on the resource's
own socket, streams the full device list on every change, checks every request's device IDs, and registers
with the kubelet. The plugin owns its resource: it closes the one it replaces and the one it serves last."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from pycni.host.files import remove_file
from pycni.kubelet import deviceplugin_pb2 as api
from pycni.kubelet import deviceplugin_pb2_grpc as api_grpc
from pycni.kubelet.serving import unix_server
from pycni.services.devices import cdi
from pycni.services.devices.model import (
    LOGGER,
    Allocation,
    Device,
    DeviceNode,
    InvalidRequest,
    Mount,
    Resource,
    prefer_one_numa_node,
)
from pycni.services.devices.paths import PLUGIN_DIR

__all__ = ["API_VERSION", "DEFAULT_PLUGIN_DIR", "KUBELET_SOCKET", "LOGGER", "Allocation", "Device", "DeviceNode",
           "InvalidRequest", "Mount", "Resource", "ResourcePlugin", "prefer_one_numa_node"]

API_VERSION = "v1beta1"
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"
KUBELET_SOCKET = "kubelet.sock"
DEFAULT_PLUGIN_DIR = PLUGIN_DIR
REGISTER_TIMEOUT = 30.0


class _Servicer(api_grpc.DevicePluginServicer):  # type: ignore[misc]  # generated code, untyped
    def __init__(self, plugin: ResourcePlugin) -> None:
        self.plugin = plugin

    def GetDevicePluginOptions(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC method names
        return self.plugin.options()

    def ListAndWatch(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self.plugin.stream(context)

    def GetPreferredAllocation(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        responses = []
        for container in request.container_requests:
            try:
                ids = self.plugin.preferred(list(container.available_deviceIDs), list(container.must_include_deviceIDs),
                                            container.allocation_size)
            except InvalidRequest as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            responses.append(api.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return api.PreferredAllocationResponse(container_responses=responses)

    def Allocate(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        responses = []
        for container in request.container_requests:
            try:
                responses.append(self.plugin.container_response(list(container.devices_ids)))
            except InvalidRequest as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return api.AllocateResponse(container_responses=responses)

    def PreStartContainer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
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
        """Serve another version of the resource (same name) from now on, closing the one it replaces."""
        kind = cdi.kind_of(resource.name) if resource.cdi else ""
        if self.cdi_file is not None and self.cdi_file.kind != kind:
            self.cdi_file.remove()
            self.cdi_file = None
        if kind and self.cdi_file is None:
            self.cdi_file = cdi.SpecFile(self.cdi_dir, kind)
        old, self.resource = self.resource, resource
        if old is not resource and old.close is not None:
            old.close()
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
            yield _list_response(self.devices().values())

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
        if self.cdi_file is None:
            return _container_response(allocation)
        try:
            names = [cdi.qualified(self.cdi_file.kind, i) for i in ids]
        except ValueError as e:
            raise InvalidRequest(f"{self.resource.name}: {e}") from None
        return api.ContainerAllocateResponse(
            envs=allocation.envs, cdi_devices=[api.CDIDevice(name=n) for n in names],
            annotations={**allocation.annotations, cdi.annotation_key(self.cdi_file.kind): ",".join(names)})

    # serving and registering

    def serve(self) -> None:
        """Serve on the socket (replacing a stale one), before any registration."""
        self.stop_serving()
        self.server = unix_server(self.socket_path, self.resource.name,
                                  lambda server: api_grpc.add_DevicePluginServicer_to_server(_Servicer(self), server),
                                  workers=16, thread_prefix="devplugin")

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
        """The end of this resource here: its watch told to end, its socket and spec file gone."""
        self.retired = True
        if self.resource.close is not None:
            self.resource.close()
        self.stopping = True
        self.stop_serving()
        remove_file(self.socket_path)
        if self.cdi_file is not None:
            self.cdi_file.remove()


def _list_response(devices: Iterable[Device]) -> api.ListAndWatchResponse:
    return api.ListAndWatchResponse(devices=[
        api.Device(ID=d.id, health=HEALTHY if d.healthy else UNHEALTHY,
                   topology=api.TopologyInfo(nodes=[api.NUMANode(ID=d.numa_node)]) if d.numa_node >= 0 else None)
        for d in sorted(devices, key=lambda d: d.id)])


def _container_response(allocation: Allocation) -> api.ContainerAllocateResponse:
    return api.ContainerAllocateResponse(
        envs=allocation.envs, annotations=allocation.annotations,
        devices=[api.DeviceSpec(container_path=d.container_path, host_path=d.host_path, permissions=d.permissions)
                 for d in allocation.device_nodes],
        mounts=[api.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
                for m in allocation.mounts])

