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
