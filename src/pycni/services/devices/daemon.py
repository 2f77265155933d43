"""`pycni device-plugin`: serve every configured resource, register it with the kubelet and again whenever the
kubelet restarts (`registration.py`), keep each resource's watch running, reload the config on SIGHUP or a
new file (`reload.py`), and never offer a device a pod holds through another resource (`withheld.py`, from
the one view of PodResources in `holdings.py`). What `pycni status` shows is kept in `state.py`. SIGTERM
removes our sockets and spec files and exits 0."""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from pycni.host.inotify import CONTENTS, DirectoryWatch
from pycni.services.devices import cdi
from pycni.services.devices.framework import ResourcePlugin
from pycni.services.devices.holdings import Holdings
from pycni.services.devices.model import LOGGER, Resource
from pycni.services.devices.registration import Kubelet
from pycni.services.devices.reload import ConfigReload, Loader
from pycni.services.devices.state import StateFile
from pycni.services.devices.watching import Retired, keep_watching
from pycni.services.devices.withheld import Withholding

log = logging.getLogger(LOGGER)

CONFIGMAP_DATA = "..data"  # a ConfigMap volume is updated by renaming this link to a new directory over it
RECHECK_SECONDS = 5.0  # while a device is withheld, how often PodResources is asked whether it is free yet


class _Stop(BaseException):
    """SIGTERM or SIGINT in the main thread: a BaseException, so no `except Exception` on the way swallows it."""


class DeviceMetrics:
    """A Prometheus collector: devices per resource by health, and the devices Allocate handed out."""

    def __init__(self, plugins: list[ResourcePlugin]) -> None:
        self.plugins = plugins

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        devices = GaugeMetricFamily("pycni_devices", "Devices a resource offers the kubelet, by health.",
                                    labels=["resource", "health"])
        allocations = CounterMetricFamily("pycni_device_allocations", "Devices handed out by Allocate.",
                                          labels=["resource"])
        for plugin in list(self.plugins):
            listed = plugin.devices().values()
            healthy = sum(1 for d in listed if d.healthy)
            devices.add_metric([plugin.resource.name, "Healthy"], healthy)
            devices.add_metric([plugin.resource.name, "Unhealthy"], len(listed) - healthy)
            allocations.add_metric([plugin.resource.name], plugin.allocated_devices)
        yield devices
        yield allocations


def serve_metrics(plugins: list[ResourcePlugin], address: str) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(DeviceMetrics(plugins))
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)


class DevicePluginDaemon:
    def __init__(self, resources: list[Resource], plugin_dir: str, state_file: str = "", *,
                 cdi_dir: str = cdi.SPEC_DIR, reload: Loader | None = None, config_file: str = "",
                 fingerprints: dict[str, str] | None = None, pod_resources_socket: str = "",
                 dra_checkpoint: str = "") -> None:
        self.plugin_dir = plugin_dir
        self.plugins = [ResourcePlugin(r, plugin_dir, cdi_dir) for r in resources]  # the list is kept, not replaced
        self.plugins_lock = threading.Lock()
        self.state = StateFile(state_file)
        self.kubelet = Kubelet(plugin_dir)
        # `pycni dra`'s prepared claims (dra_checkpoint): their devices are not offered here
        self.withholding = Withholding(Holdings(pod_resources_socket), self.state, dra_checkpoint)
        self.reloader = ConfigReload(reload, config_file, fingerprints or {}, plugin_dir, cdi_dir) if reload else None
        self.kubelet_watch: DirectoryWatch | None = None  # while running; a reload request wakes it
        self.reload_requested = False

    # each resource's watch

    def _start_watch(self, plugin: ResourcePlugin, pause: float = 1.0) -> None:
        """The resource's watch in a thread of its own, for as long as `plugin` serves this resource."""
        resource = plugin.resource
        if resource.watch is None:
            return

        def serving() -> bool:
            return plugin.resource is resource and not plugin.retired

        def changed() -> None:
            if not serving():
                raise Retired()
            self.write_state()  # first, as for the CDI spec: what the kubelet hears of is on record
            plugin.changed()

        def paused() -> bool:
            time.sleep(pause)
            return False

        threading.Thread(target=keep_watching, args=(resource, changed), daemon=True, name=f"watch {resource.name}",
                         kwargs={"serving": serving, "pause": paused}).start()

    def write_state(self) -> None:
        self.state.write(self.plugins)

    def update_withheld(self) -> bool:
        return self.withholding.update(self.plugins)

    # reloading

    def request_reload(self) -> None:
        self.reload_requested = True
        if self.kubelet_watch is not None:
            self.kubelet_watch.interrupt()

    def reload(self) -> bool:
        """Read the config again and serve what it says; False (and the running config kept) when it fails."""
        if self.reloader is None:
            return False
        with self.plugins_lock:
            applied = self.reloader.apply(self.plugins)
            if applied is None:
                return False
            self.withholding.removed(applied.removed)
            self.plugins[:] = applied.plugins
        for plugin in applied.started + applied.changed:
            self._start_watch(plugin)
        for plugin in applied.started:
            plugin.serve()
        self.kubelet.register(applied.started + applied.reregister)
        self.write_state()
        return True

    # the main loop

    def run(self) -> None:
        watch = self.kubelet_watch = DirectoryWatch(self.plugin_dir)  # before serving: no kubelet restart slips by
        reloader = self.reloader
        config_watch = DirectoryWatch(os.path.dirname(os.path.abspath(reloader.config_file)), mask=CONTENTS) \
            if reloader and reloader.config_file else None
        checkpoint = self.withholding.dra_checkpoint
        dra_directory = os.path.dirname(os.path.abspath(checkpoint)) if checkpoint else ""
        # (no directory: no DRA driver on this node; the DaemonSet makes it, so a driver started later is seen)
        dra_watch = DirectoryWatch(dra_directory, mask=CONTENTS) if dra_directory and os.path.isdir(dra_directory) \
            else None
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        if reloader:
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())
        self.state.hold()
        try:
            for plugin in self.plugins:
                self._start_watch(plugin)
            for plugin in self.plugins:
                plugin.serve()
            any_withheld = self.update_withheld()
            self.write_state()
            self.kubelet.register(self.plugins)
            waiting = [watch.fd, watch.wake_fd] + ([config_watch.fd] if config_watch else []) \
                + ([dra_watch.fd] if dra_watch else [])
            while True:
                ready, _, _ = select.select(waiting, [], [], RECHECK_SECONDS if any_withheld else None)
                if dra_watch is not None and dra_watch.fd in ready:
                    dra_watch.read(0)
                    any_withheld = True  # looked at below
                if watch.fd in ready or watch.wake_fd in ready:
                    self.kubelet.restarted(watch.read(0), self.plugins)
                if config_watch is not None and config_watch.fd in ready and reloader is not None:
                    names = {e.name for e in config_watch.read(0)}
                    if names & {os.path.basename(reloader.config_file), CONFIGMAP_DATA} and reloader.changed_on_disk():
                        log.info("%s changed: reloading", reloader.config_file)
                        self.reload_requested = True
                if self.reload_requested:
                    self.reload_requested = False
                    if self.reload():
                        any_withheld = self.update_withheld()
                elif any_withheld:
                    any_withheld = self.update_withheld()
        except _Stop:
            pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.kubelet_watch = None
            watch.close()
            if config_watch is not None:
                config_watch.close()
            if dra_watch is not None:
                dra_watch.close()
            for plugin in self.plugins:
                plugin.close()
            self.state.remove()

    def _on_signal(self, signum: int, frame: object) -> None:
        raise _Stop()
