"""The routes agent's rtnetlink: its VXLAN device, its routes (marked by their protocol number), the
neighbour and FDB entries on that device, and the kernel's notifications of changes to them.

Packed and parsed with `rtnl`, as the plugins' requests are, rather than with pyroute2: the agent runs on
every node, and pyroute2 cost it 21 MiB of its RSS (the import) and ~0.3 ms of decoding per message,
held under the GIL, while its first sync on a node of 1,000 peers writes 2,000 entries and hears 2,000
notifications back (1.5 s measured with pyroute2, one request at a time; batched here, see `put_many`).
Nothing here touches a route of another protocol, or a neighbour or FDB entry of another device.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pycni.host import rtnl
from pycni.host.netlink import Netlink, NetlinkFailure
from pycni.protocol.errors import CNIError

MAIN_TABLE = rtnl.RT_TABLE_MAIN
RECEIVE_BUFFER = 8 << 20  # a burst of pods' links and addresses must not overrun the subscription
BATCH = 100  # requests per datagram: their acknowledgements must fit the socket's receive buffer
GROUPS = (rtnl.RTMGRP_IPV4_ROUTE | rtnl.RTMGRP_IPV6_ROUTE | rtnl.RTMGRP_NEIGH | rtnl.RTMGRP_LINK
          | rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV6_IFADDR)
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}

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


Entry = Route | Neighbour | Forwarding


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
        self._nl = Netlink(rtnl.Channel())
        self._names: dict[int, str] = {}  # index -> name, and back: kept by the link notifications, so a
        self._indexes: dict[str, int] = {}  # write costs one request, not a lookup and the request

    def close(self) -> None:
        self._nl.close()

    # ---------------------------------------------------------------- links

    def uplinks(self) -> list[Uplink]:
        """The node's real interfaces that are up and hold an address that is not link-local: not loopback,
        not the agent's device, not a bridge (cni0), an ifb or a port of a bridge (a pod's host veth). A veth
        of its own counts: a node in a container or a namespace has one as its NIC."""
        try:
            addresses = self._nl.addresses_of_every_link()
            links = self._nl.links()
        except CNIError as e:
            raise RoutingError(str(e)) from None
        found = []
        for link in links:
            self._names[link.index] = link.name
            if (not link.up or link.name in ("lo", self.vxlan_name) or link.kind in ("bridge", "ifb", "vxlan")
                    or link.master or link.index not in addresses):
                continue
            networks = tuple(n for n in (ipaddress.ip_network(f"{a}/{p}", strict=False)
                                         for a, p in addresses[link.index])
                             if not n.is_link_local and not n.is_loopback)
            if networks:
                found.append(Uplink(name=link.name, mtu=link.mtu, networks=networks))
        return found

    def _index(self, name: str) -> int | None:
        if name in self._indexes:
            return self._indexes[name]
        found = self._nl.find_link(name)
        if found is None:
            return None
        self._names[found] = name
        self._indexes[name] = found
        return found

    def _forget(self, name: str) -> None:
        index = self._indexes.pop(name, None)
        if index is not None:
            self._names.pop(index, None)

    def vxlan_index(self) -> int | None:
        return self._index(self.vxlan_name)

    def ensure_vxlan(self, want: Vxlan) -> tuple[int, bool]:
        """The VXLAN device as `want` says, made (or remade, when its VNI, port, local address or lower
        device differ) only when it is not right; (its index, whether anything was changed)."""
        try:
            return self._ensure_vxlan(want)
        except CNIError as e:
            raise RoutingError(f"VXLAN device {want.name}: {e}") from None

    def _ensure_vxlan(self, want: Vxlan) -> tuple[int, bool]:
        uplink = self._index(want.uplink)
        if uplink is None:
            raise RoutingError(f"uplink {want.uplink} is gone")
        self._forget(want.name)
        index, data = self._vxlan_data(want.name)
        changed = False
        if index and not _vxlan_matches(data, want, uplink):
            self._nl.delete_link(index)
            index = 0
        if not index:
            family = socket.AF_INET6 if want.local.version == 6 else socket.AF_INET
            self._nl.create_link(f"creating VXLAN device {want.name}", want.name, "vxlan",
                                 mtu=want.mtu, address=want.mac, data=b"".join((
                                     rtnl.u32_attribute(rtnl.IFLA_VXLAN_ID, want.vni),
                                     rtnl.u32_attribute(rtnl.IFLA_VXLAN_LINK, uplink),
                                     rtnl.attribute(rtnl.IFLA_VXLAN_LOCAL6 if want.local.version == 6
                                                    else rtnl.IFLA_VXLAN_LOCAL,
                                                    socket.inet_pton(family, str(want.local))),
                                     rtnl.attribute(rtnl.IFLA_VXLAN_PORT, rtnl.BE16.pack(want.port)),
                                     rtnl.u8_attribute(rtnl.IFLA_VXLAN_LEARNING, 0))))
            changed = True
        link = self._nl.link_named(want.name)
        if link is None:
            raise RoutingError(f"device {want.name} vanished as it was made")
        self._names[link.index] = link.name
        self._indexes[link.name] = link.index
        if link.mac != want.mac or link.mtu != want.mtu or not link.up:
            self._nl.set_link(link.index, mtu=want.mtu, address=want.mac, flags=1, change=1)
            changed = True
        have = {a for a in (ipaddress.ip_address(text) for text, _ in self._nl.addresses(link.index))
                if not a.is_link_local}
        for address in want.addresses:
            if address not in have:
                self._nl.add_address(link.index, f"{address}/{address.max_prefixlen}", nodad=True)
                changed = True
        for address in have - set(want.addresses):
            self._nl.delete_address(link.index, f"{address}/{address.max_prefixlen}")
            changed = True
        return link.index, changed

    def _vxlan_data(self, name: str) -> tuple[int, dict[int, bytes]]:
        """(index, IFLA_INFO_DATA attributes) of the link `name` if it is a VXLAN device ((index, {}) if it
        is another kind, (0, {}) if there is none)."""
        answer = self._nl.exchange(f"reading link {name}", [(rtnl.RTM_GETLINK, 0, rtnl.IFINFO.pack(0, 0, 0, 0, 0)
                                                             + rtnl.name_attribute(rtnl.IFLA_IFNAME, name))])[0]
        if answer.error == errno.ENODEV:
            return 0, {}
        for _, payload in answer.check():
            index = rtnl.IFINFO.unpack_from(payload)[2]
            info = rtnl.attributes(rtnl.attributes(payload, rtnl.IFINFO.size).get(rtnl.IFLA_LINKINFO, b""))
            if rtnl.text(info.get(rtnl.IFLA_INFO_KIND)) != "vxlan":
                return index, {}
            return index, rtnl.attributes(info.get(rtnl.IFLA_INFO_DATA, b""))
        return 0, {}

    # ---------------------------------------------------------------- entries

    def entries(self) -> Entries:
        """What the kernel has of the agent's: routes of its protocol in the main table, and the
        permanent neighbour and FDB entries on its VXLAN device."""
        self._indexes.clear()  # the full read: names looked up again
        found = Entries()
        route_dump = rtnl.RTMSG.pack(0, 0, 0, 0, MAIN_TABLE, self.protocol, 0, 0, 0)
        requests = [(rtnl.RTM_GETROUTE, rtnl.NLM_F_DUMP, route_dump)]
        index = self.vxlan_index()
        if index is not None:
            requests += [(rtnl.RTM_GETNEIGH, rtnl.NLM_F_DUMP, rtnl.NDMSG.pack(family, index, 0, 0, 0))
                         for family in (socket.AF_INET, socket.AF_INET6, rtnl.AF_BRIDGE)]
        try:  # one dump at a time: the kernel runs one per socket (EBUSY for a second in the same datagram)
            answers = [self._nl.exchange("reading the agent's entries", [request])[0].check() for request in requests]
        except rtnl.Failed as e:
            raise RoutingError(f"reading the agent's entries: {e.reason()}") from None
        for kind, payload in answers[0]:
            route = self._route_of(payload) if kind == rtnl.RTM_NEWROUTE else None
            if route is not None:
                found.routes[route.dst] = route
        for messages in answers[1:]:
            for kind, payload in messages:
                entry = _neighbour_entry(payload, index) if kind == rtnl.RTM_NEWNEIGH else None
                if isinstance(entry, Neighbour):
                    found.neighbours[entry.address] = entry
                elif isinstance(entry, Forwarding):
                    found.forwardings[entry.mac] = entry
        return found

    def put(self, entry: Route | Neighbour | Forwarding) -> None:
        """Write an entry (replacing what is at its key). Raises RoutingError with the kernel's reason."""
        refused = self.put_many([entry])
        if refused:
            raise RoutingError(refused[entry])

    def put_many(self, entries: Iterable[Entry]) -> dict[Entry, str]:
        """Write the entries, BATCH to a datagram; those the kernel refused, with its reason."""
        return self._send(entries, self._put_request, "cannot make", gone_is_done=False)

    def remove(self, entry: Route | Neighbour | Forwarding) -> None:
        """Remove an entry of the agent's; one already gone is no error."""
        refused = self.remove_many([entry])
        if refused:
            raise RoutingError(refused[entry])

    def remove_many(self, entries: Iterable[Entry]) -> dict[Entry, str]:
        """Remove entries of the agent's, BATCH to a datagram (those already gone are no error); those the
        kernel refused, with its reason."""
        return self._send(entries, self._remove_request, "cannot remove", gone_is_done=True)

    def _send(self, entries: Iterable[Entry], request_of, what: str, gone_is_done: bool) -> dict[Entry, str]:
        refused: dict[Entry, str] = {}
        pending: list[tuple[Entry, tuple[int, int, bytes]]] = []
        for entry in entries:
            try:
                request = request_of(entry)
            except RoutingError as e:
                refused[entry] = f"{what} {describe(entry)}: {e}"
                continue
            if request is not None:
                pending.append((entry, request))
        for start in range(0, len(pending), BATCH):
            chunk = pending[start:start + BATCH]
            try:
                answers = self._nl.exchange(what, [request for _, request in chunk])
            except NetlinkFailure as e:
                refused.update((entry, f"{what} {describe(entry)}: {e}") for entry, _ in chunk)
                continue
            for (entry, _), answer in zip(chunk, answers, strict=True):
                gone = gone_is_done and answer.error in (errno.ESRCH, errno.ENOENT, errno.ENODEV)
                if answer.error and not gone:
                    reason = rtnl.Failed(answer.error, answer.explanation).reason()
                    refused[entry] = f"{what} {describe(entry)}: {reason}"
        return refused

    def _put_request(self, entry: Route | Neighbour | Forwarding) -> tuple[int, int, bytes]:
        if isinstance(entry, Route):
            index = self._index(entry.device)
            if index is None:
                raise RoutingError(f"device {entry.device} is gone")
            family = FAMILIES[entry.dst.version]
            header = rtnl.RTMSG.pack(family, entry.dst.prefixlen, 0, 0, MAIN_TABLE, self.protocol, 0,
                                     rtnl.RTN_UNICAST, rtnl.RTNH_F_ONLINK if entry.onlink else 0)
            return rtnl.RTM_NEWROUTE, rtnl.NLM_F_PUT, header + b"".join((
                rtnl.attribute(rtnl.RTA_DST, entry.dst.network_address.packed),
                rtnl.attribute(rtnl.RTA_GATEWAY, entry.gateway.packed),
                rtnl.u32_attribute(rtnl.RTA_OIF, index)))
        index = self._vxlan()
        if isinstance(entry, Neighbour):
            return rtnl.RTM_NEWNEIGH, rtnl.NLM_F_PUT, rtnl.NDMSG.pack(
                FAMILIES[entry.address.version], index, rtnl.NUD_PERMANENT, 0, 0) + b"".join((
                    rtnl.attribute(rtnl.NDA_DST, entry.address.packed),
                    rtnl.attribute(rtnl.NDA_LLADDR, rtnl.mac_bytes(entry.mac))))
        return rtnl.RTM_NEWNEIGH, rtnl.NLM_F_PUT, rtnl.NDMSG.pack(
            rtnl.AF_BRIDGE, index, rtnl.NUD_PERMANENT, rtnl.NTF_SELF, 0) + b"".join((
                rtnl.attribute(rtnl.NDA_LLADDR, rtnl.mac_bytes(entry.mac)),
                rtnl.attribute(rtnl.NDA_DST, entry.remote.packed)))

    def _remove_request(self, entry: Route | Neighbour | Forwarding) -> tuple[int, int, bytes] | None:
        if isinstance(entry, Route):
            header = rtnl.RTMSG.pack(FAMILIES[entry.dst.version], entry.dst.prefixlen, 0, 0, MAIN_TABLE,
                                     self.protocol, 0, 0, 0)
            return rtnl.RTM_DELROUTE, 0, header + rtnl.attribute(rtnl.RTA_DST, entry.dst.network_address.packed)
        index = self.vxlan_index()
        if index is None:
            return None  # the device is gone, and its entries with it
        if isinstance(entry, Neighbour):
            return rtnl.RTM_DELNEIGH, 0, rtnl.NDMSG.pack(FAMILIES[entry.address.version], index, 0, 0, 0) + \
                rtnl.attribute(rtnl.NDA_DST, entry.address.packed)
        return rtnl.RTM_DELNEIGH, 0, rtnl.NDMSG.pack(rtnl.AF_BRIDGE, index, 0, rtnl.NTF_SELF, 0) + b"".join((
            rtnl.attribute(rtnl.NDA_LLADDR, rtnl.mac_bytes(entry.mac)),
            rtnl.attribute(rtnl.NDA_DST, entry.remote.packed)))

    def _vxlan(self) -> int:
        index = self.vxlan_index()
        if index is None:
            raise RoutingError(f"device {self.vxlan_name} is gone")
        return index

    def _route_of(self, payload: bytes, removed: bool = False) -> Route | None:
        """A route of the agent's protocol in the main table (for a removal, its key alone)."""
        family, dst_len, _, _, table, protocol, _, _, flags = rtnl.RTMSG.unpack_from(payload)
        attributes = rtnl.attributes(payload, rtnl.RTMSG.size)
        if protocol != self.protocol or (rtnl.number(attributes.get(rtnl.RTA_TABLE)) or table) != MAIN_TABLE:
            return None
        dst, gateway = attributes.get(rtnl.RTA_DST), attributes.get(rtnl.RTA_GATEWAY)
        if dst is None or (gateway is None and not removed):
            return None
        network = ipaddress.ip_network((ipaddress.ip_address(dst), dst_len))
        if removed:
            return Route(network, ipaddress.ip_address(gateway) if gateway else network.network_address, "")
        oif = rtnl.number(attributes.get(rtnl.RTA_OIF))
        name = self._names.get(oif) or self._name_of(oif)
        assert gateway is not None
        return Route(network, ipaddress.ip_address(gateway), name, onlink=bool(flags & rtnl.RTNH_F_ONLINK))

    def _name_of(self, index: int) -> str:
        if not index:
            return ""
        try:
            name = self._nl.link(index).name
        except CNIError:
            return ""
        self._names[index] = name
        return name

    # ---------------------------------------------------------------- notifications

    def notifications(self, stop) -> Iterator[Change]:
        """The kernel's notifications about the agent's entries, its device, the node's links and addresses,
        until `stop` is set (looked at every second); an overrun of the socket's buffer (notifications
        lost) is a Change "overrun"."""
        subscription = rtnl.Subscription(GROUPS, RECEIVE_BUFFER)
        try:
            while not stop.is_set():
                try:
                    messages = subscription.receive(timeout=1.0)
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        yield Change("overrun", False)
                        continue
                    raise
                for kind, payload in messages:
                    change = self._change_of(kind, payload)
                    if change is not None:
                        yield change
        finally:
            subscription.close()

    def _change_of(self, kind: int, payload: bytes) -> Change | None:
        if kind in (rtnl.RTM_NEWROUTE, rtnl.RTM_DELROUTE):
            if rtnl.RTMSG.unpack_from(payload)[5] != self.protocol:
                return None
            removed = kind == rtnl.RTM_DELROUTE
            return Change("route", removed, self._route_of(payload, removed=removed))
        if kind in (rtnl.RTM_NEWNEIGH, rtnl.RTM_DELNEIGH):
            family, index = rtnl.NDMSG.unpack_from(payload)[:2]
            if self._names.get(index) != self.vxlan_name:
                return None
            removed = kind == rtnl.RTM_DELNEIGH
            entry = _neighbour_entry(payload, index, removed=removed)
            return Change("forwarding" if family == rtnl.AF_BRIDGE else "neighbour", removed, entry)
        if kind in (rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK):
            removed = kind == rtnl.RTM_DELLINK
            _, _, index, flags, _ = rtnl.IFINFO.unpack_from(payload)
            name = rtnl.text(rtnl.attributes(payload, rtnl.IFINFO.size).get(rtnl.IFLA_IFNAME))
            if removed:
                self._forget(name or self._names.get(index, ""))
            elif name:
                if self._indexes.get(name) not in (None, index):
                    self._forget(name)  # the name now belongs to another link
                self._names[index] = name
            if name == self.vxlan_name:
                return Change("device", removed or not flags & 1)
            return Change("link", removed, link=name)
        if kind in (rtnl.RTM_NEWADDR, rtnl.RTM_DELADDR):
            family = rtnl.IFADDR.unpack_from(payload)[0]
            value = rtnl.attributes(payload, rtnl.IFADDR.size).get(rtnl.IFA_ADDRESS)
            if value and ipaddress.ip_address(value).is_link_local:
                return None  # every pod's host veth gets one; never an uplink's subnet
            return Change("address", kind == rtnl.RTM_DELADDR) if family in (socket.AF_INET, socket.AF_INET6) else None
        return None


def _vxlan_matches(data: dict[int, bytes], want: Vxlan, uplink: int) -> bool:
    if not data:
        return False
    local = data.get(rtnl.IFLA_VXLAN_LOCAL) or data.get(rtnl.IFLA_VXLAN_LOCAL6)
    port = data.get(rtnl.IFLA_VXLAN_PORT) or b"\0\0"
    return (rtnl.number(data.get(rtnl.IFLA_VXLAN_ID)) == want.vni and rtnl.BE16.unpack(port)[0] == want.port
            and rtnl.number(data.get(rtnl.IFLA_VXLAN_LINK)) == uplink
            and local is not None and ipaddress.ip_address(local) == want.local
            and not (data.get(rtnl.IFLA_VXLAN_LEARNING) or b"\0")[0])


def _neighbour_entry(payload: bytes, index: int | None, removed: bool = False) -> Neighbour | Forwarding | None:
    """A permanent neighbour entry (for a removal only its address counts: the kernel's notice has no MAC)
    or an FDB entry with a remote, of the device `index`."""
    family, found_index, state = rtnl.NDMSG.unpack_from(payload)[:3]
    if found_index != index:
        return None
    attributes = rtnl.attributes(payload, rtnl.NDMSG.size)
    dst, lladdr = attributes.get(rtnl.NDA_DST), attributes.get(rtnl.NDA_LLADDR)
    if dst is None:
        return None
    mac = rtnl.mac(lladdr)
    if family == rtnl.AF_BRIDGE:
        if not mac or mac == "00:00:00:00:00:00":
            return None
        return Forwarding(mac, ipaddress.ip_address(dst))
    if not removed and (not mac or not state & rtnl.NUD_PERMANENT):
        return None
    return Neighbour(ipaddress.ip_address(dst), mac)


def describe(entry: Route | Neighbour | Forwarding) -> str:
    """The entry as `ip`/`bridge` would show it."""
    if isinstance(entry, Route):
        return f"route {entry.dst} via {entry.gateway} dev {entry.device}{' onlink' if entry.onlink else ''}"
    if isinstance(entry, Neighbour):
        return f"neighbour {entry.address} lladdr {entry.mac}"
    return f"fdb {entry.mac} dst {entry.remote}"
