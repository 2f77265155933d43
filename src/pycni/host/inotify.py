"""inotify(7) on directories, through libc: the device plugin learns the moment something changes, without
polling the filesystem: that the kubelet restarted (its socket recreated, ours deleted), that a device node
came or went under /dev (devtmpfs makes and removes them as the kernel sees devices), that its config file
was replaced."""

from __future__ import annotations

import ctypes
import os
import select
import struct
from dataclasses import dataclass

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_IGNORED = 0x8000
IN_CLOEXEC = 0o2000000
ENTRIES = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM  # entries coming and going
CONTENTS = ENTRIES | IN_CLOSE_WRITE  # and files rewritten in place
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    created: bool  # created or moved in; else deleted, moved out or rewritten
    directory: str = ""


class DirectoryWatch:
    """Events on entries of the watched directories; `read()` blocks until there are some (or `timeout`
    passes, or `interrupt()` is called from another thread: then it returns an empty list)."""

    def __init__(self, *directories: str, mask: int = ENTRIES) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self.mask = mask
        self.directories: dict[int, str] = {}  # watch descriptor -> directory
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            for directory in directories:
                self.add(directory, required=True)
        except OSError:
            self.close()
            raise

    def add(self, directory: str, required: bool = False) -> bool:
        """Watch one more directory (again: no-op). False when it cannot be watched (gone, not a directory),
        unless `required`: then OSError."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), self.mask | IN_DELETE_SELF)
        if wd < 0:
            error = ctypes.get_errno()
            if required:
                raise OSError(error, f"watching {directory}: {os.strerror(error)}")
            return False
        self.directories[wd] = directory
        return True

    def watched(self) -> set[str]:
        return set(self.directories.values())

    def fileno(self) -> int:
        return self.fd

    @property
    def wake_fd(self) -> int:
        """Readable once `interrupt()` was called, for a caller that selects on `fileno()` among others; it
        calls `read()` then, which takes the wake-up."""
        return self._wake_read

    def read(self, timeout: float | None = None) -> list[Event]:
        ready, _, _ = select.select([self.fd, self._wake_read], [], [], timeout)
        if self._wake_read in ready:
            try:
                while os.read(self._wake_read, 64):
                    pass
            except BlockingIOError:
                pass
        if self.fd not in ready:
            return []
        data = os.read(self.fd, 64 * 1024)
        events, offset = [], 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
            offset += _EVENT.size + length
            directory = self.directories.get(wd, "")
            if mask & IN_IGNORED:  # the directory itself went away: its watch is gone with it
                self.directories.pop(wd, None)
                continue
            events.append(Event(raw.rstrip(b"\0").decode(errors="replace"), bool(mask & (IN_CREATE | IN_MOVED_TO)),
                                directory))
        return events

    def interrupt(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:  # already woken
            pass

    def close(self) -> None:
        for fd in (self.fd, self._wake_read, self._wake_write):
            try:
                os.close(fd)
            except OSError:
                pass
