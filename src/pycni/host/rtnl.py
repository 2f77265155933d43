"""The rtnetlink messages a plugin call exchanges, on a plain blocking socket.

An ADD creates a veth or an ifb, attaches it to a bridge, adds addresses and routes and builds a tc tree;
every call reads links, addresses, routes and qdiscs. That is a few fixed C structs, flat attributes and
a handful of nested ones. pyroute2 0.9 runs an asyncio loop for each request and decodes every attribute
of every answer (a link carries ~40): ~0.35 ms a request in the service, and 60-90 ms of imports in each
plugin process that a runtime starts without the service, which is most of a bridge or bandwidth ADD.
The messages are packed and parsed here with `struct` instead (~0.03 ms a request, nothing to import),
in one datagram per batch. `netlink`, `tc` and `routing` (the routes agent's entries) say what goes in
them; this module is their only transport, and the only reader of the kernel's notifications
(`Subscription`) for the routes agent, whose node of 1,000 peers is 2,000 messages at its first sync.

The socket sets NETLINK_GET_STRICT_CHK (Linux 4.20+), so the kernel filters a dump by the header's
fields (the addresses of one link, the routes of one table); answers are filtered again by the callers
for older kernels. NETLINK_EXT_ACK adds the kernel's own explanation to an error.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a plugin's start)
if TYPE_CHECKING:
    from collections.abc import Iterator

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x4, 0x8, 0x10, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_NEW = NLM_F_CREATE | NLM_F_EXCL  # create, and fail with EEXIST if it is already there
NLM_F_PUT = NLM_F_CREATE | NLM_F_REPLACE  # create, or replace what is at that key
NLA_F_NESTED = 0x8000
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # in an NLMSG_ERROR: request not echoed; extended-ack attributes follow
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTCLASS, RTM_GETTCLASS, RTM_NEWTFILTER = 40, 42, 44
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_PROTINFO, IFLA_TXQLEN, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS = 12, 13, 16, 18, 20
IFLA_AF_SPEC, IFLA_NET_NS_FD = 26, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BR_VLAN_FILTERING = 7
IFLA_BRPORT_MODE, IFLA_BRPORT_ISOLATED = 4, 33  # in IFLA_PROTINFO of an AF_BRIDGE message
IFLA_BRIDGE_VLAN_INFO = 2  # in IFLA_AF_SPEC of an AF_BRIDGE message
BRIDGE_VLAN_INFO_PVID, BRIDGE_VLAN_INFO_UNTAGGED = 0x2, 0x4
AF_BRIDGE = 7
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_METRICS, RTA_TABLE = 1, 4, 5, 6, 8, 15
RTAX_MTU, RTAX_ADVMSS = 2, 8
RTPROT_STATIC, RTN_UNICAST, RT_TABLE_MAIN = 4, 1, 254
RTNH_F_ONLINK = 0x4
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT, NTF_SELF = 0x80, 0x02
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 3, 4, 7
IFLA_VXLAN_PORT, IFLA_VXLAN_LOCAL6 = 15, 17
RTMGRP_LINK, RTMGRP_NEIGH, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x4, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
SO_RCVBUFFORCE = 33
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 270, 10, 11, 12
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
VLAN_INFO = struct.Struct("=HH")  # bridge_vlan_info: flags, vid
IFADDR = struct.Struct("=BBBBi")  # ifaddrmsg: family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst len, src len, tos, table, protocol, scope, type, flags
NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, index, state, flags, type
TCMSG = struct.Struct("=BxxxiIII")  # tcmsg: family, index, handle, parent, info
ATTRIBUTE = struct.Struct("=HH")  # nlattr: length, type
ERROR = struct.Struct("=i")
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
U8 = struct.Struct("=B")
BE16 = struct.Struct("!H")


class Failed(Exception):
    """A request the kernel refused: its errno, and the kernel's explanation when it gave one."""

    def __init__(self, code: int, explanation: str) -> None:
        super().__init__(code, explanation)
        self.code = code
        self.explanation = explanation

    def reason(self) -> str:
        text = os.strerror(self.code)
        return f"{text} ({self.explanation})" if self.explanation else text


DUMP_ATTEMPTS = 5  # a dump the kernel says changed under it is taken again, at most this many times in all


class Answer:
    """The messages that answered one request, or the errno that refused it (0: accepted). `interrupted`:
    the kernel flagged the dump NLM_F_DUMP_INTR (the table changed while it was read: the set may be
    inconsistent)."""

    __slots__ = ("messages", "error", "explanation", "interrupted")

    def __init__(self) -> None:
        self.messages: list[tuple[int, bytes]] = []  # (message type, payload)
        self.error = 0
        self.explanation = ""
        self.interrupted = False

    def check(self) -> list[tuple[int, bytes]]:
        if self.error:
            raise Failed(self.error, self.explanation)
        return self.messages


def attribute(kind: int, value: bytes) -> bytes:
    length = ATTRIBUTE.size + len(value)
    return ATTRIBUTE.pack(length, kind) + value + b"\0" * (-length % 4)


def name_attribute(kind: int, name: str) -> bytes:
    return attribute(kind, name.encode() + b"\0")


def nested(kind: int, *members: bytes) -> bytes:
    """An attribute holding attributes (NLA_F_NESTED set, as the kernel's strict parsers want)."""
    return attribute(kind | NLA_F_NESTED, b"".join(members))


def u32_attribute(kind: int, value: int) -> bytes:
    return attribute(kind, U32.pack(value))


def u8_attribute(kind: int, value: int) -> bytes:
    return attribute(kind, U8.pack(value))


def attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes from `offset` to the end of `data`, by type (nested ones are parsed by the caller)."""
    found = {}
    end = len(data)
    while offset + ATTRIBUTE.size <= end:
        length, kind = ATTRIBUTE.unpack_from(data, offset)
        if length < ATTRIBUTE.size:
            break
        found[kind & 0x3FFF] = data[offset + ATTRIBUTE.size:offset + length]  # without NLA_F_NESTED & co
        offset += (length + 3) & ~3
    return found


def text(value: bytes | None) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace") if value else ""


def number(value: bytes | None) -> int:
    """A u32 or u64 attribute (0 when absent)."""
    if not value:
        return 0
    return U64.unpack(value)[0] if len(value) == 8 else U32.unpack_from(value)[0]


def mac(value: bytes | None) -> str:
    return ":".join(f"{b:02x}" for b in value) if value else ""


def mac_bytes(mac: str) -> bytes:
    """A MAC address as it goes in an attribute (the inverse of `mac`)."""
    return bytes.fromhex(mac.replace(":", ""))


def address(family: int, value: bytes | None) -> str:
    return socket.inet_ntop(family, value) if value else ""


class Channel:
    """A route netlink socket of the namespace the calling thread is in when it is made."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            self.sock.bind((0, 0))
            for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
                try:
                    self.sock.setsockopt(SOL_NETLINK, option, 1)
                except OSError:  # an older kernel: plainer errors, unfiltered dumps
                    pass
        except BaseException:
            self.sock.close()
            raise
        self.sequence = 0
        self.dump_retries = 0
        self.buffer = bytearray(1 << 18)

    def close(self) -> None:
        self.sock.close()

    def exchange(self, requests: list[tuple[int, int, bytes]]) -> list[Answer]:
        """Send the requests (message type, flags, body) in one datagram and collect each one's answer. A
        dump (NLM_F_DUMP) ends with NLMSG_DONE; anything else is sent with NLM_F_ACK and ends with the
        kernel's acknowledgement, so every request's outcome is known, whatever the others' was.

        A dump the kernel flags as interrupted (links, addresses or routes changed while it was read, as
        they do on a node where pods come and go) is taken again whole, up to DUMP_ATTEMPTS times in all;
        one still interrupted then fails with EAGAIN rather than hand a caller (GC, CHECK) an inconsistent
        set. `dump_retries` counts the dumps taken again."""
        answers = self._exchange_once(requests)
        for _ in range(DUMP_ATTEMPTS - 1):
            again = [i for i, answer in enumerate(answers) if answer.interrupted]
            if not again:
                return answers
            self.dump_retries += len(again)
            for i, answer in zip(again, self._exchange_once([requests[i] for i in again]), strict=True):
                answers[i] = answer
        for answer in answers:
            if answer.interrupted:
                answer.messages = []
                answer.error = errno.EAGAIN
                answer.explanation = f"the dump was interrupted by changes {DUMP_ATTEMPTS} times in a row"
        return answers

    def _exchange_once(self, requests: list[tuple[int, int, bytes]]) -> list[Answer]:
        first = self.sequence + 1
        out = bytearray()
        for kind, flags, body in requests:
            self.sequence += 1
            flags |= NLM_F_REQUEST | (0 if flags & NLM_F_DUMP == NLM_F_DUMP else NLM_F_ACK)
            out += HEADER.pack(HEADER.size + len(body), kind, flags, self.sequence, 0) + body
        answers = [Answer() for _ in requests]
        pending = len(requests)
        if not pending:
            return answers
        self.sock.send(out)
        while pending:
            received = self.sock.recv_into(self.buffer)
            for kind, flags, sequence, payload in _messages(self.buffer, received):
                slot = sequence - first
                if 0 <= slot < len(answers):
                    answer = answers[slot]
                    if flags & NLM_F_DUMP_INTR and kind != NLMSG_ERROR:
                        answer.interrupted = True
                    if kind == NLMSG_DONE:
                        pending -= 1
                    elif kind == NLMSG_ERROR:
                        _finish(answer, payload, flags)
                        pending -= 1
                    else:
                        answer.messages.append((kind, payload))
        return answers


def _messages(buffer: bytearray, received: int) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, sequence, payload) of each netlink message in the first `received` bytes of `buffer`."""
    offset = 0
    while offset + HEADER.size <= received:
        length, kind, flags, sequence, _ = HEADER.unpack_from(buffer, offset)
        if length < HEADER.size:
            return
        yield kind, flags, sequence, bytes(buffer[offset + HEADER.size:offset + length])
        offset += (length + 3) & ~3


def _finish(answer: Answer, payload: bytes, flags: int) -> None:
    """An NLMSG_ERROR: errno 0 is the acknowledgement. Extended-ack attributes follow the echoed request:
    its header alone where NETLINK_CAP_ACK took (NLM_F_CAPPED), else the whole request."""
    (code,) = ERROR.unpack_from(payload)
    answer.error = -code
    if code and flags & NLM_F_ACK_TLVS:
        echoed = HEADER.size if flags & NLM_F_CAPPED else U32.unpack_from(payload, ERROR.size)[0]
        answer.explanation = text(attributes(payload, ERROR.size + echoed).get(NLMSGERR_ATTR_MSG))


class Subscription:
    """A route netlink socket bound to multicast `groups` (RTMGRP_*) of the calling thread's namespace: the
    kernel's notifications of changes, as (message type, payload). A receive buffer of `buffer` bytes
    (forced past rmem_max where the process may) holds a burst; an overrun raises OSError(ENOBUFS): some
    notifications were lost, and the caller reads the state again whole."""

    def __init__(self, groups: int, buffer: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, option, buffer)
                    break
                except OSError:
                    continue
            self.sock.bind((0, groups))
        except BaseException:
            self.sock.close()
            raise
        self.buffer = bytearray(1 << 16)

    def close(self) -> None:
        self.sock.close()

    def receive(self, timeout: float) -> list[tuple[int, bytes]]:
        """The messages of the next datagram, or [] when none came within `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            received = self.sock.recv_into(self.buffer)
        except TimeoutError:
            return []
        return [(kind, payload) for kind, _, _, payload in _messages(self.buffer, received)]
