"""What pods hold, as the device plugin sees it: one view of the kubelet's PodResources for the daemon and
its resources. It feeds the devices withheld from a resource (a pod holds them through another), the
device-info files removed once no pod holds a device, and a netdev counted as in a pod when it leaves the
node. Where the kubelet cannot answer, the answer is None ("cannot say"), and each user falls back to what
it saw itself."""

from __future__ import annotations

import logging
import os

from pycni.services.devices.model import LOGGER

log = logging.getLogger(LOGGER)

Held = dict[str, dict[str, str]]  # resource name -> device ID -> its holder ("pod ns/name")


class Holdings:
    def __init__(self, socket_path: str = "") -> None:
        self.socket_path = socket_path

    def current(self, quiet: bool = True) -> Held | None:
        """Devices held by pods now, per resource; None when there is no kubelet to ask or it failed (said in
        the log unless `quiet`)."""
        if not self.socket_path or not os.path.exists(self.socket_path):
            return None
        from pycni.kubelet.podresources import PodResourcesError, held_devices

        try:
            holdings = held_devices(self.socket_path)
        except PodResourcesError as e:
            if not quiet:
                log.warning("%s", e)
            return None
        held: Held = {}
        for h in holdings:
            for device_id in h.device_ids:
                held.setdefault(h.resource_name, {})[device_id] = f"pod {h.namespace}/{h.pod}"
        return held

    def of(self, resource_name: str) -> set[str] | None:
        """The IDs of one resource that pods hold; None when the kubelet cannot say."""
        held = self.current()
        return None if held is None else set(held.get(resource_name, {}))
