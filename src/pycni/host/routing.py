"""The routes agent's rtnetlink, over pyroute2: its VXLAN device, its routes (marked by their protocol
number), the neighbour and FDB entries on that device, and the kernel's notifications of changes to them.

A long-lived service, so pyroute2 serves (its import cost is paid once); the CNI plugins' per-call
rtnetlink stays in `rtnl`/`netlink`. Nothing here touches a route of another protocol, or a neighbour or
FDB entry of another device.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
)

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
IFA_F_NODAD = 0x02
MAIN_TABLE = 254
AF_BRIDGE = 7
RECEIVE_BUFFER = 8 << 20  # a burst of pods' links and addresses must not overrun the subscription

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, kw_only=True)
class Uplink:
    """A real interface of this node: its name, MTU and the subnets on it."""

    name: str
    mtu: int
    networks: tuple[IPNetwork, ...] = ()

    def reaches(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks if net.version == address.version)


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gateway: IPAddress
    device: str
    onlink: bool = False


@dataclass(frozen=True)
class Neighbour:
    address: IPAddress
    mac: str


@dataclass(frozen=True)
class Forwarding:
    mac: str
    remote: IPAddress


@dataclass
class Entries:
    """Routes (by destination), neighbour entries on the VXLAN device (by address) and its FDB entries (by
    MAC): what the agent wants, or what the kernel has of the agent's."""

    routes: dict[IPNetwork, Route] = field(default_factory=dict)
    neighbours: dict[IPAddress, Neighbour] = field(default_factory=dict)
    forwardings: dict[str, Forwarding] = field(default_factory=dict)

    def count(self) -> int:
        return len(self.routes) + len(self.neighbours) + len(self.forwardings)


@dataclass(frozen=True, kw_only=True)
class Vxlan:
    """This node's VXLAN device."""

    name: str
    vni: int
    port: int
    mac: str
    local: IPAddress
    uplink: str
    mtu: int
    addresses: tuple[IPAddress, ...]


class RoutingError(OSError):
    pass


@dataclass(frozen=True)
class Change:
    """A kernel notification that concerns the agent: what kind of entry, whether it went away, and the
    entry as the kernel now has it (None for a removal or the device)."""

    kind: str  # "route", "neighbour", "forwarding", "device", "link", "address", "overrun"
    removed: bool
    entry: Route | Neighbour | Forwarding | None = None
    link: str = ""  # the link's name, for "link"


class Routing:
    """The agent's view of the node's kernel, over one rtnetlink socket (one thread uses it)."""

    def __init__(self, protocol: int, vxlan_name: str) -> None:
        self.protocol = protocol
        self.vxlan_name = vxlan_name
        self._ipr = IPRoute()
        self._names: dict[int, str] = {}  # index -> name, and back: kept by the link notifications, so a
        self._indexes: dict[str, int] = {}  # write costs one request, not a lookup and the request

    def close(self) -> None:
        self._ipr.close()

    # ---------------------------------------------------------------- links

    def uplinks(self) -> list[Uplink]:
        """The node's real interfaces that are up and hold an address that is not link-local: not loopback,
        not the agent's device, not a bridge (cni0), an ifb or a port of a bridge (a pod's host veth). A veth
        of its own counts: a node in a container or a namespace has one as its NIC."""
        addresses: dict[int, list] = {}
        for msg in self._ipr.get_addr():
            if msg.get("IFA_ADDRESS") is None:
                continue
            addresses.setdefault(msg["index"], []).append(
                ipaddress.ip_network(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}", strict=False))
        found = []
        for link in self._ipr.get_links():
            name = link.get("IFLA_IFNAME")
            info = link.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info else None
            self._names[link["index"]] = name
            if (link["flags"] & 1 == 0 or name == "lo" or name == self.vxlan_name
                    or kind in ("bridge", "ifb", "vxlan") or link.get("IFLA_MASTER")
                    or link["index"] not in addresses):
                continue
            networks = tuple(n for n in addresses[link["index"]] if not n.is_link_local and not n.is_loopback)
            if networks:
                found.append(Uplink(name=name, mtu=link.get("IFLA_MTU"), networks=networks))
        return found

    def _index(self, name: str) -> int | None:
        if name in self._indexes:
            return self._indexes[name]
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            return None
        self._names[found[0]] = name
        self._indexes[name] = found[0]
        return found[0]

    def _forget(self, name: str) -> None:
        index = self._indexes.pop(name, None)
        if index is not None:
            self._names.pop(index, None)

    def vxlan_index(self) -> int | None:
        return self._index(self.vxlan_name)

    def ensure_vxlan(self, want: Vxlan) -> tuple[int, bool]:
        """The VXLAN device as `want` says, made (or remade, when its VNI, port, local address or lower
        device differ) only when it is not right; (its index, whether anything was changed)."""
        index = self._index(want.name)
        changed = False
        uplink = self._index(want.uplink)
        if uplink is None:
            raise RoutingError(f"uplink {want.uplink} is gone")
        if index is not None and not self._vxlan_matches(index, want, uplink):
            self._ipr.link("del", index=index)
            self._forget(want.name)
            index = None
        if index is None:
            self._ipr.link("add", ifname=want.name, kind="vxlan", vxlan_id=want.vni, vxlan_port=want.port,
                           vxlan_learning=0, vxlan_link=uplink, vxlan_local=str(want.local), address=want.mac,
                           mtu=want.mtu)
            index = self._index(want.name)
            changed = True
        assert index is not None
        link = self._ipr.get_links(index)[0]
        if link.get("IFLA_ADDRESS") != want.mac:
            self._ipr.link("set", index=index, address=want.mac)
            changed = True
        if link.get("IFLA_MTU") != want.mtu:
            self._ipr.link("set", index=index, mtu=want.mtu)
            changed = True
        if not link["flags"] & 1:
            self._ipr.link("set", index=index, state="up")
            changed = True
        have = {ipaddress.ip_address(m.get("IFA_ADDRESS")) for m in self._ipr.get_addr(index=index)
                if m["scope"] == 0}
        for address in want.addresses:
            if address not in have:
                self._ipr.addr("add", index=index, address=str(address), prefixlen=address.max_prefixlen,
                               flags=IFA_F_NODAD)
                changed = True
        for address in have - set(want.addresses):
            self._ipr.addr("del", index=index, address=str(address), prefixlen=address.max_prefixlen)
            changed = True
        return index, changed

    def _vxlan_matches(self, index: int, want: Vxlan, uplink: int) -> bool:
        info = self._ipr.get_links(index)[0].get("IFLA_LINKINFO")
        if not info or info.get("IFLA_INFO_KIND") != "vxlan":
            return False
        data = info.get("IFLA_INFO_DATA")
        local = data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6")
        return (data.get("IFLA_VXLAN_ID") == want.vni and data.get("IFLA_VXLAN_PORT") == want.port
                and data.get("IFLA_VXLAN_LINK") == uplink and str(local) == str(want.local)
                and not data.get("IFLA_VXLAN_LEARNING"))

    # ---------------------------------------------------------------- entries

    def entries(self) -> Entries:
        """What the kernel has of the agent's: routes of its protocol in the main table, and the
        permanent neighbour and FDB entries on its VXLAN device."""
        self._indexes.clear()  # the full read: names looked up again
        found = Entries()
        for msg in self._ipr.route("dump", table=MAIN_TABLE, proto=self.protocol):
            route = self._route_of(msg)
            if route is not None:
                found.routes[route.dst] = route
        index = self.vxlan_index()
        if index is not None:
            for msg in self._ipr.neigh("dump", ifindex=index):
                neighbour = _neighbour_of(msg)
                if neighbour is not None:
                    found.neighbours[neighbour.address] = neighbour
            for msg in self._ipr.fdb("dump", ifindex=index):
                forwarding = _forwarding_of(msg)
                if forwarding is not None:
                    found.forwardings[forwarding.mac] = forwarding
        return found

    def put(self, entry: Route | Neighbour | Forwarding) -> None:
        """Write an entry (replacing what is at its key). Raises RoutingError with the kernel's reason."""
        try:
            if isinstance(entry, Route):
                index = self._index(entry.device)
                if index is None:
                    raise RoutingError(f"device {entry.device} is gone")
                self._ipr.route("replace", dst=str(entry.dst), gateway=str(entry.gateway), oif=index,
                                proto=self.protocol, table=MAIN_TABLE, flags=RTNH_F_ONLINK if entry.onlink else 0)
            elif isinstance(entry, Neighbour):
                self._ipr.neigh("replace", dst=str(entry.address), lladdr=entry.mac, ifindex=self._vxlan(),
                                state=NUD_PERMANENT)
            else:
                self._ipr.fdb("replace", ifindex=self._vxlan(), lladdr=entry.mac, dst=str(entry.remote),
                              state=NUD_PERMANENT, flags=NTF_SELF)
        except NetlinkError as e:
            raise RoutingError(f"cannot make {describe(entry)}: {e.args[1] if len(e.args) > 1 else e}") from None

    def remove(self, entry: Route | Neighbour | Forwarding) -> None:
        """Remove an entry of the agent's; one already gone is no error."""
        try:
            if isinstance(entry, Route):
                self._ipr.route("del", dst=str(entry.dst), proto=self.protocol, table=MAIN_TABLE)
            else:
                index = self.vxlan_index()
                if index is None:
                    return
                if isinstance(entry, Neighbour):
                    self._ipr.neigh("del", dst=str(entry.address), ifindex=index)
                else:
                    self._ipr.fdb("del", ifindex=index, lladdr=entry.mac, dst=str(entry.remote), flags=NTF_SELF)
        except NetlinkError as e:
            if e.code not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                raise RoutingError(f"cannot remove {describe(entry)}: {e}") from None

    def _vxlan(self) -> int:
        index = self.vxlan_index()
        if index is None:
            raise RoutingError(f"device {self.vxlan_name} is gone")
        return index

    def _route_of(self, msg) -> Route | None:
        if msg["table"] != MAIN_TABLE and msg.get("RTA_TABLE") != MAIN_TABLE:
            return None
        dst, gateway = msg.get("RTA_DST"), msg.get("RTA_GATEWAY")
        if msg["proto"] != self.protocol or dst is None or gateway is None:
            return None
        oif = msg.get("RTA_OIF")
        name = self._names.get(oif) or self._name_of(oif)
        return Route(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"), ipaddress.ip_address(gateway), name,
                     onlink=bool(msg["flags"] & RTNH_F_ONLINK))

    def _name_of(self, index: int | None) -> str:
        if index is None:
            return ""
        links = self._ipr.get_links(index)
        name = links[0].get("IFLA_IFNAME") if links else ""
        self._names[index] = name
        return name

    # ---------------------------------------------------------------- notifications

    def notifications(self, stop) -> Iterator[Change]:
        """The kernel's notifications about the agent's entries, its device, the node's links and addresses,
        until `stop` is set (seen at the next notification: the caller's thread is a daemon); an overrun of
        the socket's buffer (notifications lost) is a Change "overrun"."""
        with IPRoute(rcvbuf=RECEIVE_BUFFER) as listener:
            listener.bind(groups=RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_NEIGH | RTMGRP_LINK
                          | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
            while not stop.is_set():
                try:
                    messages = listener.get()
                except (NetlinkError, OSError) as e:
                    if getattr(e, "code", None) == errno.ENOBUFS or getattr(e, "errno", None) == errno.ENOBUFS:
                        yield Change("overrun", False)
                        continue
                    raise
                for msg in messages:
                    change = self._change_of(msg)
                    if change is not None:
                        yield change

    def _change_of(self, msg) -> Change | None:
        event = msg.get("event", "")
        removed = event.startswith("RTM_DEL")
        if event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
            if msg["proto"] != self.protocol:
                return None
            return Change("route", removed, self._route_of(msg) if not removed else _route_key(msg))
        if event in ("RTM_NEWNEIGH", "RTM_DELNEIGH"):
            if self._names.get(msg["ifindex"]) != self.vxlan_name:
                return None
            entry = _forwarding_of(msg) if msg["family"] == AF_BRIDGE else _neighbour_of(msg, removed=removed)
            return Change("forwarding" if msg["family"] == AF_BRIDGE else "neighbour", removed, entry)
        if event in ("RTM_NEWLINK", "RTM_DELLINK"):
            name = msg.get("IFLA_IFNAME")
            if removed:
                self._forget(name or self._names.get(msg["index"], ""))
            elif name:
                if self._indexes.get(name) not in (None, msg["index"]):
                    self._forget(name)  # the name now belongs to another link
                self._names[msg["index"]] = name
            if name == self.vxlan_name:
                return Change("device", removed or not msg["flags"] & 1)
            return Change("link", removed, link=name or "")
        if event in ("RTM_NEWADDR", "RTM_DELADDR"):
            address = msg.get("IFA_ADDRESS")
            if address is not None and ipaddress.ip_address(address).is_link_local:
                return None  # every pod's host veth gets one; never an uplink's subnet
            return Change("address", removed)
        return None


def _route_key(msg) -> Route | None:
    dst = msg.get("RTA_DST")
    if dst is None:
        return None
    gateway = msg.get("RTA_GATEWAY")
    network = ipaddress.ip_network(f"{dst}/{msg['dst_len']}")
    return Route(network, ipaddress.ip_address(gateway) if gateway else network.network_address, "")


def _neighbour_of(msg, removed: bool = False) -> Neighbour | None:
    """A permanent neighbour entry; for a removal only its address counts (the kernel's notice has no MAC)."""
    dst, mac = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
    if dst is None or (not removed and (mac is None or not msg["state"] & NUD_PERMANENT)):
        return None
    return Neighbour(ipaddress.ip_address(dst), mac or "")


def _forwarding_of(msg) -> Forwarding | None:
    dst, mac = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
    if dst is None or mac is None or mac == "00:00:00:00:00:00":
        return None
    return Forwarding(mac, ipaddress.ip_address(dst))


def describe(entry: Route | Neighbour | Forwarding) -> str:
    """The entry as `ip`/`bridge` would show it."""
    if isinstance(entry, Route):
        return f"route {entry.dst} via {entry.gateway} dev {entry.device}{' onlink' if entry.onlink else ''}"
    if isinstance(entry, Neighbour):
        return f"neighbour {entry.address} lladdr {entry.mac}"
    return f"fdb {entry.mac} dst {entry.remote}"
