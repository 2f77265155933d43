"""Links, addresses and routes over rtnetlink: the only module that imports pyroute2.

pyroute2 is imported on first use, so verbs and errors that need no netlink
never pay for it.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager

from .netns import entered
from .protocol.errors import CNIError

IFF_UP = 0x1


class LinkNotFound(CNIError):
    pass


@contextmanager
def session(netns_fd: int | None = None):
    """A netlink session bound to the namespace `netns_fd` (or to the caller's)."""
    from pyroute2 import IPRoute

    if netns_fd is None:
        socket = IPRoute()
    else:
        with entered(netns_fd):
            socket = IPRoute()
    try:
        yield Netlink(socket)
    finally:
        socket.close()


def _is_errno(exc: Exception, *codes: int) -> bool:
    return getattr(exc, "code", None) in codes


class Netlink:
    def __init__(self, socket) -> None:
        self.socket = socket

    def _call(self, what: str, method, *args, **kwargs):
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            return method(*args, **kwargs)
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                raise LinkNotFound(f"{what}: no such link") from None
            raise CNIError(f"{what}: {e.args[1] if len(e.args) > 1 else e}", f"errno {e.code}") from None

    def link_index(self, name: str) -> int:
        found = self._call(f"looking up link {name}", self.socket.link_lookup, ifname=name)
        if not found:
            raise LinkNotFound(f"link {name} not found")
        return found[0]

    def link(self, index: int):
        return self._call(f"reading link {index}", self.socket.link, "get", index=index)[0]

    def is_up(self, index: int) -> bool:
        return bool(self.link(index)["flags"] & IFF_UP)

    def set_state(self, index: int, up: bool) -> None:
        self._call(f"setting link {index} {'up' if up else 'down'}", self.socket.link, "set", index=index,
                   state="up" if up else "down")

    def addresses(self, index: int) -> list[tuple[str, int]]:
        found = self._call(f"reading addresses of link {index}", self.socket.get_addr, index=index)
        return [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in found]
