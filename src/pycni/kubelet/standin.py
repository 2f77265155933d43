"""Stand-ins for the kubelet's gRPC endpoints, speaking the real protos over real unix sockets: its
Registration service (which dials a device plugin back inside Register, as the kubelet does) and its
PodResources. The demo plays the kubelet with them, and the tests do, where no kubelet can be installed."""

from __future__ import annotations

import os
import queue
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from pycni.kubelet import deviceplugin_pb2, deviceplugin_pb2_grpc, podresources_pb2, podresources_pb2_grpc


@dataclass
class PodDevices:
    namespace: str
    name: str
    container: str
    resource_name: str
    device_ids: list[str]


@dataclass
class PodResourcesStub(podresources_pb2_grpc.PodResourcesListerServicer):
    pods: list[PodDevices] = field(default_factory=list)
    allocatable: dict[str, list[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def _pod(self, namespace: str, name: str) -> podresources_pb2.PodResources:
        mine = [p for p in self.pods if (p.namespace, p.name) == (namespace, name)]
        return podresources_pb2.PodResources(name=name, namespace=namespace, containers=[
            podresources_pb2.ContainerResources(name=p.container, devices=[
                podresources_pb2.ContainerDevices(resource_name=p.resource_name, device_ids=p.device_ids)])
            for p in mine])

    def List(self, request, context):  # noqa: N802 - gRPC method name
        self.calls.append("List")
        keys = sorted({(p.namespace, p.name) for p in self.pods})
        return podresources_pb2.ListPodResourcesResponse(pod_resources=[self._pod(*k) for k in keys])

    def Get(self, request, context):  # noqa: N802
        self.calls.append(f"Get {request.pod_namespace}/{request.pod_name}")
        if not any((p.namespace, p.name) == (request.pod_namespace, request.pod_name) for p in self.pods):
            context.abort(grpc.StatusCode.NOT_FOUND, f"pod {request.pod_namespace}/{request.pod_name} not found")
        return podresources_pb2.GetPodResourcesResponse(pod_resources=self._pod(request.pod_namespace,
                                                                                request.pod_name))

    def GetAllocatableResources(self, request, context):  # noqa: N802
        self.calls.append("GetAllocatableResources")
        return podresources_pb2.AllocatableResourcesResponse(devices=[
            podresources_pb2.ContainerDevices(resource_name=name, device_ids=ids)
            for name, ids in self.allocatable.items()])


def serve_pod_resources(socket_path: str, stub: PodResourcesStub) -> grpc.Server:
    """Serve `stub` on `socket_path` until the returned server is stopped."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    podresources_pb2_grpc.add_PodResourcesListerServicer_to_server(stub, server)
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    return server


class RegistrationStub:
    """The kubelet's Registration service: like the kubelet, it dials the plugin back inside Register
    (GetDevicePluginOptions) and records what was registered."""

    def __init__(self, plugin_dir: str) -> None:
        self.plugin_dir = plugin_dir
        self.registered: queue.Queue = queue.Queue()

    def Register(self, request, context):  # noqa: N802 - gRPC method name
        if request.version != "v1beta1":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version}")
        with grpc.insecure_channel(f"unix://{self.plugin_dir}/{request.endpoint}") as channel:
            options = deviceplugin_pb2_grpc.DevicePluginStub(channel).GetDevicePluginOptions(
                deviceplugin_pb2.Empty(), timeout=5)
        self.registered.put((request, options))
        return deviceplugin_pb2.Empty()


class FakeKubelet:
    """kubelet.sock in a plugin directory; `restart()` behaves as a new kubelet: every socket in the
    directory deleted, then kubelet.sock served again."""

    def __init__(self, plugin_dir: str) -> None:
        self.plugin_dir = plugin_dir
        self.registration = RegistrationStub(plugin_dir)
        self.server: grpc.Server | None = None
        self.start()

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        deviceplugin_pb2_grpc.add_RegistrationServicer_to_server(self.registration, server)
        server.add_insecure_port(f"unix://{self.plugin_dir}/kubelet.sock")
        server.start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0).wait()
            self.server = None

    def restart(self) -> None:
        self.stop()
        for name in os.listdir(self.plugin_dir):
            if name.endswith(".sock"):
                os.unlink(os.path.join(self.plugin_dir, name))
        self.start()

    def next_registration(self, timeout: float = 10):
        return self.registration.registered.get(timeout=timeout)

    def plugin(self, endpoint: str):
        """A DevicePlugin client on the plugin's socket, as the kubelet holds one."""
        channel = grpc.insecure_channel(f"unix://{self.plugin_dir}/{endpoint}")
        return channel, deviceplugin_pb2_grpc.DevicePluginStub(channel)
