"""`pycni dra`: pycni's own resources (the device plugin's config: `netdev`, the SR-IOV kinds, `tun`,
`devices`, installed types) as the DRA driver `pycni.io`. Every device of every resource is published in the
node's pool with what it is (`resource`, `type`, `id`, `healthy`, `numaNode`, and the type's own attributes:
a NIC's `ifName`, `pciAddress`, `vendorID`, `deviceID`, `driver`, `pfName`, `rdma`, `linkType`, `carrier`; a
device node's `path` and USB IDs), kept current by the resources' own watches. The node's uplink is never
published (the resources' guard). A device a pod holds through the device plugin (the kubelet's
PodResources says so) is left out of the pool until it is given back: one owner per device. Preparing a
claim gives its containers what the device plugin's Allocate gives (`PCIDEVICE_<RESOURCE>`, device nodes)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pycni.services.devices.holdings import Held
from pycni.services.devices.model import Attributes, Resource
from pycni.services.devices.watching import keep_watching
from pycni.services.dra.model import (
    MAX_ATTRIBUTES,
    AllocatedDevice,
    ClaimRef,
    Driver,
    PreparedDevice,
    PrepareFailed,
    PublishedDevice,
    attribute_problem,
)
from pycni.services.dra.names import DRIVER_NAME, device_name, prefixes

LOG = logging.getLogger("pycni.dra")
COMMON_ATTRIBUTES = ("resource", "type", "id", "healthy", "numaNode")  # every device's, first
RESTART_SECONDS = 1.0  # before a failed watch is started again
HOLDINGS_SECONDS = 5.0  # how often the device plugin's holdings are read again while there are any


@dataclass(frozen=True)
class _Listed:
    resource: Resource
    device_id: str


class ResourcesDriver(Driver):
    """The `pycni.io` driver over built resources. `held()`: what pods hold through the device plugin (None
    when the kubelet cannot say); `pool`: the node's pool name (the node's name)."""

    name = DRIVER_NAME

    def __init__(self, resources: Sequence[Resource], *, pool: str, held: Callable[[], Held | None] = lambda: None,
                 holdings_seconds: float = HOLDINGS_SECONDS) -> None:
        self.resources = list(resources)
        self.prefixes = prefixes([r.name for r in self.resources])
        self.pool = pool
        self.held = held
        self.holdings_seconds = holdings_seconds
        self.lock = threading.Lock()
        self.listed: dict[str, _Listed] = {}  # pool device name -> what it is
        self.stopping = threading.Event()
        self.held_when_published: frozenset[tuple[str, str]] = frozenset()  # (resource, ID) left out then
        self.refused: set[tuple[str, str]] = set()  # (device, attribute) left out, said once

    def devices(self) -> Sequence[PublishedDevice]:
        held = self.held() or {}
        published, listed = [], {}
        for resource in self.resources:
            taken = held.get(resource.name, {})
            for device in resource.list_devices():
                if device.id in taken:
                    continue
                name = device_name(self.prefixes[resource.name], device.id)
                attributes: Attributes = dict(zip(COMMON_ATTRIBUTES, (resource.name, resource.type_name, device.id,
                                                                      device.healthy, device.numa_node), strict=True))
                if resource.attributes is not None:
                    attributes.update(resource.attributes(device.id))
                published.append(PublishedDevice(name=name, attributes=self._publishable(name, attributes)))
                listed[name] = _Listed(resource, device.id)
        with self.lock:
            self.listed = listed
            self.held_when_published = _held_ids(held)
        return published

    def _publishable(self, name: str, attributes: Attributes) -> Attributes:
        """A type's attributes the API takes; any other is left out, said once (a USB serial of 80 characters
        must not keep the whole pool from being published)."""
        kept: Attributes = {}
        for key, value in attributes.items():
            problem = attribute_problem(key, value)
            if not problem:
                kept[key] = value
            elif (name, key) not in self.refused:
                self.refused.add((name, key))
                LOG.warning("device %s: %s; published without it", name, problem)
        return dict(list(kept.items())[:MAX_ATTRIBUTES])  # the common ones first

    def watch(self, changed: Callable[[], None]) -> None:
        """Each resource's watch in a thread of its own; and PodResources asked again every few seconds: a
        device the device plugin gave a pod leaves the pool, one given back returns to it."""
        for resource in self.resources:
            if resource.watch is not None:
                threading.Thread(target=keep_watching, args=(resource, changed), daemon=True,
                                 name=f"dra-watch {resource.name}",
                                 kwargs={"serving": lambda: not self.stopping.is_set(),
                                         "pause": lambda: self.stopping.wait(RESTART_SECONDS)}).start()
        while not self.stopping.wait(self.holdings_seconds):
            held = self.held()
            with self.lock:
                moved = held is not None and _held_ids(held) != self.held_when_published
            if moved:
                changed()

    def close(self) -> None:
        self.stopping.set()
        for resource in self.resources:
            if resource.close is not None:
                resource.close()

    def prepare(self, claim: ClaimRef, devices: Sequence[AllocatedDevice]) -> Sequence[PreparedDevice]:
        prepared = []
        held = self.held() or {}  # asked once: a device the device plugin gave a pod since publication
        for allocated in devices:
            if allocated.pool != self.pool:
                raise PrepareFailed(f"device {allocated.device} is of pool {allocated.pool}, not this node's "
                                    f"({self.pool})")
            with self.lock:
                listed = self.listed.get(allocated.device)
            if listed is None:
                raise PrepareFailed(f"device {allocated.device} is not on this node (any more)")
            holder = (held.get(listed.resource.name) or {}).get(listed.device_id)
            if holder:  # one owner per device
                raise PrepareFailed(f"device {allocated.device} ({listed.device_id}) is held by {holder} through the "
                                    f"device plugin's {listed.resource.name}")
            edits = listed.resource.allocate([listed.device_id])
            prepared.append(PreparedDevice(pool=allocated.pool, device=allocated.device,
                                           request_names=(allocated.request,), edits=edits))
        return prepared

    def unprepare(self, claim: ClaimRef, devices: Sequence[PreparedDevice]) -> None:
        """Nothing on the node to undo: a NIC comes back when the pod's network is deleted (host-device DEL),
        a device node needs no giving back."""


def _held_ids(held: Held) -> frozenset[tuple[str, str]]:
    return frozenset((resource, device_id) for resource, devices in held.items() for device_id in devices)
