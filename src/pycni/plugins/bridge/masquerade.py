"""ipMasq on nftables: pods' traffic to outside their own subnet leaves with the node's address.

One table `inet pycni_masq` with a static postrouting chain; each pod adds its
address to `pods4`/`pods6` and `address . subnet` to `exempt4`/`exempt6`,
tagged with its attachment, so the per-pod cost is constant and DEL removes
exactly its own elements even when the pod's namespace is already gone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pycni.host import nft
from pycni.protocol.result import IPConfig

TABLE = nft.OwnedTable(
    "inet",
    "pycni_masq",
    """
    comment "pycni bridge ipMasq (layout v1)"
    set pods4 { type ipv4_addr; }
    set exempt4 { type ipv4_addr . ipv4_addr; flags interval; }
    set pods6 { type ipv6_addr; }
    set exempt6 { type ipv6_addr . ipv6_addr; flags interval; }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr @pods4 ip daddr != 224.0.0.0/4 ip saddr . ip daddr != @exempt4 masquerade
        ip6 saddr @pods6 ip6 daddr != ff00::/8 ip6 saddr . ip6 daddr != @exempt6 masquerade
    }
    """,
    ("pods4", "exempt4", "pods6", "exempt6"),
    probe_chain="postrouting",
)


def _members(ips: list[IPConfig], also_exempt: list[str]) -> list[tuple[str, object, str]]:
    """(set, key as JSON, key in nft syntax) of every element a pod with `ips` owns."""
    members: list[tuple[str, object, str]] = []
    for ip in ips:
        interface = ipaddress.ip_interface(ip.address)
        suffix = str(interface.version)
        members.append((f"pods{suffix}", str(interface.ip), str(interface.ip)))
        exempt = [interface.network] + [n for n in (ipaddress.ip_network(c, strict=False) for c in also_exempt)
                                        if n.version == interface.version and n != interface.network]
        for subnet in exempt:
            members.append((f"exempt{suffix}", {"concat": [str(interface.ip), {
                "prefix": {"addr": str(subnet.network_address), "len": subnet.prefixlen}}]},
                f"{interface.ip} . {subnet}"))
    return members


def add(ips: list[IPConfig], tag: str, also_exempt: Sequence[str] = ()) -> None:
    """Masquerade traffic from `ips` leaving their subnet, except towards `also_exempt` (e.g. the cluster CIDR)."""
    TABLE.add([(name, key) for name, key, _ in _members(ips, list(also_exempt))], tag)


def remove(tag: str, ips: list[IPConfig] | None, also_exempt: Sequence[str] = ()) -> None:
    """Remove a pod's elements: by key when its addresses are known (O(1)), else by scanning for its tag."""
    if ips:
        TABLE.remove(tag, [(name, text) for name, _, text in _members(ips, list(also_exempt))])
    else:
        TABLE.remove(tag)


def missing(ips: list[IPConfig], tag: str) -> list[str]:
    """Addresses of `ips` that have no masquerade element tagged `tag` (each looked up by key: O(1) however
    many pods the node has)."""
    return [ip.ip for ip in ips
            if TABLE.comment_of(f"pods{ipaddress.ip_interface(ip.address).version}", ip.ip) != tag]
