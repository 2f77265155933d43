"""A DRA driver's kubelet plugin: the kubelet finds it through a socket in its plugin registration directory
(GetInfo, NotifyRegistrationStatus), then calls NodePrepareResources / NodeUnprepareResources on the
driver's own socket, in the API's v1 or v1beta1 (both are served: kubelets before 1.34 have only v1beta1).

Preparing is idempotent and survives restarts of the kubelet and of the driver: a claim's preparation is
checkpointed on the node before it is answered, and a claim found in the checkpoint is answered from there.
Each prepared claim's devices are described in a CDI spec file of the claim's own (written before the answer,
removed at unprepare), and the answer names them as CDI device IDs (`<driver>/claim=<claim UID>-<device>`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from pycni.host.files import remove_file
from pycni.kubelet import dra_v1_pb2, dra_v1_pb2_grpc, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc
from pycni.kubelet import pluginregistration_pb2 as registration
from pycni.kubelet import pluginregistration_pb2_grpc as registration_grpc
from pycni.kubelet.serving import unix_server
from pycni.services.devices import cdi
from pycni.services.dra.checkpoint import Checkpoint
from pycni.services.dra.claims import ClaimSource
from pycni.services.dra.model import ClaimRef, Driver, PreparedDevice, PrepareFailed
from pycni.services.dra.paths import CDI_CLASS, PLUGIN_TYPE, SUPPORTED_VERSIONS, PluginPaths

LOG = logging.getLogger("pycni.dra")

@dataclass(frozen=True)
class Outcome:
    """One claim's answer: its prepared devices with their CDI device IDs, or the error."""

    devices: tuple[tuple[PreparedDevice, tuple[str, ...]], ...] = ()
    error: str = ""


class KubeletPlugin:
    def __init__(self, driver: Driver, claims: ClaimSource, paths: PluginPaths) -> None:
        self.driver = driver
        self.claims = claims
        self.paths = paths
        self.kind = cdi.kind_of(f"{driver.name}/{CDI_CLASS}")
        os.makedirs(paths.plugin_dir, mode=0o750, exist_ok=True)
        self.checkpoint = Checkpoint(paths.checkpoint)
        self.registered = threading.Event()
        self.registration_error = ""
        self._claim_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._servers: list[tuple[grpc.Server, str]] = []

    # the kubelet's calls, without gRPC

    def prepare(self, claim: ClaimRef) -> Outcome:
        with self._claim_lock(claim.uid):
            done = self.checkpoint.get(claim.uid)
            if done is None:
                try:
                    allocated = self.claims.allocated(claim, self.driver.name)
                    prepared = tuple(self.driver.prepare(claim, allocated))
                    self._spec(claim).write({self._cdi_name(claim, d): d.edits for d in prepared})
                    self.checkpoint.put(claim, prepared)
                except PrepareFailed as e:
                    LOG.warning("claim %s/%s (%s): %s", claim.namespace, claim.name, claim.uid, e)
                    return Outcome(error=str(e))
                LOG.info("claim %s/%s (%s) prepared: %s", claim.namespace, claim.name, claim.uid,
                         ", ".join(f"{d.pool}/{d.device}" for d in prepared) or "no device of this driver")
            else:
                prepared = done[1]
            return Outcome(devices=tuple((d, self._cdi_ids(claim, d)) for d in prepared))

    def unprepare(self, claim: ClaimRef) -> Outcome:
        with self._claim_lock(claim.uid):
            done = self.checkpoint.get(claim.uid)
            if done is not None:
                try:
                    self.driver.unprepare(done[0], done[1])
                except PrepareFailed as e:
                    return Outcome(error=str(e))
                self._spec(claim).remove()
                self.checkpoint.remove(claim.uid)
                LOG.info("claim %s/%s (%s) unprepared", claim.namespace, claim.name, claim.uid)
        with self._locks_lock:
            self._claim_locks.pop(claim.uid, None)
        return Outcome()

    def _claim_lock(self, uid: str) -> threading.Lock:
        with self._locks_lock:
            return self._claim_locks.setdefault(uid, threading.Lock())

    def _spec(self, claim: ClaimRef) -> cdi.SpecFile:
        return cdi.SpecFile(self.paths.cdi_dir, self.kind, f"pycni-dra-{self.driver.name}-{claim.uid}.json")

    @staticmethod
    def _cdi_name(claim: ClaimRef, device: PreparedDevice) -> str:
        return f"{claim.uid}-{device.device}"

    def _cdi_ids(self, claim: ClaimRef, device: PreparedDevice) -> tuple[str, ...]:
        """A device with nothing for the container has no CDI device (the spec leaves it out)."""
        if not cdi.container_edits(device.edits):
            return ()
        return (cdi.qualified(self.kind, self._cdi_name(claim, device)),)

    # serving

    def start(self) -> None:
        """Serve the DRA API on the endpoint, then the registration socket the kubelet watches for."""
        os.makedirs(self.paths.registry_dir, exist_ok=True)
        name = self.driver.name

        def dra(server: grpc.Server) -> None:
            dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(_DraServicer(self, dra_v1_pb2), server)
            dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(_DraServicer(self, dra_v1beta1_pb2), server)

        for path, what, add in (
                (self.paths.endpoint, f"DRA driver {name}", dra),
                (self.paths.registration_socket(name), f"the registration of DRA driver {name}",
                 lambda server: registration_grpc.add_RegistrationServicer_to_server(_RegistrationServicer(self),
                                                                                      server))):
            self._servers.append((unix_server(path, what, add, workers=8, thread_prefix="dra"), path))

    def stop(self) -> None:
        """Stop serving; the registration socket goes first, so the kubelet sees the plugin leave."""
        while self._servers:
            server, path = self._servers.pop()
            server.stop(grace=1).wait()
            remove_file(path)


class _RegistrationServicer(registration_grpc.RegistrationServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, plugin: KubeletPlugin) -> None:
        self.plugin = plugin

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - the gRPC method's name
        return registration.PluginInfo(type=PLUGIN_TYPE, name=self.plugin.driver.name,
                                       endpoint=self.plugin.paths.endpoint,
                                       supported_versions=list(SUPPORTED_VERSIONS))

    def NotifyRegistrationStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.plugin.registration_error = request.error
        if request.plugin_registered:
            LOG.info("registered with the kubelet as DRA driver %s", self.plugin.driver.name)
            self.plugin.registered.set()
        else:
            LOG.error("the kubelet refused DRA driver %s: %s", self.plugin.driver.name, request.error)
            self.plugin.registered.clear()
        return registration.RegistrationStatusResponse()


class _DraServicer:
    """The DRAPlugin service of one API version (`api`: its messages module); the two share the logic."""

    def __init__(self, plugin: KubeletPlugin, api: Any) -> None:
        self.plugin = plugin
        self.api = api

    def NodePrepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        answers = {}
        for claim in _claims(request.claims):
            outcome = self.plugin.prepare(claim)
            answers[claim.uid] = self.api.NodePrepareResourceResponse(error=outcome.error, devices=[
                self.api.Device(request_names=list(d.request_names), pool_name=d.pool, device_name=d.device,
                                cdi_device_ids=list(ids)) for d, ids in outcome.devices])
        return self.api.NodePrepareResourcesResponse(claims=answers)

    def NodeUnprepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        answers = {claim.uid: self.api.NodeUnprepareResourceResponse(error=self.plugin.unprepare(claim).error)
                   for claim in _claims(request.claims)}
        return self.api.NodeUnprepareResourcesResponse(claims=answers)


def _claims(claims: Any) -> Sequence[ClaimRef]:
    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]

