"""The nftables layout behind portmap: `inet pycni_hostport`, O(1) per pod.

Static, created once:
  - base chains `prerouting` (dstnat) and `output` (-100: nft rejects the `dstnat` keyword on the
    output hook) that jump to one chain per network, only for packets addressed to this node
    (`fib daddr type local`), so transit traffic is never touched;
  - `postrouting` (srcnat) masquerading DNATed hairpin (`pod . pod`), localhost (127.0.0.0/8 to a
    pod that has snat) and masqAll traffic, through sets.
Per network (created once per network, guarded by `create chain`): chain `net-<tag>` whose rules
DNAT through four maps (wildcard and per-hostIP, per family), with the network's conditionsV4/V6.
Per pod: map and set elements only, tagged with the attachment, added or removed in one transaction.
"""

from __future__ import annotations

from pycni.host import nft

FAMILY = "inet"
TABLE = "pycni_hostport"
GLOBAL_SETS = ("hairpin4", "hairpin6", "localhost4", "masqall4", "masqall6")

BASE = nft.OwnedTable(
    FAMILY,
    TABLE,
    """
    comment "pycni portmap (layout v1)"
    set hairpin4 { type ipv4_addr . ipv4_addr; }
    set hairpin6 { type ipv6_addr . ipv6_addr; }
    set localhost4 { type ipv4_addr; }
    set masqall4 { type ipv4_addr; }
    set masqall6 { type ipv6_addr; }
    chain prerouting { type nat hook prerouting priority dstnat; policy accept; }
    chain output { type nat hook output priority -100; policy accept; }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ct status dnat ip saddr . ip daddr @hairpin4 masquerade
        ct status dnat ip saddr 127.0.0.0/8 ip daddr @localhost4 masquerade
        ct status dnat ip daddr @masqall4 masquerade
        ct status dnat ip6 saddr . ip6 daddr @hairpin6 masquerade
        ct status dnat ip6 daddr @masqall6 masquerade
    }
    """,
    GLOBAL_SETS,
    probe_chain="postrouting",
)


def map_names(network_tag: str) -> dict[str, str]:
    """Per network: wildcard maps `any4`/`any6` and host-IP maps `ip4`/`ip6`."""
    return {kind: f"net-{network_tag}-{kind}" for kind in ("any4", "ip4", "any6", "ip6")}


def _network_script(network_tag: str, conditions_v4: list[str], conditions_v6: list[str]) -> str:
    chain = f"net-{network_tag}"
    maps = map_names(network_tag)
    v4 = " ".join(conditions_v4)
    v6 = " ".join(conditions_v6)
    return f"""
create chain {FAMILY} {TABLE} {chain}
table {FAMILY} {TABLE} {{
    map {maps['any4']} {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}
    map {maps['ip4']} {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}
    map {maps['any6']} {{ type inet_proto . inet_service : ipv6_addr . inet_service; }}
    map {maps['ip6']} {{ type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }}
    chain {chain} {{
        meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @{maps['ip4']}
        meta nfproto ipv4 dnat ip to meta l4proto . th dport map @{maps['any4']}
        meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @{maps['ip6']}
        meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @{maps['any6']}
    }}
    chain prerouting {{
        meta nfproto ipv4 {v4} fib daddr type local jump {chain}
        meta nfproto ipv6 {v6} fib daddr type local jump {chain}
    }}
    chain output {{
        meta nfproto ipv4 {v4} fib daddr type local jump {chain}
        meta nfproto ipv6 {v6} fib daddr type local jump {chain}
    }}
}}
"""


def ensure(network_tag: str, conditions_v4: list[str], conditions_v6: list[str]) -> None:
    BASE.ensure()
    nft.create_guarded(_network_script(network_tag, conditions_v4, conditions_v6), lambda: chain_exists(network_tag))


def chain_exists(network_tag: str) -> bool:
    return nft.chain_exists(FAMILY, TABLE, f"net-{network_tag}")


def table_exists() -> bool:
    return BASE.exists()
