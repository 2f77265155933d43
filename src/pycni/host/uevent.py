"""The kernel's device events (kobject uevents) without udev: PCI functions coming and going when a PF's
`sriov_numvfs` changes, a driver bound or unbound (a VF moved to vfio-pci). Read from the kernel's own
netlink group, so the device plugin sees them as they happen instead of polling sysfs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1  # the kernel's broadcasts (udev's own re-broadcasts go to group 2)


@dataclass(frozen=True, slots=True)
class UEvent:
    action: str  # add, remove, bind, unbind, change, move
    devpath: str  # /devices/pci0000:00/0000:00:03.0/0000:03:02.1
    subsystem: str


def parse(datagram: bytes) -> UEvent | None:
    """`action@devpath\\0KEY=value\\0...` as the kernel sends it; None for anything else."""
    head, _, rest = datagram.partition(b"\0")
    if b"@" not in head:
        return None
    fields = dict(part.split(b"=", 1) for part in rest.split(b"\0") if b"=" in part)
    action, _, devpath = head.decode(errors="replace").partition("@")
    return UEvent(fields.get(b"ACTION", action.encode()).decode(errors="replace"), devpath,
                  fields.get(b"SUBSYSTEM", b"").decode(errors="replace"))


def encode(event: UEvent) -> bytes:
    """The datagram the kernel would send for `event` (tests send it to exercise a listener)."""
    return (f"{event.action}@{event.devpath}\0ACTION={event.action}\0DEVPATH={event.devpath}\0"
            f"SUBSYSTEM={event.subsystem}\0SEQNUM=0\0").encode()


@contextmanager
def events() -> Iterator[Iterator[UEvent]]:
    """Device events of this network namespace's uevent group, subscribed when the block starts."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, KERNEL_GROUP))

        def read() -> Iterator[UEvent]:
            while True:
                event = parse(sock.recv(65536))
                if event is not None:
                    yield event

        yield read()
    finally:
        sock.close()


def send(event: UEvent) -> None:
    """Broadcast `event` to this namespace's uevent listeners as the kernel does (needs CAP_NET_ADMIN)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT) as sock:
        sock.sendto(encode(event), (0, KERNEL_GROUP))
