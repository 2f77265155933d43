"""pycni's device plugin framework, for device plugins of your own: the kubelet's device plugin API
(v1beta1) served for each resource on a socket of its own, registered before and again whenever the
kubelet restarts, every request's device IDs checked, the device list streamed on every change. A
resource is a name, a function that lists its devices and one that says what Allocate gives; a resource
type (`DeviceType`) is what `pycni device-plugin --config` builds by name, pycni's own types included.

The model is frozen: `Device`, `DeviceNode`, `Mount`, `Allocation` and `Resource` are immutable values whose
leading fields may be passed by position and whose optional ones are keyword-only.

The names in `__all__` are the stable API: they keep their meaning across pycni releases (additions only,
as new optional fields and keyword arguments); everything under `pycni.services.devices` is pycni's own
and may change. Logging goes to the `pycni.devices` logger, silent until the program configures logging.
Needs the `devices` extra (`pip install 'pycni[devices]'`: grpcio and protobuf).
"""

from __future__ import annotations

from collections.abc import Iterable

from pycni.services.devices.model import (
    LOGGER,
    Allocation,
    Device,
    DeviceNode,
    DeviceType,
    InvalidRequest,
    Mount,
    NodePaths,
    Resource,
    prefer_one_numa_node,
)
from pycni.services.devices.paths import CDI_SPEC_DIR
from pycni.services.devices.paths import PLUGIN_DIR as DEFAULT_PLUGIN_DIR

__all__ = ["CDI_SPEC_DIR", "DEFAULT_PLUGIN_DIR", "LOGGER", "Allocation", "Device", "DeviceNode", "DeviceType",
           "InvalidRequest", "Mount", "NodePaths", "Resource", "prefer_one_numa_node", "run"]


def run(resources: Iterable[Resource], plugin_dir: str = DEFAULT_PLUGIN_DIR, *, state_file: str = "",
        metrics_address: str = "", cdi_dir: str = CDI_SPEC_DIR) -> None:
    """Serve `resources` until SIGTERM or SIGINT (call it from the main thread): each on its own socket in
    `plugin_dir`, registered with the kubelet there. `metrics_address` ("host:port") serves Prometheus
    metrics of every resource (devices by health, devices allocated), as `pycni device-plugin` does;
    `state_file` keeps what `pycni status --device-plugin-state` shows; a resource with `cdi=True` keeps
    its CDI spec file in `cdi_dir`. Raises OSError when a socket cannot be served."""
    from pycni.services.devices.daemon import DevicePluginDaemon, serve_metrics

    daemon = DevicePluginDaemon(list(resources), plugin_dir, state_file, cdi_dir=cdi_dir)
    if metrics_address:
        serve_metrics(daemon.plugins, metrics_address)
    daemon.run()
