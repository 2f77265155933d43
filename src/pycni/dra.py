"""pycni's Dynamic Resource Allocation library, for DRA drivers of your own: the node side of a driver (its
kubelet plugin). It registers with the kubelet through the plugin registration directory, serves the kubelet's
DRA API (v1, and v1beta1 for older kubelets), reads each claim's allocation from the API server, and calls your
`Driver` to prepare and unprepare the devices allocated to it. Preparations are checkpointed on the node (a
restarted kubelet or driver is answered from there, never prepared twice) and each claim's devices are given to
its containers through a CDI spec file of the claim's own, named in the answer by CDI device ID.

A driver is a name and two methods: `prepare(claim, devices)` returns a `PreparedDevice` per device, with the
`Allocation` its containers get (environment, device nodes, mounts), and `unprepare(claim, devices)` undoes it.
A driver that publishes its devices answers `devices()` with a `PublishedDevice` each (name, attributes,
capacity) and calls the `changed` its `watch` is given when they change: the node's ResourceSlice pool is
published again, whole, as a new generation.

The names in `__all__` are the stable API (additions only across releases); everything under
`pycni.services.dra` is pycni's own and may change. Logging goes to the `pycni.dra` logger. Needs the
`devices` and `cluster` extras (`pip install 'pycni[devices,cluster]'`: grpcio, protobuf, kubernetes).
"""

from __future__ import annotations

from pycni.services.apiserver import SERVICE_ACCOUNT_DIR
from pycni.services.devices.model import Allocation, DeviceNode, Mount
from pycni.services.dra.model import (
    AllocatedDevice,
    AttributeValue,
    ClaimRef,
    Driver,
    PreparedDevice,
    PrepareFailed,
    PublishedDevice,
    Version,
)
from pycni.services.dra.paths import REGISTRY_DIR, PluginPaths

__all__ = ["REGISTRY_DIR", "AllocatedDevice", "Allocation", "AttributeValue", "ClaimRef", "DeviceNode", "Driver",
           "Mount", "PluginPaths", "PrepareFailed", "PreparedDevice", "PublishedDevice", "Version", "node_name",
           "run"]


def node_name() -> str:
    """This node's name: `NODE_NAME` (the DaemonSet sets it from `spec.nodeName`), else the host name."""
    import os
    import socket

    return os.environ.get("NODE_NAME") or socket.gethostname()


def run(driver: Driver, *, kubeconfig: str = "", service_account: str = SERVICE_ACCOUNT_DIR,
        paths: PluginPaths | None = None, node: str = "") -> None:
    """Serve `driver`'s kubelet plugin until SIGTERM or SIGINT (call it from the main thread), and publish its
    devices in `node`'s ResourceSlice pool (default `node_name()`) if it has any. `kubeconfig`: how to reach
    the API server (default: the pod's service account, its token and CA in `service_account`); `paths`:
    where the kubelet looks (default: `/var/lib/kubelet/plugins/<driver name>` and `plugins_registry`, CDI
    specs in `/var/run/cdi`).
    Raises OSError when a socket cannot be served, ValueError for a checkpoint it cannot read."""
    import signal
    import threading

    from pycni.services.apiserver import Connection
    from pycni.services.dra.claims import ApiClaims
    from pycni.services.dra.plugin import KubeletPlugin
    from pycni.services.dra.slices import ApiSlices, PoolKeeper, SlicePublisher

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stop.set())
    connection = Connection(kubeconfig, service_account)
    plugin = KubeletPlugin(driver, ApiClaims(connection), paths or PluginPaths.for_driver(driver.name))
    keeper = PoolKeeper(driver, SlicePublisher(ApiSlices(connection), driver.name, node or node_name()))
    keeper.start()
    plugin.start()
    try:
        while not stop.wait(3600):
            pass
    finally:
        plugin.stop()
        keeper.stop()
