"""The bandwidth plugin's flow queues, where the kernel has no fq_codel: eight HTB classes under the bulk
class, and the classic BPF program that sends a TCP or UDP packet to one of them by a hash of its ports,
the same in both directions, so one flow's packets stay in order in one queue."""

from __future__ import annotations

import socket

from pycni.host.cbpf import (
    ADD_K,
    AND_K,
    JA,
    JEQ,
    JSET,
    LDB_ABS,
    LDH_ABS,
    LDH_IND,
    LDX_MEM,
    LDX_MSH,
    RET_A,
    RET_K,
    RSH_K,
    ST,
    TAX,
    XOR_X,
    assemble,
)
from pycni.host.tc import ETH_P_IP, ETH_P_IPV6, ETHERNET_HEADER

FLOW_BITS = 3  # eight queues: sixteen halved a request's chance of sharing a transfer's queue, but cost one
# more pod's ADD at 500 shaped pods 15 ms of kernel time (every HTB class is a filter block the kernel
# registers in a global list it searches linearly; see the README's Speed section)
FLOWS = 1 << FLOW_BITS  # flow queues where the kernel has no fq_codel: classes 1:100 + i, tbf qdiscs 100 + i:
FLOW_CLASSES = tuple(0x10100 + i for i in range(FLOWS))

# The flow queue of a TCP or UDP packet: 1:100 + h, h = (p ^ p >> 3) & 7 with p = source port ^ destination
# port (`flow_queue`); 0 ("no class": the default, 1:100) for anything else, every IPv4 fragment included (the
# first too: a datagram's fragments stay in one queue, in order). The program reads the frame from its
# Ethernet header, as cls_bpf gives it on a link's egress.
FLOW_HASH = assemble([
    (LDH_ABS, 12), (JEQ, ETH_P_IP, "", "v6"),
    (LDB_ABS, ETHERNET_HEADER + 9), (JEQ, socket.IPPROTO_TCP, "v4", ""), (JEQ, socket.IPPROTO_UDP, "v4", "none"),
    ("label", "v4"), (LDH_ABS, ETHERNET_HEADER + 6), (JSET, 0x3FFF, "none", ""),  # any fragment (MF, offset)
    (LDX_MSH, ETHERNET_HEADER),  # X = the IPv4 header's length
    (LDH_IND, ETHERNET_HEADER + 2), (ST, 0), (LDH_IND, ETHERNET_HEADER), (JA, 0, "mix", ""),
    ("label", "v6"), (JEQ, ETH_P_IPV6, "", "none"),
    (LDB_ABS, ETHERNET_HEADER + 6), (JEQ, socket.IPPROTO_TCP, "v6ports", ""),
    (JEQ, socket.IPPROTO_UDP, "v6ports", "none"),
    ("label", "v6ports"), (LDH_ABS, ETHERNET_HEADER + 42), (ST, 0), (LDH_ABS, ETHERNET_HEADER + 40),
    ("label", "mix"), (LDX_MEM, 0), (XOR_X, 0), (TAX, 0), (RSH_K, FLOW_BITS), (XOR_X, 0), (AND_K, FLOWS - 1),
    (ADD_K, FLOW_CLASSES[0]), (RET_A, 0),
    ("label", "none"), (RET_K, 0),
])


def flow_queue(source_port: int, destination_port: int) -> int:
    """The class FLOW_HASH sends a TCP or UDP packet between these ports to."""
    mixed = source_port ^ destination_port
    return FLOW_CLASSES[(mixed ^ mixed >> FLOW_BITS) & (FLOWS - 1)]
