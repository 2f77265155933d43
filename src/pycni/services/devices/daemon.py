"""`pycni device-plugin`: serve every configured resource, register it, and do both again whenever the
kubelet restarts (a new kubelet deletes every socket in the plugin directory, then recreates its own:
seen through inotify the moment it happens). SIGHUP, or a new config file, reloads the config: resources
added or removed register or go, a changed one keeps its socket and the kubelet's stream and sends its new
list; a config that fails its checks is logged and the running one keeps serving. A device a pod holds
through one resource is never offered by another. SIGTERM removes our sockets and spec files and exits 0."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable

import grpc

from pycni.host import lock
from pycni.host.files import replace_file
from pycni.host.inotify import CONTENTS, DirectoryWatch
from pycni.host.lock import lock_path_of
from pycni.services.devices import cdi
from pycni.services.devices.framework import KUBELET_SOCKET, LOGGER, Resource, ResourcePlugin

log = logging.getLogger(LOGGER)


CONFIGMAP_DATA = "..data"  # a ConfigMap volume is updated by renaming this link to a new directory over it
RECHECK_SECONDS = 5.0  # while a device is withheld, how often PodResources is asked whether it is free yet
Reloader = Callable[[], list[tuple[Resource, str]]]  # the config read again: each resource and its fingerprint


class _Stop(BaseException):
    """SIGTERM or SIGINT in the main thread: a BaseException, so no `except Exception` on the way swallows it."""


class _Retired(BaseException):
    """Raised in a watch thread by `changed()` once its resource was replaced or removed: the watch ends."""


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
                 cdi_dir: str = cdi.SPEC_DIR, reload: Reloader | None = None, config_file: str = "",
                 fingerprints: dict[str, str] | None = None, pod_resources_socket: str = "") -> None:
        self.plugin_dir = plugin_dir
        self.cdi_dir = cdi_dir
        self.plugins = [ResourcePlugin(r, plugin_dir, cdi_dir) for r in resources]
        self.plugins_lock = threading.Lock()
        self.watchers: list[threading.Thread] = []
        self.state_file = state_file
        self.state_lock = threading.Lock()
        self.reloader = reload
        self.config_file = config_file
        self.config_content = _read_bytes(config_file)
        self.fingerprints = dict(fingerprints or {})
        self.pod_resources_socket = pod_resources_socket
        self.removed_allocations: dict[str, set[str]] = {}  # resource name -> IDs it handed out, once removed
        self.kubelet_watch: DirectoryWatch | None = None  # while running; a reload request wakes it
        self.reload_requested = False

    # watching the node

    def start_watching(self) -> None:
        for plugin in self.plugins:
            self._start_watch(plugin)

    def _start_watch(self, plugin: ResourcePlugin) -> None:
        if plugin.resource.watch is not None:
            thread = threading.Thread(target=self._keep_watching, args=(plugin, plugin.resource), daemon=True,
                                      name=f"watch {plugin.resource.name}")
            thread.start()
            self.watchers.append(thread)

    def _keep_watching(self, plugin: ResourcePlugin, resource: Resource | None = None, pause: float = 1.0) -> None:
        """Run the resource's watch for as long as it is served: a watch that fails (a netlink error, a
        vanished sysfs entry) is logged and started again, and starting again re-reads every device."""
        resource = resource or plugin.resource
        assert resource.watch is not None

        def current() -> bool:
            return plugin.resource is resource and not plugin.retired

        def changed() -> None:
            if not current():
                raise _Retired()
            self.write_state()  # first, as for the CDI spec: what the kubelet hears of is on record
            plugin.changed()

        while current():
            try:
                resource.watch(changed)
                if not current():
                    return
                log.warning("watching %s ended; starting again", resource.name)
            except _Retired:
                return
            except Exception as e:  # noqa: BLE001 - any failure: say so, keep the health stream alive
                if not current():
                    return
                log.error("watching %s failed (%s: %s); starting again", resource.name, type(e).__name__, e)
            time.sleep(pause)

    # what `pycni status` shows

    def state(self, withheld: dict[ResourcePlugin, dict[str, str]] | None = None) -> dict:
        """What `pycni status` shows of this daemon: each resource's devices and what it keeps back (with
        `withheld`, what some resources are about to keep back)."""
        resources = []
        for plugin in list(self.plugins):
            held_back = (withheld or {}).get(plugin, plugin.withheld)
            devices = {d.id: "Healthy" if d.healthy else "Unhealthy"  # reads the node first
                       for d in sorted(plugin.devices(held_back).values(), key=lambda d: d.id)}
            excluded = plugin.resource.excluded() if plugin.resource.excluded else {}
            resources.append({"name": plugin.resource.name, "excluded": {**excluded, **held_back},
                              "devices": devices})
        return {"pid": os.getpid(), "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "resources": resources}

    def write_state(self, withheld: dict[ResourcePlugin, dict[str, str]] | None = None) -> None:
        """Write the state file; with `withheld`, then give those resources their new devices held back, all
        under one lock: once a device shows as held back to the kubelet, the file already says why."""
        with self.state_lock:
            if self.state_file:
                try:
                    replace_file(self.state_file, json.dumps(self.state(withheld), indent=1).encode())
                except OSError as e:
                    log.error("cannot write %s: %s", self.state_file, e)
            for plugin, held_back in (withheld or {}).items():
                plugin.withheld = held_back

    # the kubelet

    def register_all(self, plugins: list[ResourcePlugin] | None = None) -> None:
        """Register each resource in a thread of its own: the kubelet dials back inside Register."""
        if not os.path.exists(os.path.join(self.plugin_dir, KUBELET_SOCKET)):
            return
        for plugin in self.plugins if plugins is None else plugins:
            threading.Thread(target=self._register, args=(plugin,), daemon=True).start()

    def _register(self, plugin: ResourcePlugin) -> None:
        try:
            plugin.register()
            log.info("registered %s as %s", plugin.resource.name, plugin.resource.socket_name)
        except grpc.RpcError as e:
            log.warning("registering %s: %s %s (again when the kubelet's socket is recreated)",
                        plugin.resource.name, e.code().name, e.details())

    # devices held through another resource

    def holdings(self) -> dict[str, dict[str, str]]:
        """Device IDs held by pods, per resource name, each with its holder: the kubelet's PodResources, or
        where it cannot answer, what this daemon handed out (kept until it exits: it cannot see them freed)."""
        if self.pod_resources_socket and os.path.exists(self.pod_resources_socket):
            from pycni.kubelet.podresources import PodResourcesClient, PodResourcesError

            try:
                with PodResourcesClient(self.pod_resources_socket) as client:
                    held: dict[str, dict[str, str]] = {}
                    for h in client.holdings():
                        for device_id in h.device_ids:
                            held.setdefault(h.resource_name, {})[device_id] = f"pod {h.namespace}/{h.pod}"
                    return held
            except PodResourcesError as e:
                log.warning("%s; counting what this daemon handed out instead", e)
        held = {name: dict.fromkeys(ids, "a container (Allocate)") for name, ids in self.removed_allocations.items()}
        for plugin in self.plugins:
            held.setdefault(plugin.resource.name, {}).update(dict.fromkeys(plugin.allocated_ids,
                                                                           "a container (Allocate)"))
        return held

    def update_withheld(self) -> bool:
        """Mark Unhealthy, in every resource, the devices a pod holds through another resource that no longer
        offers them (its selector changed, it was renamed or removed): the kubelet keeps that pod's allocation
        under the old name and would hand the device out again under the new one. True while any is."""
        held = self.holdings()
        offered = {p.resource.name: [d.id for d in p.resource.list_devices()] for p in self.plugins}
        listed = {p.resource.name: set(offered[p.resource.name]) - p.withheld.keys() for p in self.plugins}
        any_withheld, changed = False, {}
        for plugin in self.plugins:
            name = plugin.resource.name
            withheld = {}
            for device_id in offered[name]:
                for holder_resource, holders in held.items():
                    if holder_resource != name and device_id in holders \
                            and device_id not in listed.get(holder_resource, ()):
                        withheld[device_id] = (f"held by {holders[device_id]} through {holder_resource}: offered "
                                               "again once it is given back")
            if withheld != plugin.withheld:
                for device_id in withheld.keys() - plugin.withheld.keys():
                    log.warning("%s: not offering %s: %s", name, device_id, withheld[device_id])
                changed[plugin] = withheld
            any_withheld = any_withheld or bool(withheld)
        if changed:
            self.write_state(changed)  # first: what the kubelet hears of, `pycni status` can explain
        for plugin in changed:
            plugin.changed()
        return any_withheld

    # reloading

    def request_reload(self) -> None:
        self.reload_requested = True
        if self.kubelet_watch is not None:
            self.kubelet_watch.interrupt()

    def reload(self) -> bool:
        """Read the config again and serve what it says; False (and the running config kept) when it fails."""
        if self.reloader is None:
            return False
        self.config_content = _read_bytes(self.config_file)
        try:
            loaded = self.reloader()
        except Exception as e:  # noqa: BLE001 - whatever is wrong with the new config, the old one keeps serving
            log.error("reload refused, the running config keeps serving: %s", e)
            return False
        started, to_register = [], []
        with self.plugins_lock:
            current = {p.resource.name: p for p in self.plugins}
            plugins = []
            for resource, fingerprint in loaded:
                plugin = current.pop(resource.name, None)
                if plugin is not None and fingerprint and self.fingerprints.get(resource.name) == fingerprint:
                    plugins.append(plugin)  # unchanged: the running resource keeps its state and its watch
                    if resource.close is not None:
                        resource.close()
                    continue
                if plugin is None:
                    plugin = ResourcePlugin(resource, self.plugin_dir, self.cdi_dir)
                    started.append(plugin)
                    log.info("reload: %s added", resource.name)
                else:
                    old, options = plugin.resource, plugin.options()
                    plugin.replace(resource)
                    if old.close is not None:
                        old.close()
                    if plugin.options() != options:
                        to_register.append(plugin)
                    log.info("reload: %s changed", resource.name)
                self.fingerprints[resource.name] = fingerprint
                plugins.append(plugin)
                self._start_watch(plugin)
            for name, plugin in current.items():
                self.removed_allocations.setdefault(name, set()).update(plugin.allocated_ids)
                self.fingerprints.pop(name, None)
                plugin.retired = True
                if plugin.resource.close is not None:
                    plugin.resource.close()
                plugin.close()
                log.info("reload: %s removed", name)
            self.plugins[:] = plugins
        for plugin in started:
            plugin.serve()
        self.register_all(started + to_register)
        self.write_state()
        return True

    # the main loop

    def run(self) -> None:
        watch = self.kubelet_watch = DirectoryWatch(self.plugin_dir)  # before serving: no kubelet restart slips by
        config_watch = DirectoryWatch(os.path.dirname(os.path.abspath(self.config_file)), mask=CONTENTS) \
            if self.config_file and self.reloader else None
        previous = signal.signal(signal.SIGTERM, self._on_signal)
        previous_int = signal.signal(signal.SIGINT, self._on_signal)
        previous_hup = signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload()) \
            if self.reloader else None
        alive = self._hold_state_lock()
        try:
            self.start_watching()
            for plugin in self.plugins:
                plugin.serve()
            withheld = self.update_withheld()
            self.write_state()
            self.register_all()
            waiting = [watch.fd, watch.wake_fd] + ([config_watch.fd] if config_watch else [])
            while True:
                ready, _, _ = select.select(waiting, [], [], RECHECK_SECONDS if withheld else None)
                if watch.fd in ready or watch.wake_fd in ready:
                    self._handle(watch.read(0))
                if config_watch is not None and config_watch.fd in ready:
                    names = {e.name for e in config_watch.read(0)}
                    if names & {os.path.basename(self.config_file), CONFIGMAP_DATA} \
                            and _read_bytes(self.config_file) != self.config_content:
                        log.info("%s changed: reloading", self.config_file)
                        self.reload_requested = True
                if self.reload_requested:
                    self.reload_requested = False
                    if self.reload():
                        withheld = self.update_withheld()
                elif withheld:
                    withheld = self.update_withheld()
        except _Stop:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            if previous_hup is not None:
                signal.signal(signal.SIGHUP, previous_hup)
            self.kubelet_watch = None
            watch.close()
            if config_watch is not None:
                config_watch.close()
            for plugin in self.plugins:
                if plugin.resource.close is not None:
                    plugin.resource.close()
                plugin.close()
            if self.state_file:
                for path in (self.state_file, lock_path_of(self.state_file)):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            if alive is not None:
                os.close(alive)

    def _hold_state_lock(self) -> int | None:
        """Hold the state file's lock while this daemon lives: `pycni status` tells by it whether the state it
        shows is served (a pid would not do: a container's pid means nothing on the node, and pids are reused)."""
        if not self.state_file:
            return None
        try:
            return lock.hold(lock_path_of(self.state_file))
        except BlockingIOError:
            log.error("another pycni device-plugin holds %s: its state file is shared", lock_path_of(self.state_file))
        except OSError as e:
            log.error("cannot hold %s: %s", lock_path_of(self.state_file), e)
        return None

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


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""

