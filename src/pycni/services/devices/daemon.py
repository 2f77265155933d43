"""`pycni device-plugin`: serve every configured resource, register it, and do both again whenever the
kubelet restarts (a new kubelet deletes every socket in the plugin directory, then recreates its own:
seen through inotify the moment it happens). SIGTERM removes our sockets and exits 0."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import grpc

from pycni.host.inotify import DirectoryWatch
from pycni.services.devices.framework import KUBELET_SOCKET, LOGGER, Resource, ResourcePlugin

log = logging.getLogger(LOGGER)


class _Stop(BaseException):
    """SIGTERM or SIGINT in the main thread: a BaseException, so no `except Exception` on the way swallows it."""


class DeviceMetrics:
    """A Prometheus collector: devices per resource by health, and the devices Allocate handed out."""

    def __init__(self, plugins: list[ResourcePlugin]) -> None:
        self.plugins = plugins

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        devices = GaugeMetricFamily("pycni_devices", "Devices a resource offers the kubelet, by health.",
                                    labels=["resource", "health"])
        allocations = CounterMetricFamily("pycni_device_allocations", "Devices handed out by Allocate.",
                                          labels=["resource"])
        for plugin in self.plugins:
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
    def __init__(self, resources: list[Resource], plugin_dir: str, state_file: str = "") -> None:
        self.plugin_dir = plugin_dir
        self.plugins = [ResourcePlugin(r, plugin_dir) for r in resources]
        self.watchers: list[threading.Thread] = []
        self.state_file = state_file
        self.state_lock = threading.Lock()

    def start_watching(self) -> None:
        for plugin in self.plugins:
            if plugin.resource.watch is not None:
                thread = threading.Thread(target=self._keep_watching, args=(plugin,), daemon=True,
                                          name=f"watch {plugin.resource.name}")
                thread.start()
                self.watchers.append(thread)

    def state(self) -> dict:
        """What `pycni status` shows of this daemon: each resource's devices and what it keeps back."""
        resources = []
        for plugin in self.plugins:
            devices = {d.id: "Healthy" if d.healthy else "Unhealthy"
                       for d in sorted(plugin.devices().values(), key=lambda d: d.id)}  # reads the node first
            excluded = plugin.resource.excluded() if plugin.resource.excluded else {}
            resources.append({"name": plugin.resource.name, "excluded": excluded, "devices": devices})
        return {"pid": os.getpid(), "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "resources": resources}

    def write_state(self) -> None:
        if not self.state_file:
            return
        with self.state_lock:
            try:
                os.makedirs(os.path.dirname(self.state_file) or ".", exist_ok=True)
                temporary = f"{self.state_file}.tmp"
                with open(temporary, "w", encoding="utf-8") as f:
                    json.dump(self.state(), f, indent=1)
                os.replace(temporary, self.state_file)
            except OSError as e:
                log.error("cannot write %s: %s", self.state_file, e)

    def _keep_watching(self, plugin: ResourcePlugin, pause: float = 1.0) -> None:
        """Run the resource's watch for as long as the daemon lives: a watch that fails (a netlink error, a
        vanished sysfs entry) is logged and started again, and starting again re-reads every device."""
        assert plugin.resource.watch is not None

        def changed() -> None:
            plugin.changed()
            self.write_state()

        while True:
            try:
                plugin.resource.watch(changed)
                log.warning("watching %s ended; starting again", plugin.resource.name)
            except Exception as e:  # noqa: BLE001 - any failure: say so, keep the health stream alive
                log.error("watching %s failed (%s: %s); starting again", plugin.resource.name, type(e).__name__, e)
            time.sleep(pause)

    def register_all(self) -> None:
        """Register each resource in a thread of its own: the kubelet dials back inside Register."""
        for plugin in self.plugins:
            threading.Thread(target=self._register, args=(plugin,), daemon=True).start()

    def _register(self, plugin: ResourcePlugin) -> None:
        try:
            plugin.register()
            log.info("registered %s as %s", plugin.resource.name, plugin.resource.socket_name)
        except grpc.RpcError as e:
            log.warning("registering %s: %s %s (again when the kubelet's socket is recreated)",
                        plugin.resource.name, e.code().name, e.details())

    def run(self) -> None:
        watch = DirectoryWatch(self.plugin_dir)  # before serving: no kubelet restart can slip through
        previous = signal.signal(signal.SIGTERM, self._on_signal)
        previous_int = signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.start_watching()
            for plugin in self.plugins:
                plugin.serve()
            self.write_state()
            if os.path.exists(os.path.join(self.plugin_dir, KUBELET_SOCKET)):
                self.register_all()
            while True:
                self._handle(watch.read())
        except _Stop:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            watch.close()
            for plugin in self.plugins:
                plugin.close()
            if self.state_file:
                try:
                    os.unlink(self.state_file)
                except FileNotFoundError:
                    pass

    def _handle(self, events) -> None:
        ours = {p.resource.socket_name: p for p in self.plugins}
        kubelet_back = False
        for event in events:
            if event.name in ours and not event.created:
                log.info("%s was removed (kubelet restart?): serving it again", event.name)
                ours[event.name].serve()
            elif event.name == KUBELET_SOCKET and event.created:
                kubelet_back = True
        if kubelet_back:
            for plugin in self.plugins:
                if not os.path.exists(plugin.socket_path):
                    plugin.serve()
            self.register_all()

    def _on_signal(self, signum, frame) -> None:
        raise _Stop()
