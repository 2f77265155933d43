"""A client of the kubelet's PodResources API (v1): which pod holds which device of which resource.

`held_devices` is the one lookup everything uses: host-device asks which device a pod was allocated
(resourceName), `pycni status` lists holders, and the device plugin's view of holdings
(`services/devices/holdings.py`) feeds withheld devices, device-info cleanup and netdevs moved into pods."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import grpc

from pycni.kubelet import PODRESOURCES_SOCKET, podresources_pb2, podresources_pb2_grpc

DEFAULT_SOCKET = PODRESOURCES_SOCKET
TIMEOUT_SECONDS = 5.0


class PodResourcesError(Exception):
    """The kubelet's PodResources could not answer (not running, refused, timed out)."""


@dataclass(frozen=True, slots=True)
class Holding:
    """Devices of one resource held by one container of a pod."""

    namespace: str
    pod: str
    container: str
    resource_name: str
    device_ids: tuple[str, ...]


class PodResourcesClient:
    def __init__(self, socket_path: str = DEFAULT_SOCKET) -> None:
        self.socket_path = socket_path
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.stub = podresources_pb2_grpc.PodResourcesListerStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> PodResourcesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: object) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            raise PodResourcesError(f"PodResources {method} at {self.socket_path}: {e.code().name}: {e.details()}") \
                from None

    def holdings(self) -> list[Holding]:
        """Every device held by every container on the node (List)."""
        response = self._call("List", podresources_pb2.ListPodResourcesRequest())
        return [held for pod in response.pod_resources for held in _holdings_of(pod)]

    def pod_holdings(self, namespace: str, pod: str) -> list[Holding]:
        """The devices one pod holds (Get)."""
        request = podresources_pb2.GetPodResourcesRequest(pod_name=pod, pod_namespace=namespace)
        return _holdings_of(self._call("Get", request).pod_resources)

    def allocatable(self) -> dict[str, list[str]]:
        """Device IDs per resource that the kubelet counts as allocatable."""
        response = self._call("GetAllocatableResources", podresources_pb2.AllocatableResourcesRequest())
        out: dict[str, list[str]] = {}
        for devices in response.devices:
            out.setdefault(devices.resource_name, []).extend(devices.device_ids)
        return out


def _holdings_of(pod: podresources_pb2.PodResources) -> list[Holding]:
    return [Holding(pod.namespace, pod.name, container.name, devices.resource_name, tuple(devices.device_ids))
            for container in pod.containers for devices in container.devices]


def held_devices(socket_path: str, namespace: str = "", pod: str = "") -> list[Holding]:
    """What pods hold (List), or one pod (Get, with `namespace` and `pod`). PodResourcesError when the
    kubelet cannot answer, its socket missing included."""
    if not os.path.exists(socket_path):
        raise PodResourcesError(f"PodResources: no socket at {socket_path} (is the kubelet running?)")
    with PodResourcesClient(socket_path) as client:
        return client.pod_holdings(namespace, pod) if pod else client.holdings()
