"""A config read again and applied to the running resources: added ones are served and registered, removed
ones go, a changed one keeps its socket and the kubelet's stream and sends its new list, an unchanged one
(same fingerprint) keeps running as it is. A config that fails its checks is logged, and the running one
keeps serving."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pycni.services.devices.framework import ResourcePlugin
from pycni.services.devices.model import LOGGER, Resource

log = logging.getLogger(LOGGER)

Loader = Callable[[], list[tuple[Resource, str]]]  # the config read again: each resource and its fingerprint


@dataclass
class Applied:
    plugins: list[ResourcePlugin]  # what serves now, in the config's order
    started: list[ResourcePlugin] = field(default_factory=list)  # to serve and register
    changed: list[ResourcePlugin] = field(default_factory=list)  # serving a new version: watch it
    reregister: list[ResourcePlugin] = field(default_factory=list)  # changed options: register again
    removed: list[ResourcePlugin] = field(default_factory=list)  # closed


class ConfigReload:
    def __init__(self, load: Loader, config_file: str, fingerprints: dict[str, str], plugin_dir: str,
                 cdi_dir: str) -> None:
        self.load = load
        self.config_file = config_file
        self.fingerprints = dict(fingerprints)
        self.plugin_dir = plugin_dir
        self.cdi_dir = cdi_dir
        self.content = _read_bytes(config_file)

    def changed_on_disk(self) -> bool:
        return _read_bytes(self.config_file) != self.content

    def apply(self, running: list[ResourcePlugin]) -> Applied | None:
        """Read the config again and serve what it says; None (and the running config kept) when it fails."""
        self.content = _read_bytes(self.config_file)
        try:
            loaded = self.load()
        except Exception as e:  # noqa: BLE001 - whatever is wrong with the new config, the old one keeps serving
            log.error("reload refused, the running config keeps serving: %s", e)
            return None
        current = {p.resource.name: p for p in running}
        applied = Applied([])
        for resource, fingerprint in loaded:
            plugin = current.pop(resource.name, None)
            if plugin is not None and fingerprint and self.fingerprints.get(resource.name) == fingerprint:
                applied.plugins.append(plugin)  # unchanged: the running resource keeps its state and its watch
                if resource.close is not None:  # the new copy was never served: this is its owner
                    resource.close()
                continue
            if plugin is None:
                plugin = ResourcePlugin(resource, self.plugin_dir, self.cdi_dir)
                applied.started.append(plugin)
                log.info("reload: %s added", resource.name)
            else:
                options = plugin.options()
                plugin.replace(resource)
                applied.changed.append(plugin)
                if plugin.options() != options:
                    applied.reregister.append(plugin)
                log.info("reload: %s changed", resource.name)
            self.fingerprints[resource.name] = fingerprint
            applied.plugins.append(plugin)
        for name, plugin in current.items():
            self.fingerprints.pop(name, None)
            plugin.close()
            applied.removed.append(plugin)
            log.info("reload: %s removed", name)
        return applied


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""
