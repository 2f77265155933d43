"""Network namespaces: open CNI_NETNS safely and run code inside it; and a caller's root directory, for
the service to see the files its caller sees.

The namespace is always opened as a file descriptor first and checked to be a
network namespace; nothing here creates one (pyroute2's `netns=` path argument
would, for a path that vanished, which is exactly wrong on DEL).
setns() applies to the calling thread, so `entered()` restores it in `finally`.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager

from pycni.protocol.errors import InvalidEnvironment

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
CLONE_FS = 0x00000200
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)

_own_proc: int | None = None


def own_proc() -> int:
    """/proc as this process first saw it, as a directory fd, opened once. Inside a caller's root (the
    service's calls) "/proc" is the caller's procfs, which may belong to another PID namespace (a sibling
    container) where this thread does not appear at all; "thread-self" looked up from this fd always
    names the calling thread."""
    global _own_proc
    if _own_proc is None:
        _own_proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return _own_proc


def open_own(path: str) -> int:
    """Open `path` under this process's own /proc (say "thread-self/ns/net"), read-only."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=own_proc())


def own_namespace_id() -> int:
    """The inode of this thread's network namespace."""
    return os.stat("thread-self/ns/net", dir_fd=own_proc()).st_ino


class NetnsGone(Exception):
    """CNI_NETNS does not exist (any more): success for DEL, an error for ADD/CHECK."""


def open_netns(path: str, given: int | None = None) -> int:
    """A new descriptor of the network namespace at `path` (of `given`, an already open one, when set)."""
    try:
        fd = os.dup(given) if given is not None else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NetnsGone(path) from None
    except OSError as e:
        raise InvalidEnvironment(f"CNI_NETNS {path!r} cannot be opened: {e.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = None
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise InvalidEnvironment(f"CNI_NETNS {path!r} is not a network namespace")
    return fd


def require_netns(path: str, given: int | None = None) -> int:
    """open_netns for verbs that need the namespace to exist and differ from ours."""
    try:
        fd = open_netns(path, given)
    except NetnsGone:
        raise InvalidEnvironment(f"CNI_NETNS {path!r} does not exist") from None
    if os.fstat(fd).st_ino == own_namespace_id():  # nsfs: one device, an inode per namespace
        os.close(fd)
        raise InvalidEnvironment(f"CNI_NETNS {path!r} is the plugin's own network namespace", code=8)
    return fd


_libc = None  # ctypes' handle on libc, made once: each CDLL() builds a class (most of a setns)


def _libc_call(name: str, *args: int) -> None:
    import ctypes

    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
    else:
        _libc_call("setns", fd, CLONE_NEWNET)


@contextmanager
def root_entered(fd: int) -> Iterator[None]:
    """Run the block with this thread's root at the directory `fd` (a caller's "/"), so that absolute
    paths resolve as they do for the caller, through the mounts of its mount namespace (a runtime in a
    container of its own sees other files than the service does). The thread first stops sharing its
    root with the process, and threads it starts meanwhile (a library's workers) share it, and come back
    with it: chroot, unlike setns into a mount namespace, works whoever shares it."""
    home = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _libc_call("unshare", CLONE_FS)
        os.fchdir(fd)
        os.chroot(".")
        try:
            yield
        finally:
            os.fchdir(home)
            os.chroot(".")
    finally:
        os.close(home)


@contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the block with this thread inside the namespace `fd`."""
    home = open_own("thread-self/ns/net")
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)


@contextmanager
def opened(path: str, must_exist: bool = True, given: int | None = None) -> Iterator[int | None]:
    """The namespace at `path` (or the descriptor `given` for it) as an fd for the block; None when it is
    gone and must_exist is False."""
    if must_exist:
        fd = require_netns(path, given)
    else:
        try:
            fd = open_netns(path, given)
        except NetnsGone:
            yield None
            return
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def inside(path: str, given: int | None = None) -> Iterator[None]:
    """Run the block inside the network namespace at `path` (or `given`), which must exist."""
    fd = require_netns(path, given)
    try:
        with entered(fd):
            yield
    finally:
        os.close(fd)


@contextmanager
def current() -> Iterator[int]:
    """This thread's own network namespace as an fd for the block (to move links back into it)."""
    fd = open_own("thread-self/ns/net")
    try:
        yield fd
    finally:
        os.close(fd)
