"""Links, addresses and routes over rtnetlink: what a plugin asks of the kernel, by name (tc objects are
`tc`'s, over the same session).

Every request goes over `rtnl`'s plain socket, packed here (the routes agent's entries and its VXLAN
device are `routing`'s, over the same `Netlink`). The only user of pyroute2 is `link_events`, the device
plugin's subscription to link changes: a long-running service where its import cost does not matter,
unlike a plugin process's start.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from pycni.host import rtnl
from pycni.host.netns import entered
from pycni.imports import without_init
from pycni.protocol.errors import CNIError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000  # carrier
IFF_PROMISC = 0x100
IFA_F_NODAD = 0x02
RETIRED_ALIAS = "pycni: being deleted"  # a link set down for a deferred deletion
RETIRED_WAIT_SECONDS = 10  # a retired link (another worker's deferred deletion) is gone by then
AF_INET, AF_INET6 = 2, 10
ARPHRD_ETHER, ARPHRD_INFINIBAND = 1, 32
LINK_TYPES = {ARPHRD_ETHER: "ether", ARPHRD_INFINIBAND: "infiniband", 772: "loopback", 65534: "none"}


class LinkNotFound(CNIError):
    pass


class NetlinkFailure(CNIError):
    def __init__(self, msg: str, errno_code: int) -> None:
        # a dump that kept changing under us is a busy node, not a broken one: the runtime may try again
        super().__init__(msg, f"errno {errno_code}", code=11 if errno_code == errno.EAGAIN else None)
        self.errno = errno_code


@dataclass(slots=True)
class LinkInfo:
    index: int
    name: str
    kind: str
    mac: str
    mtu: int
    flags: int
    master: int
    peer_index: int  # IFLA_LINK: a veth's peer index (in the peer's namespace)
    operstate: str
    alias: str = ""  # IFLA_IFALIAS
    arp_type: int = ARPHRD_ETHER  # ifinfomsg's type: 1 Ethernet, 32 InfiniBand, ...

    @property
    def link_type(self) -> str:
        """The link type as `ip link` and the SR-IOV device plugin's `linkTypes` name it."""
        return LINK_TYPES.get(self.arp_type, str(self.arp_type))

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def carrier(self) -> bool:
        return bool(self.flags & IFF_LOWER_UP)


@contextmanager
def link_events() -> Iterator[Iterator[tuple[str, str]]]:
    """Link changes in this thread's namespace as ("new" | "del", link name), from the kernel's RTMGRP_LINK
    group: seen as they happen, without polling. The subscription exists when the block starts, so a dump
    taken inside the block misses nothing that follows it."""
    without_init("pyroute2")  # its __init__ imports every netlink family
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.rtnl import RTMGRP_LINK

    socket = IPRoute()
    try:
        socket.bind(groups=RTMGRP_LINK)

        def events() -> Iterator[tuple[str, str]]:
            while True:
                for msg in socket.get():
                    yield ("del" if msg["event"] == "RTM_DELLINK" else "new"), msg.get_attr("IFLA_IFNAME") or ""

        yield events()
    finally:
        socket.close()


@contextmanager
def session(netns_fd: int | None = None) -> Iterator[Netlink]:
    """A netlink session bound to the namespace `netns_fd` (or to the calling thread's)."""
    if netns_fd is None:
        channel = rtnl.Channel()
    else:
        with entered(netns_fd):
            channel = rtnl.Channel()
    nl = Netlink(channel, netns_fd)
    try:
        yield nl
    finally:
        nl.close()


class DeferredDeletions:
    """Links deleted after the call that dropped them has answered, by a thread of a long-lived process (the
    pycni service). Unregistering a netdev waits for RCU grace periods, ~15-20 ms of a pod's DEL that the
    runtime need not wait for once the link carries no traffic. A link is queued by its index in the
    namespace it lives in, so a new link that takes its name meanwhile is never the one deleted; until it is
    gone it is down and marked (`drop_link_named`), which is how a call about to create that name, in this
    process or another worker, knows to wait for it (`_create_after_deletions`)."""

    def __init__(self) -> None:
        import queue
        import threading

        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._outstanding = 0
        self._thread = threading.Thread(target=self._run, name="deferred link deletions", daemon=True)
        self._thread.start()

    def submit(self, index: int, name: str, netns_fd: int | None = None) -> None:
        """Delete link `index` (named `name`) of the namespace `netns_fd` (the calling thread's when None),
        soon."""
        from pycni.host.netns import open_own

        fd = open_own("thread-self/ns/net") if netns_fd is None else os.dup(netns_fd)
        with self._idle:
            self._outstanding += 1
        self._queue.put((fd, index, name))

    def finish(self, timeout: float) -> None:
        """Wait (up to `timeout` s) until every queued deletion is done: before the process exits."""
        with self._idle:
            self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    def _run(self) -> None:
        while True:
            fd, index, name = self._queue.get()
            try:
                with session(fd) as nl:
                    nl.request(f"deleting link {name}", rtnl.RTM_DELLINK, 0, rtnl.IFINFO.pack(0, 0, index, 0, 0))
            except CNIError:
                pass  # gone already, or the namespace with it; `pycni gc` reclaims anything left
            finally:
                os.close(fd)
                with self._idle:
                    self._outstanding -= 1
                    self._idle.notify_all()


_deferred: DeferredDeletions | None = None
_deferred_pid = 0
_defer = False


def defer_link_deletions() -> None:
    """From now on this process (and processes forked from it) may delete links after answering."""
    global _defer
    _defer = True


def deferred_deletions() -> DeferredDeletions | None:
    """This process's deletion thread when deferring is on (started on first use: a forked worker gets its
    own), else None."""
    global _deferred, _deferred_pid
    if not _defer:
        return None
    if _deferred is None or _deferred_pid != os.getpid():
        _deferred, _deferred_pid = DeferredDeletions(), os.getpid()
    return _deferred


def split_cidr(cidr: str) -> tuple[str, int]:
    address, _, prefix = cidr.partition("/")
    return address, int(prefix) if prefix else (128 if ":" in address else 32)


def _packed_cidr(cidr: str) -> tuple[int, bytes, int]:
    """(family, address in network byte order, prefix length) of an address or CIDR."""
    address, prefix = split_cidr(cidr)
    family = AF_INET6 if ":" in address else AF_INET
    return family, socket.inet_pton(family, address), prefix


def failure(what: str, failed: rtnl.Failed) -> CNIError:
    """The CNI error that says what the kernel refused, and why."""
    if failed.code == errno.ENODEV:
        return LinkNotFound(f"{what}: no such link")
    return NetlinkFailure(f"{what}: {failed.reason()}", failed.code)


class Netlink:
    def __init__(self, channel: rtnl.Channel, netns_fd: int | None = None) -> None:
        self.channel = channel
        self.netns_fd = netns_fd  # the namespace the session was opened in; None: its opener thread's

    def close(self) -> None:
        self.channel.close()

    def exchange(self, what: str, requests: list[tuple[int, int, bytes]]) -> list[rtnl.Answer]:
        """Requests over the plain socket, in one round trip; each answer says how its request went."""
        try:
            return self.channel.exchange(requests)
        except OSError as e:
            raise NetlinkFailure(f"{what}: {e.strerror}", e.errno or 0) from None

    def request(self, what: str, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """One request over the plain socket; a refusal raised as the CNI error that says what failed."""
        try:
            return self.exchange(what, [(kind, flags, body)])[0].check()
        except rtnl.Failed as e:
            raise failure(what, e) from None

    # links

    def find_link(self, name: str) -> int | None:
        link = self.link_named(name)
        return link.index if link else None

    def link_index(self, name: str) -> int:
        index = self.find_link(name)
        if index is None:
            raise LinkNotFound(f"link {name} not found")
        return index

    def link(self, index: int) -> LinkInfo:
        messages = self.request(f"reading link {index}", rtnl.RTM_GETLINK, 0, rtnl.IFINFO.pack(0, 0, index, 0, 0))
        return self._link_info(messages[0][1])

    def link_named(self, name: str) -> LinkInfo | None:
        """The link called `name` in one request, None when there is none (no lookup-then-read race with a
        link that is being deleted)."""
        return self.links_named([name]).get(name)

    def links_named(self, names: list[str]) -> dict[str, LinkInfo]:
        """Those of the links `names` that exist, read in one batch (one round trip)."""
        empty = rtnl.IFINFO.pack(0, 0, 0, 0, 0)
        answers = self.exchange("reading links", [
            (rtnl.RTM_GETLINK, 0, empty + rtnl.name_attribute(rtnl.IFLA_IFNAME, name)) for name in names])
        found: dict[str, LinkInfo] = {}
        for name, answer in zip(names, answers, strict=True):
            if answer.error == errno.ENODEV:  # no link of that name: absent
                continue
            try:
                found.update((link.name, link) for link in map(self._link_info, (p for _, p in answer.check())))
            except rtnl.Failed as e:
                raise failure(f"reading link {name}", e) from None
        return found

    @staticmethod
    def _link_info(payload: bytes) -> LinkInfo:
        _, arp_type, index, flags, _ = rtnl.IFINFO.unpack_from(payload)
        attributes = rtnl.attributes(payload, rtnl.IFINFO.size)
        info = attributes.get(rtnl.IFLA_LINKINFO)
        operstate = attributes.get(rtnl.IFLA_OPERSTATE, b"\0")[0]
        return LinkInfo(
            index=index,
            name=rtnl.text(attributes.get(rtnl.IFLA_IFNAME)),
            kind=rtnl.text(rtnl.attributes(info).get(rtnl.IFLA_INFO_KIND)) if info else "",
            mac=rtnl.mac(attributes.get(rtnl.IFLA_ADDRESS)),
            mtu=rtnl.number(attributes.get(rtnl.IFLA_MTU)),
            flags=flags,
            master=rtnl.number(attributes.get(rtnl.IFLA_MASTER)),
            peer_index=rtnl.number(attributes.get(rtnl.IFLA_LINK)),
            operstate=rtnl.OPERSTATES[operstate] if operstate < len(rtnl.OPERSTATES) else "UNKNOWN",
            alias=rtnl.text(attributes.get(rtnl.IFLA_IFALIAS)),
            arp_type=arp_type,
        )

    def set_state(self, index: int, up: bool) -> None:
        self.request(f"setting link {index} {'up' if up else 'down'}", rtnl.RTM_NEWLINK, 0,
                     rtnl.IFINFO.pack(0, 0, index, IFF_UP if up else 0, IFF_UP))

    def set_link(self, index: int, *, mtu: int = 0, address: str = "", master: int | None = None,
                 alias: str | None = None, flags: int = 0, change: int = 0) -> None:
        """Change link `index` in one request: its MTU, MAC address, master (0: none), alias ("": none) and
        the `change` bits of its flags."""
        attributes = _link_attributes(mtu=mtu, address=address)
        if master is not None:
            attributes += rtnl.u32_attribute(rtnl.IFLA_MASTER, master)
        if alias is not None:
            attributes += rtnl.attribute(rtnl.IFLA_IFALIAS, alias.encode())
        self.request(f"setting link {index}", rtnl.RTM_NEWLINK, 0,
                     rtnl.IFINFO.pack(0, 0, index, flags, change) + attributes)

    def links(self) -> list[LinkInfo]:
        messages = self.request("listing links", rtnl.RTM_GETLINK, rtnl.NLM_F_DUMP, rtnl.IFINFO.pack(0, 0, 0, 0, 0))
        return [self._link_info(payload) for kind, payload in messages if kind == rtnl.RTM_NEWLINK]

    def delete_link(self, index: int) -> None:
        self.request(f"deleting link {index}", rtnl.RTM_DELLINK, 0, rtnl.IFINFO.pack(0, 0, index, 0, 0))

    def delete_link_named(self, name: str) -> bool:
        """Delete link `name` if it exists (already gone is fine), in one request; whether it existed."""
        try:
            self.request(f"deleting link {name}", rtnl.RTM_DELLINK, 0,
                         rtnl.IFINFO.pack(0, 0, 0, 0, 0) + rtnl.name_attribute(rtnl.IFLA_IFNAME, name))
        except LinkNotFound:
            return False
        return True

    def drop_link_named(self, name: str) -> bool:
        """Delete link `name`, which is to carry no traffic any more, if it exists (whether it did): where the
        process defers deletions (the service; `defer_link_deletions`) it is retired at once and unregistered
        after this call has answered; elsewhere it is deleted now. A veth goes with its peer."""
        deferred = deferred_deletions()
        if deferred is None:
            return self.delete_link_named(name)
        link = self.retire_link_named(name)
        if link is not None:
            deferred.submit(link.index, name, self.netns_fd)
        return link is not None

    def drop_veth_peer_named(self, name: str) -> None:
        """The other end of a veth pair whose end `drop_link_named` just dropped: it goes with that one. Where
        the deletion is deferred it is retired meanwhile (an ADD of its name waits for it, GC knows it); else
        it is gone already, and nothing is asked of the kernel."""
        if deferred_deletions() is not None:
            self.retire_link_named(name)

    def retire_link_named(self, name: str) -> LinkInfo | None:
        """Take link `name` out of service, if it exists: down (no packet crosses it, none of its addresses
        answers, a veth's peer loses its carrier) and marked with the alias RETIRED_ALIAS, so that a call that
        needs its name waits for it to go and GC knows it for a leftover. The link as it was, or None."""
        link = self.link_named(name)
        if link is None:
            return None
        try:
            self.set_link(link.index, alias=RETIRED_ALIAS, flags=0, change=IFF_UP)
        except LinkNotFound:
            return None
        return link

    def add_link(self, name: str, kind: str, up: bool = False, mtu: int = 0, txqlen: int = 0) -> LinkInfo:
        """Create a link of `kind` without kind-specific options (ifb, bridge, dummy), up from the start when
        asked, and read it (a deferred deletion of a link of that name is waited for first)."""
        self._create_after_deletions(((None, name),), lambda: self._create_link(
            f"creating {kind} {name}", name, kind, up, _link_attributes(mtu=mtu, txqlen=txqlen)))
        created = self.link_named(name)
        if created is None:
            raise LinkNotFound(f"link {name} vanished as soon as it was created")
        return created

    def _create_after_deletions(self, names: tuple[tuple[int | None, str], ...], create: Callable[[], None]) -> None:
        """Run `create`, which makes links of `names` ((namespace fd or None for this session's, name)). Where
        deletions are deferred, a name may still be held by a retired link (`retire_link_named`) whose deletion
        is queued, by this process or another worker of the service: on EEXIST such links are waited for until
        they are gone, then the link is created again. Any other link holding a name is the caller's EEXIST."""
        try:
            create()
        except NetlinkFailure as e:
            if e.errno != errno.EEXIST or deferred_deletions() is None or not all(
                    self._retired_link_gone(netns_fd, name) for netns_fd, name in names):
                raise
            create()

    def _retired_link_gone(self, netns_fd: int | None, name: str) -> bool:
        """Whether link `name` (in `netns_fd`, or this session's namespace) is absent, or retired and gone within
        RETIRED_WAIT_SECONDS; False at once for a link that is not retired."""
        with (nullcontext(self) if netns_fd is None else session(netns_fd)) as nl:
            deadline = time.monotonic() + RETIRED_WAIT_SECONDS
            while (link := nl.link_named(name)) is not None:
                if link.alias != RETIRED_ALIAS or time.monotonic() > deadline:
                    return False
                time.sleep(0.005)
        return True

    def create_link(self, what: str, name: str, kind: str, up: bool = False, *, mtu: int = 0, address: str = "",
                    data: bytes = b"") -> None:
        """Create a link of `kind` with its kind's options (`data`, IFLA_INFO_DATA's attributes)."""
        self._create_link(what, name, kind, up, _link_attributes(mtu=mtu, address=address), data)

    def _create_link(self, what: str, name: str, kind: str, up: bool, attributes: bytes, data: bytes = b"") -> None:
        info = rtnl.name_attribute(rtnl.IFLA_INFO_KIND, kind)
        if data:
            info += rtnl.nested(rtnl.IFLA_INFO_DATA, data)
        self.request(what, rtnl.RTM_NEWLINK, rtnl.NLM_F_NEW,
                     rtnl.IFINFO.pack(0, 0, 0, IFF_UP if up else 0, IFF_UP if up else 0)
                     + rtnl.name_attribute(rtnl.IFLA_IFNAME, name) + attributes + rtnl.nested(rtnl.IFLA_LINKINFO, info))

    def move_link(self, index: int, netns_fd: int, new_name: str = "") -> None:
        """Move link `index` into the namespace `netns_fd`, renamed to `new_name` on the way when given
        (the kernel refuses to rename a link that is up: set it down first)."""
        attributes = rtnl.u32_attribute(rtnl.IFLA_NET_NS_FD, netns_fd)
        if new_name:
            attributes += rtnl.name_attribute(rtnl.IFLA_IFNAME, new_name)
        self.request(f"moving link {index}", rtnl.RTM_NEWLINK, 0, rtnl.IFINFO.pack(0, 0, index, 0, 0) + attributes)

    def add_bridge(self, name: str, mtu: int = 0, vlan_filtering: bool = False) -> None:
        """Create a bridge; an existing link of that name is left to the caller to inspect."""
        try:
            self._create_link(f"creating bridge {name}", name, "bridge", False, _link_attributes(mtu=mtu))
        except NetlinkFailure as e:
            if e.errno != errno.EEXIST:
                raise
            return
        if vlan_filtering:
            index = self.link_index(name)
            info = rtnl.name_attribute(rtnl.IFLA_INFO_KIND, "bridge") + rtnl.nested(
                rtnl.IFLA_INFO_DATA, rtnl.u8_attribute(rtnl.IFLA_BR_VLAN_FILTERING, 1))
            try:
                self.request(f"enabling VLAN filtering on {name}", rtnl.RTM_NEWLINK, 0,
                             rtnl.IFINFO.pack(0, 0, index, 0, 0) + rtnl.nested(rtnl.IFLA_LINKINFO, info))
            except NetlinkFailure as e:
                self.delete_link(index)
                if e.errno == errno.EOPNOTSUPP:
                    raise CNIError(f"bridge {name}: this kernel has no bridge VLAN filtering "
                                   "(CONFIG_BRIDGE_VLAN_FILTERING), needed for vlan/vlanTrunk") from None
                raise

    def add_veth(self, name: str, peer_name: str, peer_netns_fd: int | None = None, mtu: int = 0,
                 peer_mac: str = "", up: bool = False) -> None:
        """A veth pair: `name` here (up from the start when asked), `peer_name` created directly inside
        `peer_netns_fd` (here when None). Deferred deletions of either name are waited for first."""
        peer = rtnl.IFINFO.pack(0, 0, 0, 0, 0) + rtnl.name_attribute(rtnl.IFLA_IFNAME, peer_name) + \
            _link_attributes(mtu=mtu, address=peer_mac)
        if peer_netns_fd is not None:
            peer += rtnl.u32_attribute(rtnl.IFLA_NET_NS_FD, peer_netns_fd)
        self._create_after_deletions(((None, name), (peer_netns_fd, peer_name)), lambda: self._create_link(
            f"creating veth pair {name}/{peer_name}", name, "veth", up, _link_attributes(mtu=mtu),
            rtnl.attribute(rtnl.VETH_INFO_PEER, peer)))

    def set_bridge_port(self, index: int, hairpin: bool = False, isolated: bool = False) -> None:
        """Turn on hairpin mode (IFLA_BRPORT_MODE) and/or port isolation of bridge port `index`."""
        options = b""
        if hairpin:
            options += rtnl.u8_attribute(rtnl.IFLA_BRPORT_MODE, 1)
        if isolated:
            options += rtnl.u8_attribute(rtnl.IFLA_BRPORT_ISOLATED, 1)
        self.request(f"setting bridge port options of link {index}", rtnl.RTM_SETLINK, 0,
                     rtnl.IFINFO.pack(rtnl.AF_BRIDGE, 0, index, 0, 0) + rtnl.nested(rtnl.IFLA_PROTINFO, options))

    def vlan(self, command: str, index: int, vid: int, pvid_untagged: bool = False) -> None:
        """Add (`command` "add") or remove ("del") VLAN `vid` on bridge port `index`, as `bridge vlan` does."""
        flags = rtnl.BRIDGE_VLAN_INFO_PVID | rtnl.BRIDGE_VLAN_INFO_UNTAGGED if pvid_untagged else 0
        vlan = rtnl.attribute(rtnl.IFLA_BRIDGE_VLAN_INFO, rtnl.VLAN_INFO.pack(flags, vid))
        message = rtnl.RTM_SETLINK if command == "add" else rtnl.RTM_DELLINK
        self.request(f"{command} VLAN {vid} on link {index}", message, 0,
                     rtnl.IFINFO.pack(rtnl.AF_BRIDGE, 0, index, 0, 0) + rtnl.nested(rtnl.IFLA_AF_SPEC, vlan))

    def wait_oper_up(self, name: str, timeout: float = 2.0, also: tuple[str, ...] = ()) -> dict[str, LinkInfo]:
        """Link `name` once it is operationally up (or as it is at the timeout), and the links `also`, read
        in the same round trips."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            links = self.links_named([name, *also])
            if name not in links:
                raise LinkNotFound(f"link {name} vanished")
            if links[name].operstate == "UP" or time.monotonic() >= deadline:
                return links
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # addresses

    def addresses(self, index: int, family: int = 0) -> list[tuple[str, int]]:
        """(address, prefix length) of link `index`. The dump asks the kernel to leave the other links'
        addresses out (strict checking): a node of 500 pods has an IPv6 link-local address per veth, and
        reading them all would cost ~15 ms. Older kernels send them all; they are left out here then."""
        return self._addresses(index, family).get(index, [])

    def addresses_of_every_link(self, family: int = 0) -> dict[int, list[tuple[str, int]]]:
        """Every link's addresses from one dump, by link index (for node-wide views, not a pod's call)."""
        return self._addresses(0, family)

    def _addresses(self, index: int, family: int) -> dict[int, list[tuple[str, int]]]:
        messages = self.request(f"reading addresses of link {index or 'any'}", rtnl.RTM_GETADDR, rtnl.NLM_F_DUMP,
                                rtnl.IFADDR.pack(family, 0, 0, 0, index))
        found: dict[int, list[tuple[str, int]]] = {}
        for kind, payload in messages:
            found_family, prefix, _, _, found_index = rtnl.IFADDR.unpack_from(payload)
            if kind != rtnl.RTM_NEWADDR or (index and found_index != index) or family not in (0, found_family):
                continue
            attributes = rtnl.attributes(payload, rtnl.IFADDR.size)
            value = attributes.get(rtnl.IFA_LOCAL) or attributes.get(rtnl.IFA_ADDRESS)
            found.setdefault(found_index, []).append((rtnl.address(found_family, value), prefix))
        return found

    def add_address(self, index: int, cidr: str, nodad: bool = False) -> bool:
        """Add an address; False when it was already there."""
        try:
            self.request(f"adding address {cidr} to link {index}", rtnl.RTM_NEWADDR, rtnl.NLM_F_NEW,
                         self._address_message(index, cidr, nodad))
        except NetlinkFailure as e:
            if e.errno == errno.EEXIST:
                return False
            raise
        return True

    def delete_address(self, index: int, cidr: str) -> None:
        self.request(f"deleting address {cidr}", rtnl.RTM_DELADDR, 0, self._address_message(index, cidr))

    @staticmethod
    def _address_message(index: int, cidr: str, nodad: bool = False) -> bytes:
        """An ifaddrmsg for `cidr` on link `index`: IPv4 names the address as both IFA_LOCAL and IFA_ADDRESS
        (as `ip address add` does), IPv6 as IFA_ADDRESS."""
        family, packed, prefix = _packed_cidr(cidr)
        flags = IFA_F_NODAD if nodad and family == AF_INET6 else 0
        body = rtnl.IFADDR.pack(family, prefix, flags, 0, index)
        if family == AF_INET:
            body += rtnl.attribute(rtnl.IFA_LOCAL, packed)
        body += rtnl.attribute(rtnl.IFA_ADDRESS, packed)
        if flags:
            body += rtnl.u32_attribute(rtnl.IFA_FLAGS, flags)
        return body

    # routes

    def add_route(self, dst: str, gateway: str = "", index: int = 0, priority: int = 0, table: int | None = None,
                  scope: int | None = None, mtu: int = 0, advmss: int = 0) -> None:
        """A unicast route (proto static; scope universe unless given), as the reference plugins add them; a
        duplicate is ignored (the first one wins, as in the reference)."""
        family, packed, prefix = _packed_cidr(dst)
        table = rtnl.RT_TABLE_MAIN if table is None else table
        attributes = rtnl.u32_attribute(rtnl.RTA_TABLE, table)
        if prefix:
            attributes += rtnl.attribute(rtnl.RTA_DST, packed)
        if gateway:
            attributes += rtnl.attribute(rtnl.RTA_GATEWAY, socket.inet_pton(family, gateway))
        if index:
            attributes += rtnl.u32_attribute(rtnl.RTA_OIF, index)
        if priority:
            attributes += rtnl.u32_attribute(rtnl.RTA_PRIORITY, priority)
        metrics = [rtnl.u32_attribute(kind, value) for kind, value in ((rtnl.RTAX_MTU, mtu), (rtnl.RTAX_ADVMSS, advmss))
                   if value]
        if metrics:
            attributes += rtnl.nested(rtnl.RTA_METRICS, *metrics)
        header = rtnl.RTMSG.pack(family, prefix, 0, 0, table if table < 256 else 0, rtnl.RTPROT_STATIC,
                                 scope or 0, rtnl.RTN_UNICAST, 0)
        try:
            self.request(f"adding route {dst} via {gateway or 'link'}", rtnl.RTM_NEWROUTE, rtnl.NLM_F_NEW,
                         header + attributes)
        except NetlinkFailure as e:
            if e.errno != errno.EEXIST:
                raise

    def route_interface(self, destination: str) -> int:
        """The index of the link the node would send a packet to `destination` out of (0: no route)."""
        family, packed, _ = _packed_cidr(destination)
        try:
            messages = self.request(f"looking up the route to {destination}", rtnl.RTM_GETROUTE, 0,
                                    rtnl.RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0)
                                    + rtnl.attribute(rtnl.RTA_DST, packed))
        except NetlinkFailure:
            return 0  # unreachable: no link to protect
        return next((rtnl.number(rtnl.attributes(payload, rtnl.RTMSG.size).get(rtnl.RTA_OIF))
                     for kind, payload in messages if kind == rtnl.RTM_NEWROUTE), 0)

    def routes(self, family: int, table: int = 254) -> list[tuple[str, str, int]]:
        """(dst CIDR, gateway, oif) of the routes of one family in `table` (the kernel dumps that table
        alone; a table that does not exist has no routes)."""
        try:
            messages = self.request("reading routes", rtnl.RTM_GETROUTE, rtnl.NLM_F_DUMP,
                                    rtnl.RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
                                    + rtnl.u32_attribute(rtnl.RTA_TABLE, table))
        except NetlinkFailure as e:
            if e.errno == errno.ENOENT:
                return []
            raise
        default = "0.0.0.0/0" if family == AF_INET else "::/0"
        out = []
        for kind, payload in messages:
            found_family, dst_len, _, _, found_table, _, _, _, _ = rtnl.RTMSG.unpack_from(payload)
            attributes = rtnl.attributes(payload, rtnl.RTMSG.size)
            if kind != rtnl.RTM_NEWROUTE or found_family != family:
                continue
            if (rtnl.number(attributes.get(rtnl.RTA_TABLE)) or found_table) != table:
                continue
            dst = rtnl.address(family, attributes.get(rtnl.RTA_DST))
            out.append((f"{dst}/{dst_len}" if dst else default, rtnl.address(family, attributes.get(rtnl.RTA_GATEWAY)),
                        rtnl.number(attributes.get(rtnl.RTA_OIF))))
        return out


def _link_attributes(mtu: int = 0, address: str = "", txqlen: int = 0) -> bytes:
    """The IFLA_MTU, IFLA_ADDRESS and IFLA_TXQLEN attributes of those given."""
    attributes = b""
    if mtu:
        attributes += rtnl.u32_attribute(rtnl.IFLA_MTU, mtu)
    if address:
        attributes += rtnl.attribute(rtnl.IFLA_ADDRESS, rtnl.mac_bytes(address))
    if txqlen:
        attributes += rtnl.u32_attribute(rtnl.IFLA_TXQLEN, txqlen)
    return attributes
