"""Forwarded pod traffic on a node whose FORWARD policy is DROP (as Docker leaves it: iptables-nft's `filter`
table, chain `FORWARD`).

In netfilter a packet dropped by any base chain is dropped, whatever another table accepted, so an accept
in a table of pycni's own cannot help: the agent inserts, at the head of that chain, an accept for
traffic from and to the cluster's pod CIDR, commented `pycni` so it is recognisable (and so iptables-nft
still lists it: `-s 10.244.0.0/16 -m comment --comment ... -j ACCEPT`). Nothing is added where the policy
is accept, and nothing else in that table is changed. Legacy iptables (not nftables) is not seen here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pycni.host import nft

COMMENT = "pycni: pods of the cluster (FORWARD policy drop)"
TABLES = {4: ("ip", "filter", "FORWARD"), 6: ("ip6", "filter", "FORWARD")}


def forward_accepts(cluster_cidrs: Iterable[str]) -> list[str]:
    """Make sure each FORWARD chain with policy drop accepts the cluster's pods first; the accepts in
    place, as `family table chain: ip saddr X accept` (empty where no such chain drops)."""
    in_place: list[str] = []
    for cidr in (ipaddress.ip_network(c) for c in cluster_cidrs):
        family, table, chain = TABLES[cidr.version]
        listing = nft.chain_listing(family, table, chain)
        if listing is None or listing[0].get("policy") != "drop":
            continue
        have = {_match_of(rule) for rule in listing[1] if rule.get("comment") == COMMENT}
        missing = [direction for direction in ("daddr", "saddr") if (direction, str(cidr)) not in have]
        nft.run([_accept(family, table, chain, direction, cidr) for direction in missing])
        in_place += [f"{family} {table} {chain}: {family} {direction} {cidr} accept"
                     for direction in ("saddr", "daddr")]
    return in_place


def _accept(family: str, table: str, chain: str, direction: str, cidr) -> dict:
    protocol = "ip" if cidr.version == 4 else "ip6"
    return {"insert": {"rule": {
        "family": family, "table": table, "chain": chain, "comment": COMMENT,
        "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": direction}},
                            "right": {"prefix": {"addr": str(cidr.network_address), "len": cidr.prefixlen}}}},
                 {"counter": {"packets": 0, "bytes": 0}}, {"accept": None}]}}}


def _match_of(rule: dict) -> tuple[str, str]:
    """(saddr or daddr, CIDR) of one of our accept rules as nftables lists it."""
    for expr in rule.get("expr", []):
        match = expr.get("match") if isinstance(expr, dict) else None
        if not match:
            continue
        field = (match.get("left") or {}).get("payload", {}).get("field", "")
        right = match.get("right")
        if isinstance(right, dict) and "prefix" in right:
            return field, f"{right['prefix']['addr']}/{right['prefix']['len']}"
        return field, str(right)
    return "", ""
