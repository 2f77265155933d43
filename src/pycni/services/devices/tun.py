"""The `tun` resource: `count` interchangeable IDs for /dev/net/tun, so VPN and overlay pods get a tun
device without running privileged. All are Unhealthy when the node has no /dev/net/tun."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from pycni.services.devices.framework import Allocation, Device, DeviceNode, Resource

TUN_PATH = "/dev/net/tun"


@dataclass(frozen=True)
class TunResource:
    name: str
    count: int = 64
    path: str = TUN_PATH  # on the node

    def resource(self) -> Resource:
        return Resource(self.name, self.devices, self.allocate)

    def present(self) -> bool:
        try:
            return stat.S_ISCHR(os.stat(self.path).st_mode)
        except OSError:
            return False

    def devices(self) -> list[Device]:
        healthy = self.present()
        return [Device(f"tun-{i}", healthy) for i in range(self.count)]

    def allocate(self, ids: list[str]) -> Allocation:
        return Allocation(device_nodes=[DeviceNode(TUN_PATH, self.path, "rwm")])
