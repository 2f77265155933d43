"""The device-info files Multus reads (k8snetworkplumbingwg device-info spec): written when Allocate hands a
device out, removed once no pod holds it, by PodResources where the kubelet answers, else once the
device's interface is back on the node."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from pycni.host.files import remove_file, replace_file
from pycni.services.devices.holdings import Holdings
from pycni.services.devices.model import LOGGER

log = logging.getLogger(LOGGER)

GRACE_SECONDS = 60.0  # a fresh file is kept this long before PodResources can be asked about it (it may lag)


@dataclass
class _InfoFile:
    written: float  # time.monotonic()
    away: bool = False  # its interface has left the node (into the pod) since
    content: str = ""


class DeviceInfoFiles:
    """One resource's device-info files, in `directory`."""

    def __init__(self, resource_name: str, directory: str, holdings: Holdings) -> None:
        self.resource_name = resource_name
        self.directory = directory
        self.holdings = holdings
        self.lock = threading.Lock()
        self.files: dict[str, _InfoFile] = {}  # device ID -> its file

    def path(self, device_id: str) -> str:
        """`<dir>/<resource name, '/' as '-'>-<device ID>-device.json`, where Multus looks for it."""
        return os.path.join(self.directory, f"{self.resource_name.replace('/', '-')}-{device_id}-device.json")

    def write(self, device_id: str, content: str) -> None:
        path = self.path(device_id)
        with self.lock:
            kept = self.files.get(device_id)
        if kept is None or kept.content != content or not os.path.exists(path):  # else: the same file, there
            try:
                replace_file(path, content.encode())
            except OSError as e:
                log.error("%s: cannot write the device-info file of %s: %s", self.resource_name, device_id, e)
                return
        with self.lock:
            self.files[device_id] = _InfoFile(time.monotonic(), content=content)

    def release(self, on_the_node: dict[str, bool]) -> None:
        """Remove the files of devices no pod holds any more (`on_the_node`: device ID -> whether its
        interface is in this namespace now)."""
        with self.lock:
            files = dict(self.files)
        if not files:
            return
        held = self.holdings.of(self.resource_name)
        now = time.monotonic()
        for device_id, info in files.items():
            here = on_the_node.get(device_id, False)
            info.away = info.away or not here
            free = (device_id not in held and now - info.written >= GRACE_SECONDS) if held is not None \
                else (info.away and here)
            if free:
                remove_file(self.path(device_id))
                with self.lock:
                    self.files.pop(device_id, None)
