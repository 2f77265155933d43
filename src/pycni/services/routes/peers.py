"""What the routes agent wants on this node, worked out from the Node objects alone (pure: tested without a
kernel or an API server).

For every other node with pod CIDRs and an address, per pod CIDR:
- a **direct** route (`podCIDR via nodeIP dev uplink`) when the node's address of that family is on one of
  the uplink's subnets (a neighbour: flannel's host-gw);
- else the **VXLAN** path: a route `podCIDR via VTEP dev pycni.vxlan onlink`, where VTEP is the first address
  of the peer's pod CIDR (flannel's `.0`), a permanent neighbour entry `VTEP lladdr peerMAC`, and a
  permanent FDB entry `peerMAC dst nodeIP`. The peer's MAC is the one it publishes on its Node object.

The kernel's entries and the wanted ones are compared as `Entries`; `changes` says what to write and what
to remove, and nothing else is touched.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pycni.host.routing import Entries, Forwarding, IPAddress, IPNetwork, Neighbour, Route, Uplink, Vxlan
from pycni.services.routes import VTEP_ANNOTATION, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_VNI

DIRECT, VXLAN, WAITING = "direct", "vxlan", "waiting"


@dataclass(frozen=True, kw_only=True)
class NodeView:
    """The parts of a Node object that routing reads."""

    name: str
    pod_cidrs: tuple[IPNetwork, ...] = ()
    internal_ips: tuple[IPAddress, ...] = ()
    vtep_mac: str = ""
    resource_version: str = field(default="", compare=False)

    @classmethod
    def from_api(cls, node: Mapping) -> NodeView:
        """From a Node object's JSON; malformed CIDRs, addresses or MACs are left out (a node a controller
        has not finished is waited for, not fatal)."""
        metadata = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        addresses = [a.get("address", "") for a in status.get("addresses") or []
                     if isinstance(a, Mapping) and a.get("type") == "InternalIP"]
        mac = str((metadata.get("annotations") or {}).get(VTEP_ANNOTATION, "")).lower()
        return cls(name=str(metadata.get("name", "")), pod_cidrs=tuple(_parsed(cidrs, _network)),
                   internal_ips=tuple(_parsed(addresses, ipaddress.ip_address)),
                   vtep_mac=mac if is_unicast_mac(mac) else "",
                   resource_version=str(metadata.get("resourceVersion", "")))

    def to_json(self) -> dict:
        """A Node object's shape again (the agent's cache of the last list survives an API outage at boot)."""
        return {"metadata": {"name": self.name, "resourceVersion": self.resource_version,
                             "annotations": {VTEP_ANNOTATION: self.vtep_mac} if self.vtep_mac else {}},
                "spec": {"podCIDRs": [str(c) for c in self.pod_cidrs]},
                "status": {"addresses": [{"type": "InternalIP", "address": str(a)} for a in self.internal_ips]}}

    def address_of(self, family: int) -> IPAddress | None:
        return next((a for a in self.internal_ips if a.version == family), None)


def _network(text: str) -> IPNetwork:
    return ipaddress.ip_network(text, strict=True)


def _parsed(values: Iterable, parse) -> list:
    parsed = []
    for value in values:
        try:
            parsed.append(parse(str(value)))
        except ValueError:
            continue
    return parsed


def is_unicast_mac(mac: str) -> bool:
    parts = mac.split(":")
    try:
        return len(parts) == 6 and all(len(p) == 2 for p in parts) and not int(parts[0], 16) & 1
    except ValueError:
        return False


def vtep_mac_of(node_name: str) -> str:
    """The node's VTEP MAC, derived from its name: locally administered and unicast, the same after every
    reboot, so what the node publishes never goes stale."""
    digest = bytearray(hashlib.sha256(f"pycni-vtep:{node_name}".encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


def vtep_address(cidr: IPNetwork) -> IPAddress:
    """The address a node's VXLAN device answers for: the first of its pod CIDR (the bridge gateway is the
    next one), as flannel does."""
    return cidr.network_address


@dataclass(frozen=True)
class Changes:
    put: tuple[Route | Neighbour | Forwarding, ...] = ()
    remove: tuple[Route | Neighbour | Forwarding, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.put or self.remove)


def changes(wanted: Entries, present: Entries) -> Changes:
    """What to write (missing or different) and what to remove (the agent's, no longer wanted). Removals
    come first in `remove`'s order of use: routes before the neighbours and FDB entries they lean on."""
    put: list = []
    remove: list = []
    tables: tuple[tuple[dict, dict], ...] = ((wanted.forwardings, present.forwardings),
                                             (wanted.neighbours, present.neighbours), (wanted.routes, present.routes))
    for want, have in tables:
        put.extend(entry for key, entry in want.items() if have.get(key) != entry)
    for want, have in reversed(tables):
        remove.extend(entry for key, entry in have.items() if key not in want)
    return Changes(tuple(put), tuple(remove))


@dataclass(frozen=True, kw_only=True)
class Path:
    """How one pod CIDR of a peer is reached."""

    cidr: IPNetwork
    via: str  # DIRECT, VXLAN or WAITING
    gateway: str = ""
    reason: str = ""  # why WAITING
    overlay: bool = False  # WAITING for what VXLAN needs

@dataclass(frozen=True, kw_only=True)
class Settings:
    vxlan_device: str = VXLAN_DEVICE
    vni: int = VXLAN_VNI
    port: int = VXLAN_PORT


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything the agent wants on this node."""

    paths: dict[str, tuple[Path, ...]]  # by peer node name
    entries: Entries
    vxlan: Vxlan | None
    pod_mtu: int  # the MTU pods should get: the overlay's when any peer is reached by VXLAN
    waiting: str = ""  # why nothing can be planned yet (this node has no pod CIDR, no address...)


def plan(own: NodeView | None, others: Iterable[NodeView], uplinks: Iterable[Uplink],
         settings: Settings = Settings()) -> Plan:
    """The routes, neighbour and FDB entries and the VXLAN device this node wants, given itself, the other
    nodes, and its own real interfaces."""
    uplinks = tuple(uplinks)
    if own is None:
        return Plan(paths={}, entries=Entries(), vxlan=None, pod_mtu=0, waiting="this node's Node object is not "
                    "in the API yet")
    underlay = own.address_of(4) or own.address_of(6)
    carrier = next((u for u in uplinks if underlay is not None and u.reaches(underlay)), None)
    if underlay is None or carrier is None:
        return Plan(paths={}, entries=Entries(), vxlan=None, pod_mtu=0,
                    waiting="this node has no InternalIP on any of its interfaces" if underlay is None or uplinks
                    else "this node's interfaces are not known yet")
    vxlan = Vxlan(name=settings.vxlan_device, vni=settings.vni, port=settings.port, mac=vtep_mac_of(own.name),
                  local=underlay, uplink=carrier.name, mtu=carrier.mtu - VXLAN_OVERHEAD[underlay.version],
                  addresses=tuple(vtep_address(c) for c in own.pod_cidrs))
    entries = Entries()
    paths: dict[str, tuple[Path, ...]] = {}
    for peer in sorted(others, key=lambda n: n.name):
        if peer.name == own.name:
            continue
        paths[peer.name] = tuple(_path(peer, cidr, underlay, uplinks, vxlan, entries) for cidr in peer.pod_cidrs)
    # a peer waiting for its VTEP MAC will be reached over VXLAN: pods started meanwhile get the overlay's MTU
    any_vxlan = any(p.via == VXLAN or p.overlay for ps in paths.values() for p in ps)
    real_mtu = min(u.mtu for u in uplinks)
    return Plan(paths=paths, entries=entries, vxlan=vxlan, pod_mtu=min(vxlan.mtu, real_mtu) if any_vxlan else real_mtu)


def _path(peer: NodeView, cidr: IPNetwork, underlay: IPAddress, uplinks: tuple[Uplink, ...], vxlan: Vxlan,
          entries: Entries) -> Path:
    neighbour_address = peer.address_of(cidr.version)
    direct = next((u for u in uplinks if neighbour_address is not None and u.reaches(neighbour_address)), None)
    if direct is not None and neighbour_address is not None:
        entries.routes[cidr] = Route(cidr, neighbour_address, direct.name)
        return Path(cidr=cidr, via=DIRECT, gateway=str(neighbour_address))
    remote = peer.address_of(underlay.version)
    if remote is None:
        return Path(cidr=cidr, via=WAITING, reason=f"no IPv{underlay.version} InternalIP to reach it over VXLAN")
    if not peer.vtep_mac:
        return Path(cidr=cidr, via=WAITING, reason=f"no {VTEP_ANNOTATION} annotation yet (its agent publishes it)",
                    overlay=True)
    gateway = vtep_address(cidr)
    entries.routes[cidr] = Route(cidr, gateway, vxlan.name, onlink=True)
    entries.neighbours[gateway] = Neighbour(gateway, peer.vtep_mac)
    entries.forwardings[peer.vtep_mac] = Forwarding(peer.vtep_mac, remote)
    return Path(cidr=cidr, via=VXLAN, gateway=str(gateway))
