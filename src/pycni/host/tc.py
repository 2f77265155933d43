"""Traffic shaping with tc over netlink: token buckets (tbf) and redirecting a link's ingress to an ifb.

Sizes follow the reference bandwidth plugin (rate and burst given in bits, 25 ms of queue) with these
corrections: a burst smaller than one full frame can never send that frame, so it is raised to the
link's MTU plus the Ethernet header; the runtimes' "no burst given" value gets 100 ms of the rate
instead of half a gigabyte; and no burst exceeds a minute of the rate (tbf's tick counter would wrap).
"""

from __future__ import annotations

from dataclasses import dataclass

from pycni.host.netlink import Netlink
from pycni.protocol.errors import CNIError

ROOT_HANDLE = 0x10000  # 1:
INGRESS_HANDLE = 0xFFFF0000  # ffff:
TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
ETH_P_ALL = 0x0003
ETHERNET_HEADER = 14
LATENCY_SECONDS = 0.025
MAX_RATE_BYTES = 2**32 - 1  # tbf's rate field is 32 bits of bytes per second
# containerd and CRI-O send burst = MaxUint32 bits for the Kubernetes bandwidth annotations, meaning "not
# set"; taken literally that is ~512 MB of unshaped credit per pod. pycni reads it as unset and uses
# 100 ms worth of the rate instead.
RUNTIME_UNLIMITED_BURST = 2**32 - 1
DEFAULT_BURST_SECONDS = 0.1
# tbf stores the burst as transmit time in 32-bit scheduler ticks: at most a few minutes of credit.
MAX_BURST_SECONDS = 60


@dataclass(frozen=True, slots=True)
class TokenBucket:
    rate: int  # bytes per second
    burst: int  # bytes
    limit: int  # bytes queued at most

    @classmethod
    def from_bits(cls, rate_bits: int, burst_bits: int, mtu: int) -> TokenBucket:
        rate = rate_bits // 8
        if burst_bits >= RUNTIME_UNLIMITED_BURST:
            burst = int(rate * DEFAULT_BURST_SECONDS)
        else:
            burst = min(burst_bits // 8, rate * MAX_BURST_SECONDS)
        burst = max(burst, mtu + ETHERNET_HEADER)
        return cls(rate, burst, int(rate * LATENCY_SECONDS) + burst)


def shape(nl: Netlink, index: int, bucket: TokenBucket) -> None:
    """A tbf as the root qdisc of link `index`: what the link sends is held to the bucket."""
    nl.add_qdisc("tbf", index, handle=ROOT_HANDLE, rate=bucket.rate, burst=bucket.burst, limit=bucket.limit)


def redirect_ingress(nl: Netlink, index: int, target_index: int) -> None:
    """Everything link `index` receives is sent out of `target_index` instead (an ifb, to be shaped there)."""
    nl.add_qdisc("ingress", index, handle=INGRESS_HANDLE)
    nl.add_filter("u32", index, parent=INGRESS_HANDLE, prio=1, protocol=ETH_P_ALL, target=0x10001,
                  keys=["0x0/0x0+0"],
                  action=[{"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": target_index}])


def remove_all(nl: Netlink, index: int) -> None:
    """Drop the root and ingress qdiscs of link `index` (absent ones, or a vanished link, are fine)."""
    for handle, parent in ((ROOT_HANDLE, TC_H_ROOT), (INGRESS_HANDLE, TC_H_INGRESS)):
        try:
            nl.delete_qdisc(index, handle, parent)
        except CNIError:
            pass


@dataclass(frozen=True, slots=True)
class Installed:
    bucket: TokenBucket | None  # the root tbf's rate and limit (the kernel keeps no burst in bytes)
    has_ingress: bool


def installed(nl: Netlink, index: int) -> Installed:
    bucket, has_ingress = None, False
    for qdisc in nl.qdiscs(index):
        if qdisc.kind == "ingress":
            has_ingress = True
        elif qdisc.kind == "tbf" and qdisc.handle == ROOT_HANDLE:
            bucket = TokenBucket(qdisc.tbf_rate, 0, qdisc.tbf_limit)
    return Installed(bucket, has_ingress)
