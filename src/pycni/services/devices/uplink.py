"""Interfaces the node itself depends on, which no device resource may offer to a pod.

host-device moves whatever it is allocated into the pod: were the node's uplink ever listed, the first pod
asking for a NIC could cut the node off. An interface is off limits when it carries a default route, holds
the kubelet's node IP, is the way to the API server, is a bridge, a bridge port or a bond member, or is one
of pycni's own links (a pod's host-side veth, a shaping ifb). A resource can still offer one, but only by
naming it literally and opting in (`allowUplink`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from pycni.host import netlink

# pycni's own links: the bridge plugin's host-side veths (`veth` + 11 hex digits) and bandwidth's ifbs
OWN_VETH = re.compile(r"^veth[0-9a-f]{11}$")
AGGREGATES = ("bridge", "bond", "team", "openvswitch")


@dataclass(frozen=True)
class NodeAddresses:
    """What the node is known by: the kubelet's node IPs and the API server's address (either may be
    unknown, and then that rule does not apply)."""

    node_ips: tuple[str, ...] = ()
    api_server: str = ""


@dataclass
class Uplinks:
    """Interface name -> why the node needs it."""

    reasons: dict[str, str] = field(default_factory=dict)

    def excludes(self, name: str) -> str:
        return self.reasons.get(name, "")


def find(nl: netlink.Netlink, known: NodeAddresses, links: list[netlink.LinkInfo] | None = None) -> Uplinks:
    """The interfaces of this namespace that must not be offered, each with its reason."""
    links = nl.links() if links is None else links
    by_index = {link.index: link for link in links}
    reasons: dict[str, str] = {}

    def exclude(index: int, reason: str) -> None:
        link = by_index.get(index)
        if link is not None and link.name != "lo":
            reasons.setdefault(link.name, reason)

    for family in (netlink.AF_INET, netlink.AF_INET6):
        for dst, _, oif in nl.routes(family):
            if dst in ("0.0.0.0/0", "::/0"):
                exclude(oif, "carries the default route")
    wanted = {ipaddress.ip_address(ip) for ip in known.node_ips}
    if wanted:
        for index, addresses in nl.addresses_of_every_link().items():
            held = {ipaddress.ip_address(a) for a, _ in addresses} & wanted
            if held:
                exclude(index, f"holds the node IP {', '.join(sorted(map(str, held)))}")
    if known.api_server:
        exclude(nl.route_interface(known.api_server), f"is the way to the API server {known.api_server}")
    for link in links:
        master = by_index.get(link.master)
        if link.kind in AGGREGATES:
            exclude(link.index, f"is a {link.kind}")
        elif master is not None and master.kind in AGGREGATES:
            exclude(link.index, f"is a port of {master.kind} {master.name}")
        elif link.master:
            exclude(link.index, "has a master device")
        elif link.kind == "ifb":
            exclude(link.index, "is a shaping ifb")
        elif link.kind == "veth" and OWN_VETH.match(link.name):
            exclude(link.index, "is a pod's veth")
    return Uplinks(reasons)
