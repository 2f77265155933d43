"""An flock()-based lock with a timeout, for state shared by parallel plugin invocations."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager

from pycni.protocol.errors import TryAgainLater


@contextmanager
def file_lock(path: str, timeout: float = 30.0):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TryAgainLater(f"timed out after {timeout:.0f}s waiting for lock {path}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def hold(path: str) -> int:
    """Take `path`'s lock for as long as this process (and the children it forks) live: the descriptor is never
    closed. Others tell by abandoned() whether the holder is alive, across PID namespaces (containers)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def abandoned(path: str) -> bool:
    """Whether no live process holds `path`'s lock (taken by hold())."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def lock_path_of(state_file: str) -> str:
    """The lock file a daemon holds beside its state file while it lives."""
    return state_file + ".lock"
