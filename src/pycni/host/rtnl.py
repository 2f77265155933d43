"""The rtnetlink messages every plugin call exchanges, on a plain blocking socket.

Every ADD, DEL and CHECK reads links, addresses, routes and qdiscs, sets links up and deletes links,
addresses and qdiscs: a dozen fixed C structs with flat attributes. pyroute2 0.9 runs an asyncio loop for
each request and decodes every attribute of every answer (a link carries ~40): ~0.35 ms a request and
0.25 ms to open a session in the service, and ~60 ms of imports in a plugin process. These messages are
packed and parsed here with `struct` instead (~0.03 ms a request, nothing to import), in one datagram per
batch; the requests with nested, kind-specific attributes (creating veths and bridges, tc options and
filters, routes with metrics) stay with pyroute2 in `netlink`, the only user of this module.

The socket sets NETLINK_GET_STRICT_CHK (Linux 4.20+), so the kernel filters a dump by the header's
fields (the addresses of one link, the routes of one table); answers are filtered again by the callers
for older kernels. NETLINK_EXT_ACK adds the kernel's own explanation to an error.
"""

from __future__ import annotations

import os
import socket
import struct

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP = 0x1, 0x4, 0x8, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # in an NLMSG_ERROR: request not echoed; extended-ack attributes follow
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTCLASS, RTM_GETTCLASS = 40, 42
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_INFO_KIND = 16, 18, 20, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_RATE64 = 1, 4
TCA_HTB_PARMS, TCA_HTB_RATE64 = 1, 6
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 270, 10, 11, 12
SIOCGSKNS = 0x894C
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
IFADDR = struct.Struct("=BBBBi")  # ifaddrmsg: family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst len, src len, tos, table, protocol, scope, type, flags
TCMSG = struct.Struct("=BxxxiIII")  # tcmsg: family, index, handle, parent, info
ATTRIBUTE = struct.Struct("=HH")  # nlattr: length, type
ERROR = struct.Struct("=i")
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
RATESPEC_RATE = 8  # offset of the u32 rate in struct tc_ratespec, the first member of tbf's and htb's parms
FIFO_LIMIT = U32  # struct tc_fifo_qopt


class Failed(Exception):
    """A request the kernel refused: its errno, and the kernel's explanation when it gave one."""

    def __init__(self, code: int, explanation: str) -> None:
        super().__init__(code, explanation)
        self.code = code
        self.explanation = explanation

    def reason(self) -> str:
        text = os.strerror(self.code)
        return f"{text} ({self.explanation})" if self.explanation else text


class Answer:
    """The messages that answered one request, or the errno that refused it (0: accepted)."""

    __slots__ = ("messages", "error", "explanation")

    def __init__(self) -> None:
        self.messages: list[tuple[int, bytes]] = []  # (message type, payload)
        self.error = 0
        self.explanation = ""

    def check(self) -> list[tuple[int, bytes]]:
        if self.error:
            raise Failed(self.error, self.explanation)
        return self.messages


def attribute(kind: int, value: bytes) -> bytes:
    length = ATTRIBUTE.size + len(value)
    return ATTRIBUTE.pack(length, kind) + value + b"\0" * (-length % 4)


def name_attribute(kind: int, name: str) -> bytes:
    return attribute(kind, name.encode() + b"\0")


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
        self.buffer = bytearray(1 << 18)

    def close(self) -> None:
        self.sock.close()

    def namespace(self) -> int:
        """A file descriptor of the network namespace this socket belongs to (the caller closes it)."""
        import fcntl

        return fcntl.ioctl(self.sock.fileno(), SIOCGSKNS)

    def exchange(self, requests: list[tuple[int, int, bytes]]) -> list[Answer]:
        """Send the requests (message type, flags, body) in one datagram and collect each one's answer. A
        dump (NLM_F_DUMP) ends with NLMSG_DONE; anything else is sent with NLM_F_ACK and ends with the
        kernel's acknowledgement, so every request's outcome is known, whatever the others' was."""
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
        view = memoryview(self.buffer)
        while pending:
            received = self.sock.recv_into(self.buffer)
            offset = 0
            while offset + HEADER.size <= received:
                length, kind, flags, sequence, _ = HEADER.unpack_from(self.buffer, offset)
                if length < HEADER.size:
                    break
                slot = sequence - first
                if 0 <= slot < len(answers):
                    answer = answers[slot]
                    if kind == NLMSG_DONE:
                        pending -= 1
                    elif kind == NLMSG_ERROR:
                        _finish(answer, bytes(view[offset + HEADER.size:offset + length]), flags)
                        pending -= 1
                    else:
                        answer.messages.append((kind, bytes(view[offset + HEADER.size:offset + length])))
                offset += (length + 3) & ~3
        view.release()
        return answers


def _finish(answer: Answer, payload: bytes, flags: int) -> None:
    """An NLMSG_ERROR: errno 0 is the acknowledgement. Extended-ack attributes follow the echoed request:
    its header alone where NETLINK_CAP_ACK took (NLM_F_CAPPED), else the whole request."""
    (code,) = ERROR.unpack_from(payload)
    answer.error = -code
    if code and flags & NLM_F_ACK_TLVS:
        echoed = HEADER.size if flags & NLM_F_CAPPED else U32.unpack_from(payload, ERROR.size)[0]
        answer.explanation = text(attributes(payload, ERROR.size + echoed).get(NLMSGERR_ATTR_MSG))
