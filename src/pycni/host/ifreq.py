"""A link's up/down flag and its addresses through the classic socket ioctls and /proc, for the
calling thread's network namespace.

Why not netlink: `loopback` runs for every pod sandbox and needs nothing more than this, and a plugin
process that loads pyroute2's netlink stack (asyncio and all) pays about 100 ms for it. The ioctls
(SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCGIFCONF, SIOCGIFNETMASK) and /proc/thread-self/net/if_inet6 are the
kernel's own interfaces too, and cost microseconds. Call these inside `netns.entered()`: a socket belongs
to the namespace it was made in, and /proc/thread-self follows the thread's.
"""

from __future__ import annotations

import array
import errno
import fcntl
import ipaddress
import socket
import struct

from pycni.host import netns
from pycni.protocol.errors import CNIError

SIOCGIFCONF = 0x8912
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFNETMASK = 0x891B
IFF_UP = 0x1
IFNAMSIZ = 16
IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux: the name, then a 24-byte union
MAX_IPV4_ADDRESSES = 1024


class NoSuchLink(CNIError):
    pass


def _ifreq(name: str, payload: bytes = b"") -> bytes:
    encoded = name.encode()
    if not encoded or len(encoded) >= IFNAMSIZ or b"/" in encoded or b"\0" in encoded:
        raise CNIError(f"invalid interface name {name!r}")
    return struct.pack(f"{IFNAMSIZ}s{IFREQ_SIZE - IFNAMSIZ}s", encoded, payload)


def _ioctl(name: str, request: int, argument: bytes, what: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as control:
        try:
            return fcntl.ioctl(control, request, argument)
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise NoSuchLink(f"link {name} not found") from None
            raise CNIError(f"{what} of link {name}: {e.strerror}", f"errno {e.errno}") from None


def flags(name: str) -> int:
    answer = _ioctl(name, SIOCGIFFLAGS, _ifreq(name), "reading the flags")
    return int(struct.unpack_from("H", answer, IFNAMSIZ)[0])


def is_up(name: str) -> bool:
    return bool(flags(name) & IFF_UP)


def set_up(name: str, up: bool) -> None:
    current = flags(name)
    wanted = current | IFF_UP if up else current & ~IFF_UP
    if wanted != current:
        _ioctl(name, SIOCSIFFLAGS, _ifreq(name, struct.pack("H", wanted)), "setting the flags")


def ipv4_addresses(name: str) -> list[str]:
    """Every IPv4 address of the link, the primary first. SIOCGIFCONF lists each address under its
    label, which is the link's name or `name:something`."""
    buffer = array.array("B", bytes(MAX_IPV4_ADDRESSES * IFREQ_SIZE))
    pointer, _ = buffer.buffer_info()
    request = struct.pack("iL", len(buffer), pointer)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as control:
        try:
            length = struct.unpack_from("i", fcntl.ioctl(control, SIOCGIFCONF, request))[0]
        except OSError as e:
            raise CNIError(f"listing IPv4 addresses: {e.strerror}", f"errno {e.errno}") from None
    raw = buffer.tobytes()[:length]
    found = []
    for offset in range(0, length, IFREQ_SIZE):
        label = raw[offset:offset + IFNAMSIZ].split(b"\0", 1)[0].decode(errors="replace")
        if label == name or label.startswith(name + ":"):
            found.append(socket.inet_ntoa(raw[offset + IFNAMSIZ + 4:offset + IFNAMSIZ + 8]))
    return found


def ipv4_primary_prefix(name: str) -> int:
    """The prefix length of the link's primary IPv4 address."""
    answer = _ioctl(name, SIOCGIFNETMASK, _ifreq(name), "reading the netmask")
    mask = int.from_bytes(answer[IFNAMSIZ + 4:IFNAMSIZ + 8], "big")
    return bin(mask).count("1")


def ipv6_addresses(name: str) -> list[tuple[str, int]]:
    """Every IPv6 address of the link, as (address, prefix length); none when IPv6 is off."""
    try:
        with open(netns.open_own("thread-self/net/if_inet6"), encoding="ascii") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and fields[5] == name:
            found.append((str(ipaddress.IPv6Address(int(fields[0], 16))), int(fields[2], 16)))
    return found
