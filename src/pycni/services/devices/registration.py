"""Registration with the kubelet, and again whenever it restarts: a new kubelet deletes every socket in the
plugin directory, then recreates its own. Seen through inotify on the directory the moment it happens, each
of our sockets is served again and every resource registers again."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

import grpc

from pycni.host.inotify import Event
from pycni.services.devices.framework import KUBELET_SOCKET, ResourcePlugin
from pycni.services.devices.model import LOGGER

log = logging.getLogger(LOGGER)


class Kubelet:
    def __init__(self, plugin_dir: str) -> None:
        self.plugin_dir = plugin_dir

    def register(self, plugins: Iterable[ResourcePlugin]) -> None:
        """Register each resource in a thread of its own (the kubelet dials back inside Register); nothing
        while the kubelet is not there (it is registered when its socket appears)."""
        if not os.path.exists(os.path.join(self.plugin_dir, KUBELET_SOCKET)):
            return
        for plugin in plugins:
            threading.Thread(target=_register, args=(plugin,), daemon=True).start()

    def restarted(self, events: Iterable[Event], plugins: list[ResourcePlugin]) -> None:
        """Act on the plugin directory's events: a socket of ours removed is served again; the kubelet's
        socket created means a new kubelet, which every resource registers with."""
        ours = {p.resource.socket_name: p for p in plugins}
        kubelet_back = False
        for event in events:
            if event.name in ours and not event.created:
                log.info("%s was removed (kubelet restart?): serving it again", event.name)
                ours[event.name].serve()
            elif event.name == KUBELET_SOCKET and event.created:
                kubelet_back = True
        if kubelet_back:
            for plugin in plugins:
                if not os.path.exists(plugin.socket_path):
                    plugin.serve()
            self.register(plugins)


def _register(plugin: ResourcePlugin) -> None:
    try:
        plugin.register()
        log.info("registered %s as %s", plugin.resource.name, plugin.resource.socket_name)
    except grpc.RpcError as e:
        log.warning("registering %s: %s %s (again when the kubelet's socket is recreated)",
                    plugin.resource.name, e.code().name, e.details())
