"""A driver's devices on the API server: one ResourceSlice pool per node (named after the node), published
whole as a new generation whenever the devices change, never as a stream of edits, so the scheduler never
sees half of a change. A pool of more than 128 devices (the API's limit per slice) is split over several
slices of one generation (`resourceSliceCount`). Slices are named `<node>-<driver>-<n>` and owned by the Node
object (deleted with it); what this node's driver left under other names (an older release, a shrunken pool)
is deleted once the new generation is written. A restarted driver reads the pool's generation back and
writes nothing when what is published is already right."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from pycni.services.apiserver import Connection, in_one_line
from pycni.services.dra.model import AttributeValue, Driver, PublishedDevice, Version

LOG = logging.getLogger("pycni.dra")
API_VERSION = "resource.k8s.io/v1"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"
MAX_DEVICES_PER_SLICE = 128  # resource.k8s.io/v1 ResourceSliceMaxDevices
MAX_NAME = 253
BACKOFF_FIRST, BACKOFF_LAST = 0.2, 5.0  # seconds between attempts while the API server is away


class SliceStore(Protocol):
    """The ResourceSlice calls the publisher makes (the API server's, or a test's)."""

    def node_uid(self, node: str) -> str: ...
    def list(self, driver: str, node: str) -> list[dict[str, Any]]: ...
    def create(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def delete(self, name: str) -> None: ...


class ApiSlices:
    """ResourceSlices through the official client, as JSON (`Connection.request`)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def node_uid(self, node: str) -> str:
        return str(self.connection.request("GET", f"/api/v1/nodes/{node}")["metadata"]["uid"])

    def list(self, driver: str, node: str) -> list[dict[str, Any]]:
        listed = self.connection.request("GET", SLICES, query={"fieldSelector": f"spec.nodeName={node},"
                                                                                f"spec.driver={driver}"})
        items: list[dict[str, Any]] = listed.get("items") or []
        return items

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.connection.request("POST", SLICES, body=body)

    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.connection.request("PUT", f"{SLICES}/{name}", body=body)

    def delete(self, name: str) -> None:
        try:
            self.connection.request("DELETE", f"{SLICES}/{name}")
        except Exception as e:
            if getattr(e, "status", None) != 404:  # gone already: what was asked
                raise


def attribute(value: AttributeValue) -> dict[str, Any]:
    """An attribute as the API writes it: `{"bool": …}`, `{"int": …}`, `{"string": …}`, `{"version": …}`."""
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, Version):
        return {"version": value.value}
    return {"string": value}


def device_entry(device: PublishedDevice) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": device.name}
    if device.attributes:
        entry["attributes"] = {key: attribute(value) for key, value in sorted(device.attributes.items())}
    if device.capacity:
        entry["capacity"] = {key: {"value": value} for key, value in sorted(device.capacity.items())}
    return entry


def slice_name(node: str, driver: str, index: int) -> str:
    """`<node>-<driver>-<index>`, a DNS subdomain; too long, it is cut and told apart by a digest."""
    name = f"{node}-{driver}-{index}".lower()
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME - 11 - len(str(index)) - 1]}-{digest}-{index}"
    return name


class SlicePublisher:
    """Keeps `driver`'s pool of `node` equal to the devices it is given."""

    def __init__(self, store: SliceStore, driver: str, node: str) -> None:
        self.store = store
        self.driver = driver
        self.node = node
        self._owner: list[dict[str, Any]] | None = None
        self._current: dict[str, dict[str, Any]] | None = None  # name -> slice as last read or written
        self.generation = 0

    def publish(self, devices: Sequence[PublishedDevice]) -> bool:
        """Make the pool `devices` (raises what the API raised; the next call starts from a fresh list).
        Whether anything was written."""
        names = [d.name for d in devices]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.driver}: two devices of one name in {sorted(names)}")
        entries = [device_entry(d) for d in sorted(devices, key=lambda d: d.name)]
        chunks = tuple(tuple(entries[i:i + MAX_DEVICES_PER_SLICE])
                       for i in range(0, len(entries), MAX_DEVICES_PER_SLICE)) or ((),)
        try:
            return self._publish(chunks)
        except Exception:
            self._current = None  # what is there is not known any more: read it again next time
            raise

    def forget(self) -> None:
        """Read the pool back from the API server before the next publication."""
        self._current = None

    def _publish(self, chunks: tuple[tuple[dict[str, Any], ...], ...]) -> bool:
        if self._current is None:
            self._current = {item["metadata"]["name"]: item for item in self.store.list(self.driver, self.node)}
            self.generation = max((int(((item.get("spec") or {}).get("pool") or {}).get("generation") or 0)
                                   for item in self._current.values()), default=0)
        wanted = {slice_name(self.node, self.driver, i): chunk for i, chunk in enumerate(chunks)}
        if self._is_published(wanted):
            return False
        if self._owner is None:
            self._owner = self._node_owner()
        self.generation += 1
        for name, chunk in wanted.items():
            body = self._slice(name, chunk, len(wanted))
            existing = self._current.get(name)
            if existing is None:
                self._current[name] = self.store.create(body)
            else:
                body["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion", "")
                self._current[name] = self.store.replace(name, body)
        for name in [n for n in self._current if n not in wanted]:
            self.store.delete(name)
            del self._current[name]
        LOG.info("published %s's devices on %s: generation %d, %d device(s) in %d slice(s)", self.driver,
                 self.node, self.generation, sum(len(c) for c in chunks), len(wanted))
        return True

    def _is_published(self, wanted: dict[str, tuple[dict[str, Any], ...]]) -> bool:
        assert self._current is not None
        if set(self._current) != set(wanted) or self.generation == 0:
            return False
        for name, chunk in wanted.items():
            spec = self._current[name].get("spec") or {}
            pool = spec.get("pool") or {}
            if (pool.get("generation") != self.generation or pool.get("resourceSliceCount") != len(wanted)
                    or pool.get("name") != self.node or list(spec.get("devices") or []) != list(chunk)):
                return False
        return True

    def _node_owner(self) -> list[dict[str, Any]]:
        """The Node as the slices' owner, so they go with it; none when the Node cannot be read."""
        try:
            uid = self.store.node_uid(self.node)
        except Exception as e:  # noqa: BLE001 - not fatal: the kubelet also removes a gone driver's slices
            LOG.warning("node %s not readable (%s): its ResourceSlices are published without an owner", self.node,
                        in_one_line(e))
            return []
        return [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": uid, "controller": True}]

    def _slice(self, name: str, chunk: tuple[dict[str, Any], ...], count: int) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name}
        if self._owner:
            metadata["ownerReferences"] = self._owner
        return {"apiVersion": API_VERSION, "kind": "ResourceSlice", "metadata": metadata,
                "spec": {"driver": self.driver, "nodeName": self.node,
                         "pool": {"name": self.node, "generation": self.generation, "resourceSliceCount": count},
                         "devices": list(chunk)}}


class PoolKeeper:
    """Publishes a driver's devices at start and again whenever its `watch` says they changed (changes
    close together make one generation), and re-reads the pool every `resync` seconds so that slices deleted
    or edited by someone else are put back. While the API server is away it retries with a bounded backoff;
    the devices published last stay meanwhile."""

    def __init__(self, driver: Driver, publisher: SlicePublisher, *, resync: float = 300.0) -> None:
        self.driver = driver
        self.publisher = publisher
        self.resync = resync
        self.dirty = threading.Event()
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def changed(self) -> None:
        self.dirty.set()

    def start(self) -> None:
        self.dirty.set()
        for target, name in ((self._run, "dra-slices"), (self._watch, "dra-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        self.dirty.set()
        self.driver.close()
        for thread in self._threads[:1]:  # the publisher; the watch may sit in a read until the process ends
            thread.join(timeout=10)

    def _watch(self) -> None:
        try:
            self.driver.watch(self.changed)
        except Exception:
            LOG.exception("%s: watching the devices failed; they are re-read every %.0f s", self.driver.name,
                          self.resync)

    def _run(self) -> None:
        backoff, failing = BACKOFF_FIRST, ""
        while not self.stopping.is_set():
            if not self.dirty.wait(self.resync):
                self.publisher.forget()  # the resync: read the pool back, write only if it is not right
            if self.stopping.is_set():
                return
            self.dirty.clear()
            try:
                devices = self.driver.devices()
                if devices is not None:
                    self.publisher.publish(devices)
                if failing:
                    LOG.info("%s: the devices of %s are published again", self.driver.name, self.publisher.node)
                backoff, failing = BACKOFF_FIRST, ""
            except Exception as e:  # noqa: BLE001 - the API away, a conflict, a bad device: tried again
                reason = in_one_line(e)
                if reason != failing:  # said once, not at every attempt
                    LOG.warning("%s: publishing the devices of %s failed (%s); trying again every %.0f s at most",
                                self.driver.name, self.publisher.node, reason, BACKOFF_LAST)
                failing = reason
                self.dirty.set()
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_LAST)
