"""The DRA tests' stand-in kubelet (plugin registration and the DRA gRPC API over the real unix sockets), claims
as the scheduler allocates them, and the CDI spec check."""

from __future__ import annotations

import json
import pathlib
import time

import grpc

from pycni.kubelet import dra_v1_pb2, dra_v1_pb2_grpc
from pycni.kubelet import pluginregistration_pb2 as registration
from pycni.kubelet import pluginregistration_pb2_grpc as registration_grpc

SCHEMA = pathlib.Path(__file__).parent / "cdi-spec.schema.json"


def claim(name: str, uid: str, results: list[dict] | None) -> dict:
    status = {"allocation": {"devices": {"results": results}}} if results is not None else {}
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"namespace": "default", "name": name, "uid": uid},
            "spec": {"devices": {"requests": [{"name": "fuse", "exactly": {"deviceClassName": "fuse"}}]}},
            "status": status}


def result(request: str, driver: str, device: str, pool: str = "node-a") -> dict:
    return {"request": request, "driver": driver, "pool": pool, "device": device}


class Kubelet:
    """The kubelet's side: finds the registration socket, registers the plugin, calls its DRA endpoint."""

    def __init__(self, registry: pathlib.Path, driver: str) -> None:
        self.registry = registry
        self.driver = driver

    def register(self, timeout: float = 30) -> registration.PluginInfo:
        socket = self.registry / f"{self.driver}-reg.sock"
        deadline = time.monotonic() + timeout
        while not socket.exists():
            assert time.monotonic() < deadline, "the driver made no registration socket"
            time.sleep(0.05)
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            stub = registration_grpc.RegistrationStub(channel)
            info = stub.GetInfo(registration.InfoRequest(), timeout=10)
            stub.NotifyRegistrationStatus(registration.RegistrationStatus(plugin_registered=True), timeout=10)
        return info

    def call(self, endpoint: str, verb: str, claims: list[tuple[str, str]], api=(dra_v1_pb2, dra_v1_pb2_grpc)):
        messages, services = api
        request = getattr(messages, f"Node{verb}ResourcesRequest")(
            claims=[messages.Claim(namespace="default", name=name, uid=uid) for name, uid in claims])
        with grpc.insecure_channel(f"unix://{endpoint}") as channel:
            return getattr(services.DRAPluginStub(channel), f"Node{verb}Resources")(request, timeout=30).claims


def valid_spec(path: pathlib.Path) -> dict:
    import jsonschema

    spec = json.loads(path.read_text())
    jsonschema.validate(spec, json.loads(SCHEMA.read_text()))
    return spec
