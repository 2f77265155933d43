"""Files replaced whole: written beside their target, then renamed over it (or linked, where the target must
not exist yet), so a reader (the runtime reading a CDI spec, Multus a device-info file, `pycni status` a
daemon's state, another host-local call the reservations) sees the old content or the new, never half of
it. The one place pycni does this. A temporary file is named `.pycni-tmp-<pid>-<name>`, so whoever owns a
directory can tell the leftovers of a process that died between the write and the rename."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

TEMPORARY_PREFIX = ".pycni-tmp-"


def temporary_path(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f"{TEMPORARY_PREFIX}{os.getpid()}-{name}")


@contextmanager
def replacing(path: str, mode: int | None = None, durable: bool = False) -> Iterator[str]:
    """The temporary path to write `path`'s new content at (by any means: a compiler's output, a copy); on
    leaving the block it becomes `path`, with `mode`, fsynced first when `durable` (a file that must survive
    a crash of the node). The directory is made if missing. A failure removes the temporary file."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        if durable:
            fd = os.open(temporary, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def replace_file(path: str, content: bytes, mode: int | None = None, durable: bool = False) -> None:
    """Make `path` hold `content` (see `replacing`). Raises OSError."""
    with replacing(path, mode, durable) as temporary:
        _write(temporary, content, durable)


def create_file(path: str, content: bytes, mode: int = 0o600) -> bool:
    """Make `path` hold `content` only if it does not exist yet, whole or not at all; False when it did."""
    temporary = temporary_path(path)
    _write(temporary, content, False, mode)
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)


def remove_file(path: str) -> None:
    """Remove `path`; one that is not there is removed already."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def overwrite_file(path: str, content: bytes, mode: int = 0o600) -> None:
    """Write `content` over `path` in place: for a hint whose reader takes a torn or empty file as no hint
    (no temporary file, no rename: a new inode a call costs the filesystem more than the write)."""
    _write(path, content, False, mode)


def _write(path: str, content: bytes, durable: bool, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, content)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
