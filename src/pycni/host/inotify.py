"""inotify(7) on one directory, through libc: the device plugin learns that the kubelet restarted (its
socket is recreated, ours deleted) the moment it happens, without polling the filesystem."""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

IN_CREATE = 0x100
IN_DELETE = 0x200
IN_MOVED_TO = 0x80
IN_MOVED_FROM = 0x40
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    created: bool  # created or moved in; else deleted or moved out


class DirectoryWatch:
    """Creations and deletions of entries in one directory; `read()` blocks until there are some."""

    def __init__(self, directory: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        mask = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            error = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(error, f"watching {directory}: {os.strerror(error)}")

    def read(self) -> list[Event]:
        data = os.read(self.fd, 64 * 1024)
        events, offset = [], 0
        while offset + _EVENT.size <= len(data):
            _, mask, _, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
            offset += _EVENT.size + length
            events.append(Event(raw.rstrip(b"\0").decode(errors="replace"), bool(mask & (IN_CREATE | IN_MOVED_TO))))
        return events

    def close(self) -> None:
        os.close(self.fd)
