"""The device plugin's state file, what `pycni status` shows of it: each resource's devices and what it
keeps back, and why. The daemon holds the lock beside the file while it lives, so `status` tells a state that
is served from one left behind (a pid would not do: a container's pid means nothing on the node, and pids
are reused); the file and its lock go at a clean exit."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from pycni.host import lock
from pycni.host.files import remove_file, replace_file
from pycni.services.devices.framework import HEALTHY, UNHEALTHY, ResourcePlugin
from pycni.services.devices.model import LOGGER

log = logging.getLogger(LOGGER)

Withheld = dict[ResourcePlugin, dict[str, str]]  # a resource's devices about to be held back, and why


class StateFile:
    def __init__(self, path: str) -> None:
        self.path = path  # "" for none
        self.lock = threading.Lock()
        self.alive: int | None = None

    def hold(self) -> None:
        """Hold the lock beside the file for as long as this daemon lives."""
        if not self.path:
            return
        try:
            self.alive = lock.hold(lock.lock_path_of(self.path))
        except BlockingIOError:
            log.error("another pycni device-plugin holds %s: its state file is shared", lock.lock_path_of(self.path))
        except OSError as e:
            log.error("cannot hold %s: %s", lock.lock_path_of(self.path), e)

    def write(self, plugins: Iterable[ResourcePlugin], withheld: Withheld | None = None) -> None:
        """Write the file; with `withheld`, then give those resources their new devices held back, all under
        one lock: once a device shows as held back to the kubelet, the file already says why."""
        with self.lock:
            if self.path:
                try:
                    replace_file(self.path, json.dumps(state(plugins, withheld), indent=1).encode())
                except OSError as e:
                    log.error("cannot write %s: %s", self.path, e)
            for plugin, held_back in (withheld or {}).items():
                plugin.withheld = held_back

    def remove(self) -> None:
        if self.path:
            for path in (self.path, lock.lock_path_of(self.path)):
                remove_file(path)
        if self.alive is not None:
            os.close(self.alive)
            self.alive = None


def state(plugins: Iterable[ResourcePlugin], withheld: Withheld | None = None) -> dict[str, Any]:
    """Each resource's devices and what it keeps back (with `withheld`, what some are about to keep back)."""
    resources = []
    for plugin in list(plugins):
        held_back = (withheld or {}).get(plugin, plugin.withheld)
        devices = {d.id: HEALTHY if d.healthy else UNHEALTHY  # reads the node first
                   for d in sorted(plugin.devices(held_back).values(), key=lambda d: d.id)}
        excluded = plugin.resource.excluded() if plugin.resource.excluded else {}
        resources.append({"name": plugin.resource.name, "excluded": {**excluded, **held_back}, "devices": devices})
    return {"pid": os.getpid(), "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "resources": resources}
