"""Kernel parameters under /proc/sys, for the network namespace of the calling thread.

Keys are paths (`net/ipv4/ip_forward`), not dotted names, because interface
names may themselves contain dots.
"""

from __future__ import annotations

import os

from pycni.protocol.errors import CNIError

ROOT = "/proc/sys"


def read(key: str) -> str | None:
    try:
        with open(os.path.join(ROOT, key), encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def write(key: str, value: str | int) -> None:
    """Set `key` (only when it differs, so a read-only /proc/sys with the right value passes)."""
    wanted = str(value)
    if read(key) == wanted:
        return
    try:
        with open(os.path.join(ROOT, key), "w", encoding="ascii") as f:
            f.write(wanted)
    except OSError as e:
        raise CNIError(f"cannot set sysctl {key.replace('/', '.')}={wanted}: {e.strerror}") from None


def exists(key: str) -> bool:
    return os.path.exists(os.path.join(ROOT, key))
