"""Stand-ins for the kubelet's gRPC endpoints (it cannot be installed here), speaking the real protos over
real unix sockets: PodResources for host-device and `pycni status`."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, field

import grpc

from pycni.kubelet import podresources_pb2, podresources_pb2_grpc


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
