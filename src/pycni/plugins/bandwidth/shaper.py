"""The bandwidth plugin's shaping policy: a pod's rate limit that does not add a queue's worth of latency,
and redirecting a link's ingress to an ifb (the tc requests themselves are `host/tc.py`'s).

The reference bandwidth plugin puts one tbf on a link with a queue of `rate x 25 ms + burst` bytes, so a
bulk transfer fills it and every other packet of the pod waits behind it (tens of milliseconds). pycni
shapes with HTB instead:

    1: htb
    └── 1:1  rate = ceil = the limit, burst = the configured burst (credit, not queue)
        ├── 1:10 interactive, prio 0: ICMP, ICMPv6 and any packet under 128 bytes (DNS, TCP ACKs and
        │        SYNs, small RPCs) → a short pfifo: they never wait behind bulk data
        └── 1:20 bulk, prio 1, where the kernel has fq_codel (the default class):
                 → 20: tbf that only cuts packets up → 30: fq_codel with the latency target
            1:20 bulk, prio 1, where it has not: eight flow queues, 1:100 … 1:107 (1:100 the default
                 class), a flow's by a hash of its ports (a classic BPF classifier: the same in both
                 directions), served in turn a frame at a time
                 └── 100: … 107: tbf that cuts packets up, and its own bfifo of `rate x latency` bytes

A 1400-byte request beside a transfer that fills the pod's limit then waits for one frame of that
transfer, not for its whole queue: about 3 ms added at 8 Mbit/s instead of 12 (a flow whose ports hash
to the transfer's queue, one in eight, still waits behind it, as in any hashed fair queue).

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
from dataclasses import dataclass

from pycni.host import rtnl, tc
from pycni.host.netlink import Netlink, NetlinkFailure
from pycni.host.tc import ETH_P_ALL, ETH_P_IP, ETH_P_IPV6, ETHERNET_HEADER, MAX_RATE_BYTES, TC_H_INGRESS, TC_H_ROOT
from pycni.plugins.bandwidth.flows import FLOW_CLASSES, FLOW_HASH, FLOWS
from pycni.protocol.errors import CNIError

ROOT_HANDLE = 0x10000  # 1:
LIMIT_CLASS = 0x10001  # 1:1, the pod's whole rate
REDIRECT_FLOW = 0x10001  # the redirect filter's flowid, 1:1 as tc writes it (the ingress qdisc has no classes)
INTERACTIVE_CLASS = 0x10010  # 1:10
BULK_CLASS = 0x10020  # 1:20
INTERACTIVE_QUEUE = 0x100000  # 10:
BULK_SEGMENTER = 0x200000  # 20:, the tbf that segments (fq_codel kernels)
BULK_QUEUE = 0x300000  # 30:, fq_codel under it
FLOW_SEGMENTERS = tuple((0x100 + i) << 16 for i in range(FLOWS))
FLOW_FILTER_PRIO = 10  # after the interactive u32 filters (prio 1 …)
INGRESS_HANDLE = 0xFFFF0000  # ffff:
OWN_QDISCS = (INGRESS_HANDLE, ROOT_HANDLE, BULK_SEGMENTER, BULK_QUEUE, FLOW_SEGMENTERS[0])  # how a link is shaped
DEFAULT_LATENCY_SECONDS = 0.005
INTERACTIVE_PACKETS = 64  # pfifo length of the interactive class
INTERACTIVE_SHARE = 10  # the interactive class is guaranteed 1/10 of the rate and may borrow all of it
SEGMENT_SECONDS = 0.001  # a packet holds the link for about this long at most
GSO_MAX = 65536
MIN_QUEUE_FRAMES = 8  # the bulk queue's floor: fewer costs a single TCP flow its rate
SEGMENTER_SPEEDUP = 10  # the segmenting tbf's rate, as a multiple of the pod's: it must never be the limit
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

FQ_CODEL_PACKETS = 1024


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
    default_class = BULK_CLASS if fq_codel else FLOW_CLASSES[0]
    tc.add_all(nl, [tc.htb_root(index, ROOT_HANDLE, TC_H_ROOT, default_class)])  # refused: nothing made
    try:
        _build_classes(nl, index, bucket, fq_codel, families)
    except BaseException:
        _remove(nl, index, ROOT_HANDLE, TC_H_ROOT)  # the whole tree goes with its root
        raise


def _build_classes(nl: Netlink, index: int, bucket: TokenBucket, fq_codel: bool, families: frozenset[int]) -> None:
    """Everything under the root, sent in one datagram (the kernel takes the requests in order)."""
    frame = bucket.frame
    requests = [tc.htb_class(index, LIMIT_CLASS, ROOT_HANDLE, bucket.rate, bucket.rate, bucket.burst, 0, frame)]
    interactive = max(bucket.rate // INTERACTIVE_SHARE, 1)
    bulk = max(bucket.rate - interactive, 1)
    requests += [tc.htb_class(index, INTERACTIVE_CLASS, LIMIT_CLASS, interactive, bucket.rate, frame, 0, frame),
                 tc.htb_class(index, BULK_CLASS, LIMIT_CLASS, bulk, bucket.rate, frame, 1, frame),  # they borrow
                 tc.pfifo(index, INTERACTIVE_QUEUE, INTERACTIVE_CLASS, INTERACTIVE_PACKETS)]
    segmenting = min(bucket.rate * SEGMENTER_SPEEDUP, MAX_RATE_BYTES), bucket.largest_packet + frame, bucket.limit
    if fq_codel:
        target_us = max(int(bucket.limit / bucket.rate * 1_000_000), 500)
        requests += [tc.tbf(index, BULK_SEGMENTER, BULK_CLASS, *segmenting),
                     tc.fq_codel(index, BULK_QUEUE, BULK_SEGMENTER + 1, target_us, FQ_CODEL_PACKETS, frame)]
    else:
        for leaf, segmenter in zip(FLOW_CLASSES, FLOW_SEGMENTERS, strict=True):
            requests += [tc.htb_class(index, leaf, BULK_CLASS, max(bulk // FLOWS, 1), bucket.rate, frame, 1, frame),
                         tc.tbf(index, segmenter, leaf, *segmenting)]
        requests.append(tc.bpf_filter(index, ROOT_HANDLE, FLOW_FILTER_PRIO, ETH_P_ALL, FLOW_HASH))
    for prio, (protocol, value, mask, offset) in enumerate(INTERACTIVE_MATCHES, start=1):
        if (4 if protocol == ETH_P_IP else 6) in families:
            requests.append(tc.u32_filter(index, ROOT_HANDLE, prio, protocol, INTERACTIVE_CLASS, (value, mask, offset)))
    tc.add_all(nl, requests)


def redirect_ingress(nl: Netlink, index: int, target_index: int) -> None:
    """Everything link `index` receives is sent out of `target_index` instead (an ifb, to be shaped there)."""
    tc.add(nl, rtnl.RTM_NEWQDISC, "ingress", index, INGRESS_HANDLE, TC_H_INGRESS)  # refused: nothing made
    try:
        tc.add_all(nl, [tc.u32_filter(index, INGRESS_HANDLE, 1, ETH_P_ALL, REDIRECT_FLOW, (0, 0, 0),
                                      tc.mirred_redirect(target_index))])
    except BaseException:
        remove_redirect(nl, index)
        raise


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
        tc.delete_qdisc(nl, index, handle, parent)
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
    found, classes = tc.by_handle(nl, [(index, handle) for index in indexes for handle in OWN_QDISCS],
                               [(index, LIMIT_CLASS) for index in indexes])
    return {index: _reading([q for (link, _), q in found.items() if link == index],
                            classes.get((index, LIMIT_CLASS))) for index in indexes}


def installed_on_every_link(nl: Netlink) -> dict[int, Installed]:
    """`installed_on()` of each link that has a qdisc of pycni's, from one dump of the node's qdiscs (for the
    node-wide views: `pycni status`, the shaped-pods gauge)."""
    by_link: dict[int, list[tc.Qdisc]] = {}
    for qdisc in tc.qdiscs(nl):
        if qdisc.handle in OWN_QDISCS:
            by_link.setdefault(qdisc.link, []).append(qdisc)
    _, classes = tc.by_handle(nl, [], [(index, LIMIT_CLASS) for index in by_link])
    return {index: _reading(found, classes.get((index, LIMIT_CLASS))) for index, found in by_link.items()}


def _reading(own: list[tc.Qdisc], limit_class: tc.TrafficClass | None) -> Installed:
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
