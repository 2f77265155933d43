"""Traffic shaping with tc over netlink: a pod's rate limit that does not add a queue's worth of latency,
and redirecting a link's ingress to an ifb. This module owns everything of tc: the TCA attribute numbers,
the kernel's tc structs, packing qdiscs, classes, filters and actions, and reading them back.

The reference bandwidth plugin puts one tbf on a link with a queue of `rate x 25 ms + burst` bytes, so a
bulk transfer fills it and every other packet of the pod waits behind it (tens of milliseconds). pycni
shapes with HTB instead:

    1: htb
    └── 1:1  rate = ceil = the limit, burst = the configured burst (credit, not queue)
        ├── 1:10 interactive, prio 0: ICMP, ICMPv6 and any packet under 128 bytes (DNS, TCP ACKs and
        │        SYNs, small RPCs) → a short pfifo: they never wait behind bulk data
        └── 1:20 bulk, prio 1, where the kernel has fq_codel (the default class):
                 → 20: tbf that only cuts packets up → 30: fq_codel with the latency target
            1:20 bulk, prio 1, where it has not: sixteen flow queues, 1:100 … 1:10f (1:100 the default
                 class), a flow's by a hash of its ports (a classic BPF classifier: the same in both
                 directions), served in turn a frame at a time
                 └── 100: … 10f: tbf that cuts packets up, and its own bfifo of `rate x latency` bytes

A 1400-byte request beside a transfer that fills the pod's limit then waits for one frame of that
transfer, not for its whole queue: about 3 ms added at 8 Mbit/s instead of 12 (a flow whose ports hash
to the transfer's queue, one in sixteen, still waits behind it, as in any hashed fair queue).

Segmentation offload hands a qdisc packets of up to 64 KB (a node's TCP, or GRO on forwarded traffic),
and HTB sends a packet whole: one such packet holds an 8 Mbit/s link for 65 ms, interactive packets
included, and no short queue can take it. tbf is the qdisc that segments a packet larger than its
bucket, so the bulk class's leaf is a tbf with a bucket of about a millisecond of the rate and a rate
well above the pod's (HTB does the limiting). Measured on this repository's benchmark: a bulk queue of
fewer than about eight full frames costs one TCP flow a third of its rate, so that is the queue's floor.

Burst corrections, as before: a burst smaller than one full frame can never send that frame, so it is
raised to the link's MTU plus the Ethernet header; the runtimes' "no burst given" value gets 100 ms of
the rate instead of half a gigabyte; and no burst exceeds a minute of the rate.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from pycni.host import rtnl
from pycni.host.netlink import Netlink, NetlinkFailure, failure
from pycni.protocol.errors import CNIError

ROOT_HANDLE = 0x10000  # 1:
LIMIT_CLASS = 0x10001  # 1:1, the pod's whole rate
REDIRECT_FLOW = 0x10001  # the redirect filter's flowid, 1:1 as tc writes it (the ingress qdisc has no classes)
INTERACTIVE_CLASS = 0x10010  # 1:10
BULK_CLASS = 0x10020  # 1:20
INTERACTIVE_QUEUE = 0x100000  # 10:
BULK_SEGMENTER = 0x200000  # 20:, the tbf that segments (fq_codel kernels)
BULK_QUEUE = 0x300000  # 30:, fq_codel under it
FLOW_BITS = 4
FLOWS = 1 << FLOW_BITS  # flow queues where the kernel has no fq_codel: classes 1:100 + i, tbf qdiscs 100 + i:
FLOW_CLASSES = tuple(0x10100 + i for i in range(FLOWS))
FLOW_SEGMENTERS = tuple((0x100 + i) << 16 for i in range(FLOWS))
FLOW_FILTER_PRIO = 10  # after the interactive u32 filters (prio 1 …)
INGRESS_HANDLE = 0xFFFF0000  # ffff:
OWN_QDISCS = (INGRESS_HANDLE, ROOT_HANDLE, BULK_SEGMENTER, BULK_QUEUE, FLOW_SEGMENTERS[0])  # how a link is shaped
TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETHERNET_HEADER = 14
DEFAULT_LATENCY_SECONDS = 0.005
INTERACTIVE_PACKETS = 64  # pfifo length of the interactive class
INTERACTIVE_SHARE = 10  # the interactive class is guaranteed 1/10 of the rate and may borrow all of it
SEGMENT_SECONDS = 0.001  # a packet holds the link for about this long at most
GSO_MAX = 65536
MIN_QUEUE_FRAMES = 8  # the bulk queue's floor: fewer costs a single TCP flow its rate
SEGMENTER_SPEEDUP = 10  # the segmenting tbf's rate, as a multiple of the pod's: it must never be the limit
MAX_RATE_BYTES = 2**32 - 1  # 32-bit rates keep CHECK's reading exact (HTB takes 64-bit rates too)
# containerd and CRI-O send burst = MaxUint32 bits for the Kubernetes bandwidth annotations, meaning "not
# set"; taken literally that is ~512 MB of unshaped credit per pod. pycni reads it as unset and uses
# 100 ms worth of the rate instead.
RUNTIME_UNLIMITED_BURST = 2**32 - 1
DEFAULT_BURST_SECONDS = 0.1
# the kernel keeps the burst as transmit time in 32-bit scheduler ticks: at most a few minutes of credit.
MAX_BURST_SECONDS = 60
# u32 matches on the network header: (protocol, value, mask, offset of the 32-bit word)
INTERACTIVE_MATCHES = (
    (ETH_P_IP, 0x00010000, 0x00FF0000, 8),  # IPv4 protocol ICMP
    (ETH_P_IP, 0x00000000, 0x0000FF80, 0),  # IPv4 total length < 128
    (ETH_P_IPV6, 0x00003A00, 0x0000FF00, 4),  # IPv6 next header ICMPv6
    (ETH_P_IPV6, 0x00000000, 0xFF800000, 4),  # IPv6 payload length < 128
)

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
FQ_CODEL_PACKETS = 1024


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


@dataclass(frozen=True, slots=True)
class TokenBucket:
    rate: int  # bytes per second
    burst: int  # bytes of credit
    limit: int  # bytes the bulk queue holds at most
    frame: int = 1500 + ETHERNET_HEADER  # the link's largest frame

    @classmethod
    def from_bits(cls, rate_bits: int, burst_bits: int, mtu: int,
                  latency_seconds: float = DEFAULT_LATENCY_SECONDS) -> TokenBucket:
        rate = rate_bits // 8
        frame = mtu + ETHERNET_HEADER
        if burst_bits >= RUNTIME_UNLIMITED_BURST:
            burst = int(rate * DEFAULT_BURST_SECONDS)
        else:
            burst = min(burst_bits // 8, rate * MAX_BURST_SECONDS)
        burst = max(burst, frame)
        return cls(rate, burst, max(int(rate * latency_seconds), MIN_QUEUE_FRAMES * frame), frame)

    @property
    def largest_packet(self) -> int:
        """Packets larger than this plus a frame (slack for the kernel's rounding of the bucket to
        scheduler ticks) are segmented before the bulk queue: about a millisecond of the rate, at least
        one frame."""
        return min(GSO_MAX, max(self.frame, int(self.rate * SEGMENT_SECONDS)))


_kernel_has_fq_codel: bool | None = None  # learnt by the first shape() of the process


def shape(nl: Netlink, index: int, bucket: TokenBucket, families: frozenset[int] = frozenset({4, 6})) -> str:
    """Link `index` sends at most `bucket.rate`: the HTB tree of the module docstring, its bulk queue the
    best this kernel has: fq_codel (flow isolation and CoDel), else tbf's short bfifo. Returns which.
    `families`: the IP versions the pod has addresses of (the interactive filters of the others are not
    installed: each netlink request costs about half a millisecond of the pod's start)."""
    global _kernel_has_fq_codel
    if _kernel_has_fq_codel is not False:
        try:
            _shape(nl, index, bucket, True, families)
            _kernel_has_fq_codel = True
            return "fq_codel"
        except NetlinkFailure as e:
            if _kernel_has_fq_codel or e.errno != errno.ENOENT:  # ENOENT: "unknown qdisc kind"
                raise
            _kernel_has_fq_codel = False  # (_shape removed the part of the tree it had made)
    _shape(nl, index, bucket, False, families)
    return "bfifo"


def _shape(nl: Netlink, index: int, bucket: TokenBucket, fq_codel: bool, families: frozenset[int]) -> None:
    add_all(nl, [_htb_root(index, BULK_CLASS if fq_codel else FLOW_CLASSES[0])])  # refused: nothing made
    try:
        _build_classes(nl, index, bucket, fq_codel, families)
    except BaseException:
        _remove(nl, index, ROOT_HANDLE, TC_H_ROOT)  # the whole tree goes with its root
        raise


def _build_classes(nl: Netlink, index: int, bucket: TokenBucket, fq_codel: bool, families: frozenset[int]) -> None:
    """Everything under the root, sent in one datagram (the kernel takes the requests in order)."""
    frame = bucket.frame
    requests = [_htb_class(index, LIMIT_CLASS, ROOT_HANDLE, bucket.rate, bucket.rate, bucket.burst, 0, frame)]
    interactive = max(bucket.rate // INTERACTIVE_SHARE, 1)
    bulk = max(bucket.rate - interactive, 1)
    requests += [_htb_class(index, INTERACTIVE_CLASS, LIMIT_CLASS, interactive, bucket.rate, frame, 0, frame),
                 _htb_class(index, BULK_CLASS, LIMIT_CLASS, bulk, bucket.rate, frame, 1, frame),  # they borrow
                 _message(rtnl.RTM_NEWQDISC, "pfifo", index, INTERACTIVE_QUEUE, INTERACTIVE_CLASS,
                          rtnl.attribute(TCA_OPTIONS, rtnl.U32.pack(INTERACTIVE_PACKETS)))]  # tc_fifo_qopt: a limit
    segmenting = min(bucket.rate * SEGMENTER_SPEEDUP, MAX_RATE_BYTES), bucket.largest_packet + frame, bucket.limit
    if fq_codel:
        target_us = max(int(bucket.limit / bucket.rate * 1_000_000), 500)
        requests += [_tbf(index, BULK_SEGMENTER, BULK_CLASS, *segmenting),
                     _message(rtnl.RTM_NEWQDISC, "fq_codel", index, BULK_QUEUE, BULK_SEGMENTER + 1, rtnl.nested(
                         TCA_OPTIONS, rtnl.u32_attribute(TCA_FQ_CODEL_TARGET, target_us),
                         rtnl.u32_attribute(TCA_FQ_CODEL_LIMIT, FQ_CODEL_PACKETS),
                         rtnl.u32_attribute(TCA_FQ_CODEL_QUANTUM, frame)))]
    else:
        for leaf, segmenter in zip(FLOW_CLASSES, FLOW_SEGMENTERS, strict=True):
            requests += [_htb_class(index, leaf, BULK_CLASS, max(bulk // FLOWS, 1), bucket.rate, frame, 1, frame),
                         _tbf(index, segmenter, leaf, *segmenting)]
        requests.append(_message(rtnl.RTM_NEWTFILTER, "bpf", index, 0, ROOT_HANDLE, rtnl.nested(
            TCA_OPTIONS, rtnl.attribute(TCA_BPF_OPS_LEN, struct.pack("=H", len(FLOW_HASH))),
            rtnl.attribute(TCA_BPF_OPS, b"".join(SOCK_FILTER.pack(*op) for op in FLOW_HASH))),
            FLOW_FILTER_PRIO << 16 | socket.htons(ETH_P_ALL)))
    for prio, (protocol, value, mask, offset) in enumerate(INTERACTIVE_MATCHES, start=1):
        if (4 if protocol == ETH_P_IP else 6) in families:
            requests.append(_u32_filter(index, ROOT_HANDLE, prio, protocol, INTERACTIVE_CLASS, (value, mask, offset)))
    add_all(nl, requests)


def _assemble(program: list[tuple]) -> tuple[tuple[int, int, int, int], ...]:
    """Classic BPF from (code, k) and (code, k, label if true, label if false) steps and ("label", name) marks."""
    labels: dict[str, int] = {}
    steps: list[tuple] = []
    for step in program:
        if step[0] == "label":
            labels[step[1]] = len(steps)
        else:
            steps.append(step)
    out = []
    for at, step in enumerate(steps):
        if step[0] == _JA:  # an unconditional jump: its offset is k
            out.append((step[0], 0, 0, labels[step[2]] - at - 1))
        elif len(step) == 4:
            code, k, if_true, if_false = step
            out.append((code, labels[if_true] - at - 1 if if_true else 0, labels[if_false] - at - 1 if if_false else 0,
                        k))
        else:
            out.append((step[0], 0, 0, step[1]))
    return tuple(out)


# classic BPF opcodes (linux/filter.h): loads, jumps, ALU, returns
_LDH_ABS, _LDB_ABS, _LDH_IND, _LDX_MSH, _LDX_MEM, _ST = 0x28, 0x30, 0x48, 0xB1, 0x61, 0x02
_JEQ, _JSET, _JA, _XOR_X, _RSH_K, _AND_K, _ADD_K, _TAX, _RET_K, _RET_A = \
    0x15, 0x45, 0x05, 0xAC, 0x74, 0x54, 0x04, 0x07, 0x06, 0x16

# The flow queue of a TCP or UDP packet: 1:100 + h, h = (p ^ p >> 4) & 15 with p = source port ^ destination
# port (`flow_queue`); 0 ("no class": the default, 1:100) for anything else, every IPv4 fragment included (the
# first too: a datagram's fragments stay in one queue, in order). The program reads the frame from its
# Ethernet header, as cls_bpf gives it on a link's egress.
FLOW_HASH = _assemble([
    (_LDH_ABS, 12), (_JEQ, ETH_P_IP, "", "v6"),
    (_LDB_ABS, ETHERNET_HEADER + 9), (_JEQ, socket.IPPROTO_TCP, "v4", ""), (_JEQ, socket.IPPROTO_UDP, "v4", "none"),
    ("label", "v4"), (_LDH_ABS, ETHERNET_HEADER + 6), (_JSET, 0x3FFF, "none", ""),  # any fragment (MF, offset)
    (_LDX_MSH, ETHERNET_HEADER),  # X = the IPv4 header's length
    (_LDH_IND, ETHERNET_HEADER + 2), (_ST, 0), (_LDH_IND, ETHERNET_HEADER), (_JA, 0, "mix", ""),
    ("label", "v6"), (_JEQ, ETH_P_IPV6, "", "none"),
    (_LDB_ABS, ETHERNET_HEADER + 6), (_JEQ, socket.IPPROTO_TCP, "v6ports", ""),
    (_JEQ, socket.IPPROTO_UDP, "v6ports", "none"),
    ("label", "v6ports"), (_LDH_ABS, ETHERNET_HEADER + 42), (_ST, 0), (_LDH_ABS, ETHERNET_HEADER + 40),
    ("label", "mix"), (_LDX_MEM, 0), (_XOR_X, 0), (_TAX, 0), (_RSH_K, FLOW_BITS), (_XOR_X, 0), (_AND_K, FLOWS - 1),
    (_ADD_K, FLOW_CLASSES[0]), (_RET_A, 0),
    ("label", "none"), (_RET_K, 0),
])


def flow_queue(source_port: int, destination_port: int) -> int:
    """The class FLOW_HASH sends a TCP or UDP packet between these ports to."""
    mixed = source_port ^ destination_port
    return FLOW_CLASSES[(mixed ^ mixed >> FLOW_BITS) & (FLOWS - 1)]


def redirect_ingress(nl: Netlink, index: int, target_index: int) -> None:
    """Everything link `index` receives is sent out of `target_index` instead (an ifb, to be shaped there)."""
    add(nl, rtnl.RTM_NEWQDISC, "ingress", index, INGRESS_HANDLE, TC_H_INGRESS)  # refused: nothing made
    try:
        mirred = rtnl.nested(TCA_ACT_OPTIONS, rtnl.attribute(TCA_MIRRED_PARMS, MIRRED.pack(
            0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, target_index)))
        action = rtnl.nested(1, rtnl.name_attribute(TCA_ACT_KIND, "mirred"), mirred)  # the first action
        add_all(nl, [_u32_filter(index, INGRESS_HANDLE, 1, ETH_P_ALL, REDIRECT_FLOW, (0, 0, 0),
                                 rtnl.nested(TCA_U32_ACT, action))])
    except BaseException:
        remove_redirect(nl, index)
        raise


def add_tbf(nl: Netlink, index: int, handle: int, parent: int, rate: int, burst: int, limit: int) -> None:
    """A tbf qdisc: `rate` bytes per second, a bucket of `burst` bytes, a queue of `limit` bytes."""
    add_all(nl, [_tbf(index, handle, parent, rate, burst, limit)])


def _tbf(index: int, handle: int, parent: int, rate: int, burst: int, limit: int) -> tuple[str, int, bytes]:
    parameters = TBF_PARAMETERS.pack(_ratespec(rate), _ratespec(0), limit, _transmit_ticks(rate, burst), 0)
    return _message(rtnl.RTM_NEWQDISC, "tbf", index, handle, parent,
                    rtnl.nested(TCA_OPTIONS, rtnl.attribute(TCA_TBF_PARMS, parameters)))


def _htb_root(index: int, default_class: int) -> tuple[str, int, bytes]:
    return _message(rtnl.RTM_NEWQDISC, "htb", index, ROOT_HANDLE, TC_H_ROOT, rtnl.nested(TCA_OPTIONS, rtnl.attribute(
        TCA_HTB_INIT, HTB_GLOBAL.pack(HTB_VERSION, HTB_RATE_TO_QUANTUM, default_class & 0xFFFF, 0, 0))))


def _htb_class(index: int, handle: int, parent: int, rate: int, ceil: int, burst: int, prio: int,
               frame: int) -> tuple[str, int, bytes]:
    """An HTB class with buckets of `burst` bytes at its rate and ceiling, `frame` bytes a turn. Rates above
    32 bits go in the 64-bit attributes too, as tc sends them."""
    options = [rtnl.attribute(TCA_HTB_PARMS, HTB_CLASS.pack(
        _ratespec(rate), _ratespec(ceil), _transmit_ticks(rate, burst), _transmit_ticks(ceil, burst), frame, 0, prio))]
    if rate > MAX_RATE_BYTES:
        options.append(rtnl.attribute(TCA_HTB_RATE64, rtnl.U64.pack(rate)))
    if ceil > MAX_RATE_BYTES:
        options.append(rtnl.attribute(TCA_HTB_CEIL64, rtnl.U64.pack(ceil)))
    return _message(rtnl.RTM_NEWTCLASS, "htb", index, handle, parent, rtnl.nested(TCA_OPTIONS, *options))


def _u32_filter(index: int, parent: int, prio: int, protocol: int, class_id: int, key: tuple[int, int, int],
                action: bytes = b"") -> tuple[str, int, bytes]:
    """A u32 filter matching one 32-bit word (value, mask, offset from the network header) that sends a
    packet to `class_id` (and through `action`, an already packed TCA_U32_ACT)."""
    value, mask, offset = key
    selector = U32_SELECTOR.pack(TC_U32_TERMINAL, 0, 1, 0, 0, 0, 0, 0)  # terminal, one key
    selector += U32_KEY.pack(mask, value) + U32_KEY_PLACE.pack(offset, 0)
    options = rtnl.nested(TCA_OPTIONS, action, rtnl.u32_attribute(TCA_U32_CLASSID, class_id),
                          rtnl.attribute(TCA_U32_SEL, selector))
    return _message(rtnl.RTM_NEWTFILTER, "u32", index, 0, parent, options, prio << 16 | socket.htons(protocol))


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


def remove_shaping(nl: Netlink, index: int) -> None:
    """Drop link `index`'s shaper (its root qdisc and all below it)."""
    _remove(nl, index, ROOT_HANDLE, TC_H_ROOT)


def remove_redirect(nl: Netlink, index: int) -> None:
    """Drop link `index`'s ingress qdisc and the redirect on it."""
    _remove(nl, index, INGRESS_HANDLE, TC_H_INGRESS)


def remove_all(nl: Netlink, index: int) -> None:
    """Drop the root and ingress qdiscs of link `index` (absent ones, or a vanished link, are fine)."""
    remove_shaping(nl, index)
    remove_redirect(nl, index)


def _remove(nl: Netlink, index: int, handle: int, parent: int) -> None:
    try:
        delete_qdisc(nl, index, handle, parent)
    except CNIError:
        pass


@dataclass(frozen=True, slots=True)
class Installed:
    bucket: TokenBucket | None  # the shaper's rate and bulk queue bytes (the kernel keeps no burst in bytes)
    queue: str  # the bulk queue: "bfifo" (tbf's own) or "fq_codel"
    has_ingress: bool


def installed_on(nl: Netlink, indexes: list[int]) -> dict[int, Installed]:
    """What each of the links `indexes` carries, its qdiscs and limit class asked for by handle in one round
    trip (a qdisc dump would return every link's qdiscs on the node, and a node of 500 shaped pods has
    thousands)."""
    found, classes = by_handle(nl, [(index, handle) for index in indexes for handle in OWN_QDISCS],
                               [(index, LIMIT_CLASS) for index in indexes])
    return {index: _reading([q for (link, _), q in found.items() if link == index],
                            classes.get((index, LIMIT_CLASS))) for index in indexes}


def installed_on_every_link(nl: Netlink) -> dict[int, Installed]:
    """`installed_on()` of each link that has a qdisc of pycni's, from one dump of the node's qdiscs (for the
    node-wide views: `pycni status`, the shaped-pods gauge)."""
    by_link: dict[int, list[Qdisc]] = {}
    for qdisc in qdiscs(nl):
        if qdisc.handle in OWN_QDISCS:
            by_link.setdefault(qdisc.link, []).append(qdisc)
    _, classes = by_handle(nl, [], [(index, LIMIT_CLASS) for index in by_link])
    return {index: _reading(found, classes.get((index, LIMIT_CLASS))) for index, found in by_link.items()}


def _reading(own: list[Qdisc], limit_class: TrafficClass | None) -> Installed:
    limit = 0
    queue, has_ingress = "", False
    for qdisc in own:
        if qdisc.kind == "ingress":
            has_ingress = True
        elif qdisc.handle in (BULK_SEGMENTER, FLOW_SEGMENTERS[0]):
            limit, queue = qdisc.limit, queue or "bfifo"
        elif qdisc.handle == BULK_QUEUE:
            queue = qdisc.kind
    rate = limit_class.rate if limit_class is not None else 0
    return Installed(TokenBucket(rate, 0, limit) if queue else None, queue, has_ingress)


# ---------------------------------------------------------------- tc objects over netlink


def add(nl: Netlink, message: int, kind: str, index: int, handle: int, parent: int, options: bytes = b"",
        info: int = 0) -> None:
    """Create a qdisc, class or filter (`message`: RTM_NEWQDISC, RTM_NEWTCLASS, RTM_NEWTFILTER) of `kind`
    on link `index`, with its TCA_OPTIONS already packed."""
    add_all(nl, [_message(message, kind, index, handle, parent, options, info)])


def _message(message: int, kind: str, index: int, handle: int, parent: int, options: bytes = b"",
             info: int = 0) -> tuple[str, int, bytes]:
    """(what it is, message type, body) of a request creating a tc object."""
    noun = {rtnl.RTM_NEWQDISC: "qdisc", rtnl.RTM_NEWTCLASS: "class"}.get(message, "filter")
    return (f"adding {kind} {noun} {handle >> 16:x}:{handle & 0xFFFF:x} to link {index}", message,
            rtnl.TCMSG.pack(0, index, handle, parent, info) + rtnl.name_attribute(TCA_KIND, kind) + options)


def add_all(nl: Netlink, requests: list[tuple[str, int, bytes]]) -> None:
    """Create the tc objects of `requests` (from `_message`) in one datagram, in order; the first the kernel
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
