"""The claims this node prepared, on the node's disk: a restarted driver (or a restarted kubelet calling again)
answers NodePrepareResources from here instead of preparing twice, and NodeUnprepareResources still knows what
a claim held. Replaced whole and fsynced at every change, so a node crash leaves the old record or the new."""

from __future__ import annotations

import json
import threading
from typing import Any

from pycni.host.files import replace_file
from pycni.services.devices.model import Allocation, DeviceNode, Mount
from pycni.services.dra.model import ClaimRef, PreparedDevice

VERSION = 1


class Checkpoint:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.claims: dict[str, tuple[ClaimRef, tuple[PreparedDevice, ...]]] = self._load()

    def get(self, uid: str) -> tuple[ClaimRef, tuple[PreparedDevice, ...]] | None:
        with self.lock:
            return self.claims.get(uid)

    def put(self, claim: ClaimRef, devices: tuple[PreparedDevice, ...]) -> None:
        with self.lock:
            self.claims[claim.uid] = (claim, devices)
            self._save()

    def remove(self, uid: str) -> None:
        with self.lock:
            if self.claims.pop(uid, None) is not None:
                self._save()

    def _save(self) -> None:
        document = {"version": VERSION, "claims": {
            uid: {"namespace": claim.namespace, "name": claim.name,
                  "devices": [_device_json(device) for device in devices]}
            for uid, (claim, devices) in sorted(self.claims.items())}}
        replace_file(self.path, json.dumps(document, indent=1).encode(), mode=0o600, durable=True)

    def _load(self) -> dict[str, tuple[ClaimRef, tuple[PreparedDevice, ...]]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                document = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.path}: not a checkpoint of prepared claims ({e})") from None
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise ValueError(f"{self.path}: a checkpoint of another version ({document.get('version')!r})")
        return {uid: (ClaimRef(namespace=entry["namespace"], name=entry["name"], uid=uid),
                      tuple(_device_from(d) for d in entry["devices"]))
                for uid, entry in document["claims"].items()}


def prepared_devices(path: str) -> dict[str, str]:
    """Device name -> the claim (`namespace/name`) it is prepared for, from a driver's checkpoint ({} when
    there is none yet). ValueError for a file that is not one."""
    return {device.device: f"{claim.namespace}/{claim.name}"
            for claim, devices in Checkpoint(path).claims.values() for device in devices}


def _device_json(device: PreparedDevice) -> dict[str, Any]:
    edits = device.edits
    return {"pool": device.pool, "device": device.device, "requestNames": list(device.request_names),
            "env": dict(edits.envs), "annotations": dict(edits.annotations),
            "deviceNodes": [[n.container_path, n.host_path, n.permissions] for n in edits.device_nodes],
            "mounts": [[m.container_path, m.host_path, m.read_only] for m in edits.mounts]}


def _device_from(entry: dict[str, Any]) -> PreparedDevice:
    edits = Allocation(envs=entry["env"], annotations=entry["annotations"],
                       device_nodes=[DeviceNode(*node) for node in entry["deviceNodes"]],
                       mounts=[Mount(container, host, read_only=read_only)
                               for container, host, read_only in entry["mounts"]])
    return PreparedDevice(pool=entry["pool"], device=entry["device"], request_names=tuple(entry["requestNames"]),
                          edits=edits)
