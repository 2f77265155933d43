"""tc over netlink: the kernel's tc structs and attribute numbers (include/uapi/linux/pkt_sched.h, pkt_cls.h,
tc_act/), requests that create qdiscs, classes, filters and actions, sent in batches, and qdiscs and classes
read back. The wire only: what to build is the bandwidth plugin's (`plugins/bandwidth/shaper.py`)."""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from pycni.host import rtnl
from pycni.host.cbpf import Program
from pycni.host.netlink import Netlink, NetlinkFailure, failure

Request = tuple[str, int, bytes]  # what it is (for an error), message type, body

TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETHERNET_HEADER = 14
MAX_RATE_BYTES = 2**32 - 1  # 32-bit rates keep CHECK's reading exact (HTB takes 64-bit rates too)
# The kernel's tc structs and attribute numbers (include/uapi/linux/pkt_sched.h, pkt_cls.h, tc_act/)
RATESPEC = struct.Struct("=BBHhHI")  # tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate
HTB_GLOBAL = struct.Struct("=IIIII")  # tc_htb_glob: version, rate2quantum, default class, debug, direct_pkts
HTB_CLASS = struct.Struct("=12s12sIIIII")  # tc_htb_opt: rate, ceil, buffer, cbuffer, quantum, level, prio
TBF_PARAMETERS = struct.Struct("=12s12sIII")  # tc_tbf_qopt: rate, peak rate, limit, buffer, mtu
U32_SELECTOR = struct.Struct("=BBBxHHhhI")  # tc_u32_sel: flags, offshift, nkeys, offmask, off, offoff, hoff, hmask
U32_KEY = struct.Struct(">II")  # tc_u32_key's mask and value, in network byte order
U32_KEY_PLACE = struct.Struct("=ii")  # and its offset and offset mask, in the host's
MIRRED = struct.Struct("=IIiiiiI")  # tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_RATE64 = 1, 4
TCA_HTB_PARMS, TCA_HTB_INIT, TCA_HTB_RATE64, TCA_HTB_CEIL64 = 1, 2, 6, 7
RATESPEC_RATE = 5  # the rate's place among tc_ratespec's members
FIFO_LIMIT = struct.Struct("=I")  # tc_fifo_qopt
TCA_FQ_CODEL_TARGET, TCA_FQ_CODEL_LIMIT, TCA_FQ_CODEL_QUANTUM = 1, 2, 6
TCA_U32_CLASSID, TCA_U32_SEL, TCA_U32_ACT = 1, 5, 7
TCA_BPF_OPS_LEN, TCA_BPF_OPS = 4, 5
SOCK_FILTER = struct.Struct("=HBBI")  # sock_filter: code, jump if true, jump if false, k
TCA_ACT_KIND, TCA_ACT_OPTIONS, TCA_MIRRED_PARMS = 1, 2, 2
TC_U32_TERMINAL, TC_ACT_STOLEN, TCA_EGRESS_REDIR = 1, 4, 1
HTB_VERSION, HTB_RATE_TO_QUANTUM = 3, 10


@dataclass(frozen=True, slots=True)
class Qdisc:
    kind: str
    handle: int
    parent: int
    rate: int = 0  # bytes per second (tbf)
    limit: int = 0  # bytes (tbf, bfifo) or packets (pfifo, fq_codel)
    link: int = 0  # the link's index


@dataclass(frozen=True, slots=True)
class TrafficClass:
    kind: str
    handle: int
    parent: int
    rate: int  # bytes per second (htb)


def add_tbf(nl: Netlink, index: int, handle: int, parent: int, rate: int, burst: int, limit: int) -> None:
    """A tbf qdisc: `rate` bytes per second, a bucket of `burst` bytes, a queue of `limit` bytes."""
    add_all(nl, [tbf(index, handle, parent, rate, burst, limit)])


def tbf(index: int, handle: int, parent: int, rate: int, burst: int, limit: int) -> Request:
    parameters = TBF_PARAMETERS.pack(_ratespec(rate), _ratespec(0), limit, _transmit_ticks(rate, burst), 0)
    return request(rtnl.RTM_NEWQDISC, "tbf", index, handle, parent,
                    rtnl.nested(TCA_OPTIONS, rtnl.attribute(TCA_TBF_PARMS, parameters)))


def htb_root(index: int, handle: int, parent: int, default_class: int) -> Request:
    return request(rtnl.RTM_NEWQDISC, "htb", index, handle, parent, rtnl.nested(TCA_OPTIONS, rtnl.attribute(
        TCA_HTB_INIT, HTB_GLOBAL.pack(HTB_VERSION, HTB_RATE_TO_QUANTUM, default_class & 0xFFFF, 0, 0))))


def htb_class(index: int, handle: int, parent: int, rate: int, ceil: int, burst: int, prio: int,
               frame: int) -> Request:
    """An HTB class with buckets of `burst` bytes at its rate and ceiling, `frame` bytes a turn. Rates above
    32 bits go in the 64-bit attributes too, as tc sends them."""
    options = [rtnl.attribute(TCA_HTB_PARMS, HTB_CLASS.pack(
        _ratespec(rate), _ratespec(ceil), _transmit_ticks(rate, burst), _transmit_ticks(ceil, burst), frame, 0, prio))]
    if rate > MAX_RATE_BYTES:
        options.append(rtnl.attribute(TCA_HTB_RATE64, rtnl.U64.pack(rate)))
    if ceil > MAX_RATE_BYTES:
        options.append(rtnl.attribute(TCA_HTB_CEIL64, rtnl.U64.pack(ceil)))
    return request(rtnl.RTM_NEWTCLASS, "htb", index, handle, parent, rtnl.nested(TCA_OPTIONS, *options))


def u32_filter(index: int, parent: int, prio: int, protocol: int, class_id: int, key: tuple[int, int, int],
                action: bytes = b"") -> Request:
    """A u32 filter matching one 32-bit word (value, mask, offset from the network header) that sends a
    packet to `class_id` (and through `action`, an already packed TCA_U32_ACT)."""
    value, mask, offset = key
    selector = U32_SELECTOR.pack(TC_U32_TERMINAL, 0, 1, 0, 0, 0, 0, 0)  # terminal, one key
    selector += U32_KEY.pack(mask, value) + U32_KEY_PLACE.pack(offset, 0)
    options = rtnl.nested(TCA_OPTIONS, action, rtnl.u32_attribute(TCA_U32_CLASSID, class_id),
                          rtnl.attribute(TCA_U32_SEL, selector))
    return request(rtnl.RTM_NEWTFILTER, "u32", index, 0, parent, options, prio << 16 | socket.htons(protocol))


def _ratespec(rate: int) -> bytes:
    """A tc_ratespec of `rate` bytes per second (32 bits: larger rates also go in a 64-bit attribute), no
    rate table: the kernel computes transmit times itself since Linux 3.8."""
    return RATESPEC.pack(0, 0, 0, 0, 0, min(rate, MAX_RATE_BYTES))


_ticks_per_microsecond: float | None = None


def _tick_rate() -> float:
    """The packet scheduler's ticks per microsecond, as tc reads them from /proc/net/psched: the kernel keeps
    a bucket as the time its bytes take to send, in ticks."""
    global _ticks_per_microsecond
    if _ticks_per_microsecond is None:
        try:
            with open("/proc/net/psched") as psched:
                ticks_to_us, us_to_ticks, clock_resolution = (int(field, 16) for field in psched.read().split()[:3])
        except (OSError, ValueError):
            ticks_to_us, us_to_ticks, clock_resolution = 1000, 64, 1_000_000  # every kernel since 2.6.31
        if clock_resolution == 1_000_000_000:
            ticks_to_us = us_to_ticks
        _ticks_per_microsecond = ticks_to_us / us_to_ticks * clock_resolution / 1_000_000
    return _ticks_per_microsecond


def _transmit_ticks(rate: int, size: int) -> int:
    """How long `size` bytes take at `rate` bytes per second, in scheduler ticks (tc's tc_calc_xmittime)."""
    return min(int(int(1_000_000 * size / rate) * _tick_rate()), 0xFFFFFFFF)


def pfifo(index: int, handle: int, parent: int, packets: int) -> Request:
    return request(rtnl.RTM_NEWQDISC, "pfifo", index, handle, parent,
                   rtnl.attribute(TCA_OPTIONS, FIFO_LIMIT.pack(packets)))


def fq_codel(index: int, handle: int, parent: int, target_us: int, packets: int, quantum: int) -> Request:
    return request(rtnl.RTM_NEWQDISC, "fq_codel", index, handle, parent, rtnl.nested(
        TCA_OPTIONS, rtnl.u32_attribute(TCA_FQ_CODEL_TARGET, target_us),
        rtnl.u32_attribute(TCA_FQ_CODEL_LIMIT, packets), rtnl.u32_attribute(TCA_FQ_CODEL_QUANTUM, quantum)))


def bpf_filter(index: int, parent: int, prio: int, protocol: int, program: Program) -> Request:
    """A cls_bpf filter running a classic BPF `program` whose return value is the class."""
    return request(rtnl.RTM_NEWTFILTER, "bpf", index, 0, parent, rtnl.nested(
        TCA_OPTIONS, rtnl.attribute(TCA_BPF_OPS_LEN, struct.pack("=H", len(program))),
        rtnl.attribute(TCA_BPF_OPS, b"".join(SOCK_FILTER.pack(*op) for op in program))),
        prio << 16 | socket.htons(protocol))


def mirred_redirect(target_index: int) -> bytes:
    """A u32 filter's action (TCA_U32_ACT) sending the packet out of link `target_index`."""
    mirred = rtnl.nested(TCA_ACT_OPTIONS, rtnl.attribute(TCA_MIRRED_PARMS, MIRRED.pack(
        0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, target_index)))
    return rtnl.nested(TCA_U32_ACT, rtnl.nested(1, rtnl.name_attribute(TCA_ACT_KIND, "mirred"), mirred))  # action 1


def add(nl: Netlink, message: int, kind: str, index: int, handle: int, parent: int, options: bytes = b"",
        info: int = 0) -> None:
    """Create a qdisc, class or filter (`message`: RTM_NEWQDISC, RTM_NEWTCLASS, RTM_NEWTFILTER) of `kind`
    on link `index`, with its TCA_OPTIONS already packed."""
    add_all(nl, [request(message, kind, index, handle, parent, options, info)])


def request(message: int, kind: str, index: int, handle: int, parent: int, options: bytes = b"",
            info: int = 0) -> Request:
    """(what it is, message type, body) of a request creating a tc object."""
    noun = {rtnl.RTM_NEWQDISC: "qdisc", rtnl.RTM_NEWTCLASS: "class"}.get(message, "filter")
    return (f"adding {kind} {noun} {handle >> 16:x}:{handle & 0xFFFF:x} to link {index}", message,
            rtnl.TCMSG.pack(0, index, handle, parent, info) + rtnl.name_attribute(TCA_KIND, kind) + options)


def add_all(nl: Netlink, requests: list[Request]) -> None:
    """Create the tc objects of `requests` (from `request`) in one datagram, in order; the first the kernel
    refused is raised (those after it were tried too, and may have failed for want of it)."""
    answers = nl.exchange("shaping", [(message, rtnl.NLM_F_NEW, body) for _, message, body in requests])
    for (what, _, _), answer in zip(requests, answers, strict=True):
        try:
            answer.check()
        except rtnl.Failed as e:
            raise failure(what, e) from None


def delete_qdisc(nl: Netlink, index: int, handle: int, parent: int) -> bool:
    """Remove the qdisc `handle` attached at `parent` (TC_H_ROOT, TC_H_INGRESS); False when there is none."""
    try:
        nl.request(f"removing qdisc {handle:x} from link {index}", rtnl.RTM_DELQDISC, 0,
                   rtnl.TCMSG.pack(0, index, handle, parent, 0))
    except NetlinkFailure as e:
        if e.errno in (errno.ENOENT, errno.EINVAL):
            return False
        raise
    return True


def qdiscs(nl: Netlink, index: int | None = None) -> list[Qdisc]:
    """The qdiscs of link `index`, or of every link. The kernel answers a qdisc dump with every link's
    qdiscs (the filtering is done here), so this costs in proportion to the node's links: use
    `by_handle()` where the handles are known."""
    messages = nl.request(f"reading qdiscs of link {index or 'any'}", rtnl.RTM_GETQDISC, rtnl.NLM_F_DUMP,
                          rtnl.TCMSG.pack(0, 0, 0, 0, 0))
    found = (_qdisc(payload) for kind, payload in messages if kind == rtnl.RTM_NEWQDISC)
    return [qdisc for qdisc in found if index is None or qdisc.link == index]


def by_handle(nl: Netlink, wanted_qdiscs: list[tuple[int, int]], wanted_classes: list[tuple[int, int]]
              ) -> tuple[dict[tuple[int, int], Qdisc], dict[tuple[int, int], TrafficClass]]:
    """Those of the qdiscs and classes named by (link index, handle) that exist, asked for in one batch
    (one round trip, however many links the node has: a dump would return them all).

    Each request carries NLM_F_ECHO: kernels since 6.10 answer an RTM_GETQDISC or RTM_GETTCLASS only to
    a requester that asks for the echo (they treat the answer as a notification); older ones answer it
    either way."""
    wanted = [(rtnl.RTM_GETQDISC, key) for key in wanted_qdiscs] + \
        [(rtnl.RTM_GETTCLASS, key) for key in wanted_classes]
    answers = nl.exchange("reading qdiscs and classes", [
        (kind, rtnl.NLM_F_ECHO, rtnl.TCMSG.pack(0, index, handle, 0, 0)) for kind, (index, handle) in wanted])
    found_qdiscs, found_classes = {}, {}
    for (_, (index, handle)), answer in zip(wanted, answers, strict=True):
        if answer.error in (errno.ENOENT, errno.EINVAL, errno.ENODEV):  # no such handle or link: absent
            continue
        try:
            messages = answer.check()
        except rtnl.Failed as e:
            raise failure(f"reading tc handle {handle:x} of link {index}", e) from None
        for kind, payload in messages:
            if kind == rtnl.RTM_NEWQDISC:
                qdisc = _qdisc(payload)
                found_qdiscs[qdisc.link, qdisc.handle] = qdisc
            elif kind == rtnl.RTM_NEWTCLASS:
                found_classes[index, handle] = _traffic_class(payload)
    return found_qdiscs, found_classes


def _qdisc(payload: bytes) -> Qdisc:
    _, index, handle, parent, _ = rtnl.TCMSG.unpack_from(payload)
    attributes = rtnl.attributes(payload, rtnl.TCMSG.size)
    kind = rtnl.text(attributes.get(TCA_KIND))
    options = attributes.get(TCA_OPTIONS) or b""
    rate = limit = 0
    if kind == "tbf":
        tbf = rtnl.attributes(options)
        parameters = tbf.get(TCA_TBF_PARMS) or bytes(TBF_PARAMETERS.size)
        _, _, limit, _, _ = TBF_PARAMETERS.unpack_from(parameters)
        rate = rtnl.number(tbf.get(TCA_TBF_RATE64)) or RATESPEC.unpack_from(parameters)[RATESPEC_RATE]
    elif kind in ("bfifo", "pfifo") and len(options) >= FIFO_LIMIT.size:
        limit = FIFO_LIMIT.unpack_from(options)[0]
    return Qdisc(kind, handle, parent, rate, limit, index)


def _traffic_class(payload: bytes) -> TrafficClass:
    _, _, handle, parent, _ = rtnl.TCMSG.unpack_from(payload)
    attributes = rtnl.attributes(payload, rtnl.TCMSG.size)
    kind = rtnl.text(attributes.get(TCA_KIND))
    rate = 0
    if kind == "htb":
        htb = rtnl.attributes(attributes.get(TCA_OPTIONS) or b"")
        parameters = htb.get(TCA_HTB_PARMS)
        rate = rtnl.number(htb.get(TCA_HTB_RATE64)) or (
            RATESPEC.unpack_from(parameters)[RATESPEC_RATE] if parameters else 0)
    return TrafficClass(kind, handle, parent, rate)
