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
from pycni.services.devices.model import NodeAddresses

__all__ = ["NodeAddresses", "NodeView", "Uplinks", "find", "uplinks_of"]

# pycni's own links: the bridge plugin's host-side veths (`veth` + 11 hex digits) and bandwidth's ifbs
OWN_VETH = re.compile(r"^veth[0-9a-f]{11}$")
AGGREGATES = ("bridge", "bond", "team", "openvswitch")


@dataclass
class Uplinks:
    """Interface name -> why the node needs it."""

    reasons: dict[str, str] = field(default_factory=dict)

    def excludes(self, name: str) -> str:
        return self.reasons.get(name, "")


@dataclass(frozen=True)
class NodeView:
    """What the uplink rules read of a namespace: its links, the interfaces its default routes leave by, the
    addresses on each interface, and the interface toward the API server (0 when unknown)."""

    links: list[netlink.LinkInfo]
    default_route_interfaces: tuple[int, ...] = ()
    addresses: dict[int, list[str]] = field(default_factory=dict)
    api_server_interface: int = 0


def find(nl: netlink.Netlink, known: NodeAddresses, links: list[netlink.LinkInfo] | None = None) -> Uplinks:
    """The interfaces of this namespace that must not be offered, each with its reason."""
    links = nl.links() if links is None else links
    defaults = tuple(oif for family in (netlink.AF_INET, netlink.AF_INET6) for dst, _, oif in nl.routes(family)
                     if dst in ("0.0.0.0/0", "::/0"))
    addresses = {index: [a for a, _ in held] for index, held in nl.addresses_of_every_link().items()} \
        if known.node_ips else {}
    api = nl.route_interface(known.api_server) if known.api_server else 0
    return uplinks_of(NodeView(links, defaults, addresses, api), known)


def uplinks_of(view: NodeView, known: NodeAddresses) -> Uplinks:
    """The rules on what was read (pure: the unit tests give it a namespace of their own making)."""
    by_index = {link.index: link for link in view.links}
    reasons: dict[str, str] = {}

    def exclude(index: int, reason: str) -> None:
        link = by_index.get(index)
        if link is not None and link.name != "lo":
            reasons.setdefault(link.name, reason)

    for index in view.default_route_interfaces:
        exclude(index, "carries the default route")
    wanted = {ipaddress.ip_address(ip) for ip in known.node_ips}
    for index, addresses in view.addresses.items():
        held = {ipaddress.ip_address(a) for a in addresses} & wanted
        if held:
            exclude(index, f"holds the node IP {', '.join(sorted(map(str, held)))}")
    if known.api_server:
        exclude(view.api_server_interface, f"is the way to the API server {known.api_server}")
    for link in view.links:
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
