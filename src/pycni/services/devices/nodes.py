"""The `devices` resource: device nodes under /dev handed to pods by config, with no program of one's own:
`/dev/kvm`, `/dev/vhost-net`, `/dev/fuse`, `/dev/net/tun` shared by many containers (`count`), one device
per match of a glob (`/dev/ttyUSB*`), nodes that only make sense together (`/dev/snd/*`), USB devices by
vendor, product and serial (their `/dev/bus/usb/BBB/DDD` node).

Health is the node being there. The list follows the node's /dev through inotify (devtmpfs creates and
removes nodes as the kernel sees devices come and go, before udev runs), so a hot-plug reaches the kubelet
in milliseconds, with no polling. Paths in the config are the node's; the daemon reads them under
`dev_root` (where the node's /dev is mounted in its container) and hands the node's paths to the runtime.
"""

from __future__ import annotations

import glob
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pycni.host.inotify import ENTRIES, DirectoryWatch
from pycni.host.sysfs import Sysfs, UsbDevice, hex_id
from pycni.services.devices.model import (
    Allocation,
    Attributes,
    Device,
    DeviceNode,
    NodePaths,
    OptionError,
    Resource,
    ScannedResource,
)

GLOB_CHARACTERS = "*?["
MAX_NODES_PER_MATCH = 512  # a directory matched is walked for its nodes, this many at most
MAX_DEPTH = 4


def has_glob(path: str) -> bool:
    return any(c in path for c in GLOB_CHARACTERS)


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A node path (glob characters allowed), where the container sees it ("" = the same path; only for a
    path without glob characters) and what the container may do with it."""

    path: str
    container_path: str = ""
    permissions: str = "rw"
    optional: bool = False  # a group that goes together is healthy without it


@dataclass(frozen=True, slots=True)
class UsbMatch:
    """A USB device by its IDs, as `lsusb` shows them (4 hex digits each), and its serial if given."""

    vendor: str
    product: str
    serial: str = ""


@dataclass(frozen=True, slots=True)
class Group:
    """Paths or USB devices that make devices. One path with glob characters, or USB matches: a device per
    match, listed while it is there. Otherwise (literal paths, several paths, `together`): one device of
    them all, always listed, healthy when every path that is not optional is there. `count` (when given)
    makes that many IDs of each device, for nodes that many containers may share."""

    paths: tuple[PathPattern, ...] = ()
    usb: tuple[UsbMatch, ...] = ()
    count: int = 0  # 0: not given, one ID without a suffix
    name: str = ""  # the ID of a device made of several paths (else derived from its first path)
    together: bool = False

    @property
    def per_match(self) -> bool:
        return not self.together and (bool(self.usb) or len(self.paths) == 1 and has_glob(self.paths[0].path))

    def ids(self, base: str) -> list[str]:
        return [f"{base}-{i}" for i in range(self.count)] if self.count else [base]


def id_of_path(path: str) -> str:
    """A device ID from a node path: `/dev/snd/pcmC0D0p` -> `snd_pcmC0D0p` (glob characters dropped)."""
    relative = path[len("/dev/"):] if path.startswith("/dev/") else path.lstrip("/")
    return "".join(c for c in relative.replace("/", "_") if c not in GLOB_CHARACTERS + "]").strip("_") or "dev"


@dataclass(frozen=True, slots=True)
class _Found:
    healthy: bool
    nodes: tuple[DeviceNode, ...]
    usb: UsbDevice | None = None  # the USB device it is, for a device per USB match
    path: str = ""  # the path it is known by (its first configured or matched path), present or not


class DevTree:
    """The node's /dev as this process sees it: node paths (what the runtime is told) read under `dev_root`
    (where the node's /dev is mounted in the daemon's container)."""

    def __init__(self, dev_root: str = "/dev") -> None:
        self.dev_root = dev_root

    def local(self, node_path: str) -> str:
        if node_path == "/dev" or node_path.startswith("/dev/"):
            return os.path.join(self.dev_root, node_path[len("/dev/"):])
        return node_path

    def node_path(self, local: str) -> str:
        if self.dev_root != "/dev" and (local == self.dev_root or local.startswith(self.dev_root.rstrip("/") + "/")):
            return "/dev/" + os.path.relpath(local, self.dev_root)
        return local

    def glob(self, pattern: str) -> list[str]:
        """Node paths matching a node path pattern, sorted."""
        local = self.local(pattern)
        if self.dev_root != "/dev" and local != pattern:
            local = os.path.join(glob.escape(self.dev_root), pattern[len("/dev/"):])
        return sorted(self.node_path(p) for p in glob.glob(local))

    def nodes_at(self, node_path: str) -> list[str]:
        """The device nodes a matched path stands for: itself, or the nodes in the directory it names."""
        local = self.local(node_path)
        try:
            mode = os.stat(local).st_mode
        except OSError:
            return []
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return [node_path]
        if not stat.S_ISDIR(mode):
            return []
        nodes: list[str] = []
        for directory, _, files in _walk_bounded(local):
            for name in sorted(files):
                try:
                    mode = os.lstat(os.path.join(directory, name)).st_mode
                except OSError:
                    continue
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    nodes.append(self.node_path(os.path.join(directory, name)))
                if len(nodes) >= MAX_NODES_PER_MATCH:
                    return nodes
        return nodes

    def directories(self, patterns: list[str]) -> set[str]:
        """Where a change can make or unmake a match of `patterns`: every existing directory on the way to
        each (those matching its leading components), and the directories a match stands for."""
        out: set[str] = set()
        for pattern in patterns:
            parts = pattern.strip("/").split("/")
            for depth in range(1, len(parts) + 1):
                prefix = "/" + "/".join(parts[:depth])
                for path in (self.glob(prefix) if has_glob(prefix) else [prefix]):
                    local = self.local(path)
                    if os.path.isdir(local):
                        out.add(local)
                        if depth == len(parts):  # a matched directory: its subdirectories too
                            out.update(d for d, _, _ in _walk_bounded(local))
        return out


def _device_nodes(pattern: PathPattern, node_paths: list[str]) -> list[DeviceNode]:
    return [DeviceNode(pattern.container_path if pattern.container_path and p == pattern.path else p, p,
                       pattern.permissions) for p in node_paths]


class NodeDevices(ScannedResource):
    describes = True

    def __init__(self, name: str, groups: tuple[Group, ...], dev_root: str = "/dev", sysfs_root: str = "/sys") -> None:
        super().__init__(name)
        self.groups = groups
        self.tree = DevTree(dev_root)
        self.sysfs = Sysfs(sysfs_root)
        self.found: dict[str, _Found] = {}
        self.closed = threading.Event()
        self._watch: DirectoryWatch | None = None

    # scanning

    def _usb(self, match: UsbMatch) -> list[UsbDevice]:
        return [d for d in self.sysfs.usb_devices()
                if (d.vendor, d.product) == (match.vendor, match.product)
                and (not match.serial or d.serial == match.serial)]

    def _scan_group(self, group: Group) -> dict[str, _Found]:
        tree, found = self.tree, {}
        if group.per_match:
            for usb in (u for match in group.usb for u in self._usb(match)):
                present = bool(tree.nodes_at(usb.node))
                for device_id in group.ids(f"usb-{usb.name}"):
                    found[device_id] = _Found(present, (DeviceNode(usb.node, usb.node, "rw"),), usb, usb.node)
            for pattern in group.paths:
                for path in tree.glob(pattern.path):
                    nodes = tree.nodes_at(path)
                    for device_id in group.ids(id_of_path(path)) if nodes else ():
                        found[device_id] = _Found(True, tuple(_device_nodes(pattern, nodes)), path=path)
            return found
        healthy, device_nodes = True, []
        for pattern in group.paths:
            paths = tree.glob(pattern.path) if has_glob(pattern.path) else [pattern.path]
            nodes = [node for path in paths for node in tree.nodes_at(path)]
            healthy = healthy and (bool(nodes) or pattern.optional)
            device_nodes += _device_nodes(pattern, nodes)
        for match in group.usb:
            usb_nodes = [usb.node for usb in self._usb(match) if tree.nodes_at(usb.node)]
            healthy = healthy and bool(usb_nodes)
            device_nodes += [DeviceNode(node, node, "rw") for node in usb_nodes]
        base = group.name or id_of_path(group.paths[0].path)
        path = group.paths[0].path if group.paths else (device_nodes[0].host_path if device_nodes else "")
        return {device_id: _Found(healthy, tuple(device_nodes), path=path) for device_id in group.ids(base)}

    def scan(self) -> bool:
        """Read the node; True when the device list or a device's health changed."""
        found: dict[str, _Found] = {}
        excluded = {}
        for i, group in enumerate(self.groups):
            for device_id, device in self._scan_group(group).items():
                if device_id in found:
                    excluded[device_id] = f"group {i} makes it too; the first group that makes an ID has it"
                    continue
                found[device_id] = device
        with self.lock:
            before = self.found
            self.found, self.excluded = found, excluded
        self.scanned.set()
        return found != before

    # the resource

    def listed(self) -> list[Device]:
        return [Device(device_id, healthy=device.healthy) for device_id, device in self.found.items()]

    def allocate(self, ids: list[str]) -> Allocation:
        with self.lock:
            found = [self.found[i] for i in ids if i in self.found]
        nodes: dict[str, DeviceNode] = {}
        for device in found:
            for node in device.nodes:
                nodes.setdefault(node.container_path, node)
        return Allocation(device_nodes=list(nodes.values()))

    def describe(self, device_id: str) -> Allocation:
        return self.allocate([device_id])

    def attributes(self, device_id: str) -> Attributes:
        """`path`, and for a USB device `usbVendorID`, `usbProductID`, `usbSerial`."""
        with self.lock:
            device = self.found.get(device_id)
        if device is None:
            return {}
        found: Attributes = {"path": device.path} if device.path else {}
        if device.usb is not None:
            found.update(usbVendorID=device.usb.vendor, usbProductID=device.usb.product)
            if device.usb.serial:
                found["usbSerial"] = device.usb.serial
        return found

    # hot-plug

    def directories(self) -> set[str]:
        patterns = [p.path for g in self.groups for p in g.paths]
        if any(g.usb for g in self.groups):
            patterns.append("/dev/bus/usb/*/*")
        return self.tree.directories(patterns)

    def watch(self, changed: Callable[[], None]) -> None:
        """Rescan whenever an entry in a watched directory comes or goes; say so when the list changed.
        Watches are added before each scan, and directories listed again after their parents are watched, so
        nothing made in between is missed."""
        watch = DirectoryWatch(mask=ENTRIES)
        self._watch = watch
        try:
            first = True
            while not self.closed.is_set():
                # until no directory is new: one made between listing and watching its parent is seen here
                while new := self.directories() - watch.watched():
                    if not any([watch.add(directory) for directory in new]):
                        break  # gone again: its parent's watch saw that
                if self.scan() or first:
                    changed()
                first = False
                watch.read()
        finally:
            self._watch = None
            watch.close()

    def close(self) -> None:
        self.closed.set()
        if self._watch is not None:
            self._watch.interrupt()


def _walk_bounded(directory: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk, in name order, no deeper than MAX_DEPTH below `directory`."""
    for entry in os.walk(directory):
        if entry[0][len(directory):].count("/") >= MAX_DEPTH:
            entry[1].clear()
        entry[1].sort()
        yield entry


TUN_PATH = "/dev/net/tun"


def build_tun(name: str, options: dict[str, Any], node: NodePaths) -> Resource:
    """The `tun` type: `count` interchangeable IDs of /dev/net/tun (a case of `devices`, its keys kept)."""
    group = Group((PathPattern(options.get("path", TUN_PATH), TUN_PATH, "rwm"),), count=options.get("count", 64),
                  name="tun")
    return NodeDevices(name, (group,), node.dev_root, node.sysfs_root).resource()


def build_devices(name: str, options: dict[str, Any], node: NodePaths) -> Resource:
    """The `devices` type from its `groups`; OptionError for what its schema cannot say."""
    groups = []
    literal_ids: dict[str, int] = {}
    for i, raw in enumerate(options["groups"]):
        group = _group(raw, f"groups[{i}]")
        if not group.per_match:
            for device_id in group.ids(group.name or id_of_path(group.paths[0].path)):
                if device_id in literal_ids:
                    raise OptionError(f"groups[{i}]", f"makes device ID {device_id!r}, as groups["
                                                      f"{literal_ids[device_id]}] does: give one of them a `name`")
                literal_ids[device_id] = i
        groups.append(group)
    return NodeDevices(name, tuple(groups), node.dev_root, node.sysfs_root).resource()


def _group(raw: dict[str, Any], at: str) -> Group:
    paths = tuple(PathPattern(p["path"], p.get("mountPath", ""), p.get("permissions", "rw"), p.get("optional", False))
                  for p in raw.get("paths", ()))
    for j, pattern in enumerate(paths):
        if ".." in pattern.path.split("/"):
            raise OptionError(f"{at}.paths[{j}].path", f"{pattern.path!r} leaves /dev through `..`")
        if pattern.container_path and has_glob(pattern.path):
            raise OptionError(f"{at}.paths[{j}].mountPath", "is for a path without glob characters: the matches of "
                                                           "a glob keep their own paths")
    usb = tuple(UsbMatch(hex_id(u["vendor"]), hex_id(u["product"]), u.get("serial", "")) for u in raw.get("usb", ()))
    if bool(paths) == bool(usb):
        raise OptionError(at, "needs `paths` or `usb` (one of them)")
    group = Group(paths, usb, raw.get("count", 0), raw.get("name", ""), raw.get("together", False))
    if not group.per_match and not group.name and (usb or any(has_glob(p.path) for p in paths)):
        raise OptionError(at, "goes together and has glob characters or USB devices: give it a `name`, its device's ID")
    return group
