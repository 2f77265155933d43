"""Where a DRA driver's kubelet plugin lives on the node (the kubelet's directories), and what it tells the
kubelet it is: no gRPC here, so a driver's code and its tests load without it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pycni.services.devices.paths import CDI_SPEC_DIR

PLUGINS_DIR = "/var/lib/kubelet/plugins"
REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
PLUGIN_TYPE = "DRAPlugin"
SUPPORTED_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
CDI_CLASS = "claim"


@dataclass(frozen=True, kw_only=True)
class PluginPaths:
    """Where the plugin serves and keeps its state: `plugin_dir` (its DRA socket and checkpoint, the
    kubelet's `plugins/<driver>`), `registry_dir` (the kubelet's `plugins_registry`), `cdi_dir`."""

    plugin_dir: str
    registry_dir: str = REGISTRY_DIR
    cdi_dir: str = CDI_SPEC_DIR

    @classmethod
    def for_driver(cls, name: str) -> PluginPaths:
        return cls(plugin_dir=os.path.join(PLUGINS_DIR, name))

    @property
    def endpoint(self) -> str:
        return os.path.join(self.plugin_dir, "dra.sock")

    def registration_socket(self, driver: str) -> str:
        return os.path.join(self.registry_dir, f"{driver}-reg.sock")

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.plugin_dir, "checkpoint.json")
