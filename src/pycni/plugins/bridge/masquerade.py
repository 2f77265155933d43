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

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def exemptions(network: IPNetwork, also_exempt: Sequence[str], merged: bool = True) -> list[IPNetwork]:
    """The destinations a pod on `network` reaches without masquerade: its own subnet and `also_exempt` of its
    family, merged (nested, equal, repeated or adjacent CIDRs become one), because the kernel refuses an
    interval that overlaps one already in the set (`exempt4`/`exempt6` are interval sets). Unmerged: as an ADD
    of pycni 0.1.0 listed them (the subnet, then each other CIDR once), for a DEL after an upgrade."""
    same_family = [n for n in (ipaddress.ip_network(cidr, strict=False) for cidr in also_exempt)
                   if n.version == network.version]
    if merged:
        return list(ipaddress.collapse_addresses([network, *same_family]))  # type: ignore[type-var]
    return list(dict.fromkeys([network, *same_family]))


def _members(ips: list[IPConfig], also_exempt: Sequence[str], merged: bool = True) -> list[tuple[str, object, str]]:
    """(set, key as JSON, key in nft syntax) of every element a pod with `ips` owns."""
    members: list[tuple[str, object, str]] = []
    for ip in ips:
        interface = ipaddress.ip_interface(ip.address)
        suffix = str(interface.version)
        members.append((f"pods{suffix}", str(interface.ip), str(interface.ip)))
        for subnet in exemptions(interface.network, also_exempt, merged):
            members.append((f"exempt{suffix}", {"concat": [str(interface.ip), {
                "prefix": {"addr": str(subnet.network_address), "len": subnet.prefixlen}}]},
                f"{interface.ip} . {subnet}"))
    return members


def add(ips: list[IPConfig], tag: str, also_exempt: Sequence[str] = ()) -> None:
    """Masquerade traffic from `ips` leaving their subnet, except towards `also_exempt` (e.g. the cluster CIDR)."""
    TABLE.add([(name, key) for name, key, _ in _members(ips, also_exempt)], tag)


def remove(tag: str, ips: list[IPConfig] | None, also_exempt: Sequence[str] = ()) -> None:
    """Remove a pod's elements: by key when its addresses are known (O(1)), else by scanning for its tag. The
    keys of both the merged and the unmerged exemptions: each is looked up, only those there are deleted."""
    if ips:
        TABLE.remove(tag, list(dict.fromkeys((name, text) for merged in (True, False)
                                             for name, _, text in _members(ips, also_exempt, merged))))
    else:
        TABLE.remove(tag)


def missing(ips: list[IPConfig], tag: str) -> list[str]:
    """Addresses of `ips` that have no masquerade element tagged `tag` (each looked up by key: O(1) however
    many pods the node has)."""
    return [ip.ip for ip in ips
            if TABLE.comment_of(f"pods{ipaddress.ip_interface(ip.address).version}", ip.ip) != tag]
