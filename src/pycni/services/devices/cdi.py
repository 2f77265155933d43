"""CDI (the Container Device Interface): a resource's devices described in a spec file the runtime reads
(`/var/run/cdi`), so Allocate answers with device names (`example.com/kvm=kvm-3`) rather than with device
nodes, as containerd ≥ 1.7 and CRI-O prefer and as DRA drivers do.

The spec is written to the current CDI specification (1.1.0) and declares the lowest version that has every
field it uses, as the CDI library itself does: a runtime refuses a spec whose version it does not know, and
containerd 1.7 knows up to 0.6.0. The file is replaced atomically (written beside, fsynced, renamed), only
when its content changes, and removed when the resource goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from typing import Any

from pycni.host.files import remove_file, replace_file
from pycni.services.devices.model import Allocation
from pycni.services.devices.paths import CDI_SPEC_DIR

ANNOTATION_PREFIX = "cdi.k8s.io/"
SPEC_DIR = CDI_SPEC_DIR
VENDOR = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
CLASS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
ANNOTATION_NAME_LENGTH = 63


def kind_of(resource_name: str) -> str:
    """The CDI kind of a resource: its name (`example.com/kvm`), which has a kind's form already; ValueError
    when it does not."""
    vendor, _, device_class = resource_name.partition("/")
    if not VENDOR.match(vendor) or not CLASS.match(device_class):
        raise ValueError(f"{resource_name!r} is not a CDI kind (vendor.com/class)")
    return resource_name


def qualified(kind: str, device_id: str) -> str:
    if not DEVICE_NAME.match(device_id):
        raise ValueError(f"device ID {device_id!r} is not a CDI device name")
    return f"{kind}={device_id}"


def annotation_key(kind: str) -> str:
    """`cdi.k8s.io/pycni_<class>`: a key of its own per resource, so two resources of one container do not
    overwrite each other's devices (the name part is cut to 63 characters, told apart by a digest)."""
    name = "pycni_" + re.sub(r"[^A-Za-z0-9_.-]", "_", kind.replace("/", "_"))
    if len(name) > ANNOTATION_NAME_LENGTH:
        name = name[:ANNOTATION_NAME_LENGTH - 9] + "-" + hashlib.sha256(kind.encode()).hexdigest()[:8]
    return ANNOTATION_PREFIX + name


def container_edits(allocation: Allocation) -> dict[str, Any]:
    """A device's `containerEdits` in a spec; empty when it gives the container nothing."""
    edits: dict[str, Any] = {}
    if allocation.envs:
        edits["env"] = [f"{k}={v}" for k, v in sorted(allocation.envs.items())]
    if allocation.device_nodes:
        edits["deviceNodes"] = [{"path": d.container_path, "hostPath": d.host_path, "permissions": d.permissions}
                                for d in allocation.device_nodes]
    if allocation.mounts:
        edits["mounts"] = [{"hostPath": m.host_path, "containerPath": m.container_path,
                            "options": (["ro"] if m.read_only else []) + ["nosuid", "nodev", "bind"]}
                           for m in allocation.mounts]
    return edits


def minimum_version(kind: str) -> str:
    """The lowest CDI version with what a spec of ours uses: `hostPath` of device nodes (0.5.0, which also
    allows device names that start with a digit), a dot in the class (0.6.0)."""
    return "0.6.0" if "." in kind.partition("/")[2] else "0.5.0"


def spec(kind: str, devices: dict[str, Allocation]) -> dict[str, Any]:
    """The CDI spec of a resource's devices (a device with nothing to give the container is left out: the
    specification refuses empty edits)."""
    listed = [{"name": device_id, "containerEdits": container_edits(allocation)}
              for device_id, allocation in sorted(devices.items())]
    listed = [d for d in listed if d["containerEdits"]]
    return {"cdiVersion": minimum_version(kind), "kind": kind, "devices": listed}


class SpecFile:
    """One spec file in the CDI directory, kept current: a resource's (named after its kind), or a DRA claim's
    (`file_name`)."""

    def __init__(self, directory: str, kind: str, file_name: str = "") -> None:
        self.kind = kind
        self.path = os.path.join(directory, file_name or "pycni-" + kind.replace("/", "-") + ".json")
        self.lock = threading.Lock()
        self.written = b""

    def write(self, devices: dict[str, Allocation]) -> bool:
        """Replace the file when its content changes; True when it was written."""
        content = json.dumps(spec(self.kind, devices), indent=1).encode() + b"\n"
        with self.lock:
            if content == self.written and os.path.exists(self.path):
                return False
            replace_file(self.path, content, mode=0o644, durable=True)
            self.written = content
            return True

    def remove(self) -> None:
        with self.lock:
            remove_file(self.path)
            self.written = b""
