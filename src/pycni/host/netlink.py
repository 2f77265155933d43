"""Links, addresses and routes over rtnetlink: the only module that imports pyroute2.

pyroute2 is imported on first use, so verbs and errors that need no netlink
never pay for it.
"""

from __future__ import annotations

import errno
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

from pycni.host.netns import entered
from pycni.protocol.errors import CNIError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from collections.abc import Iterator

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000  # carrier
IFF_PROMISC = 0x100
IFA_F_NODAD = 0x02
AF_INET, AF_INET6 = 2, 10
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12


class LinkNotFound(CNIError):
    pass


class NetlinkFailure(CNIError):
    def __init__(self, msg: str, errno_code: int) -> None:
        super().__init__(msg, f"errno {errno_code}")
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
    _import_lean()
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


def _import_lean() -> None:
    """Register the pyroute2 package without running its `__init__`, which imports every subsystem
    (ipdb, ndb, conntrack, devlink, wireless, ...): about 40 ms of a plugin process's start, where only
    rtnetlink is used. Submodules then import as usual; a no-op once pyroute2 is in the process."""
    import sys

    if "pyroute2" in sys.modules:
        return
    from importlib.util import find_spec, module_from_spec

    spec = find_spec("pyroute2")
    if spec is None:
        raise CNIError("pyroute2 is not installed", "pycni needs pyroute2 for netlink")
    sys.modules["pyroute2"] = module_from_spec(spec)


def preload() -> None:
    """Import the parts of pyroute2 pycni uses now (a long-running service pays for them once, at start)."""
    _import_lean()
    import pyroute2.iproute.linux  # noqa: F401
    import pyroute2.netlink.rtnl.tcmsg  # noqa: F401


@dataclass(frozen=True, slots=True)
class Qdisc:
    kind: str
    handle: int
    parent: int
    rate: int = 0  # bytes per second (tbf)
    limit: int = 0  # bytes (tbf, bfifo) or packets (pfifo, fq_codel)
    link: int = 0  # the link's index


@dataclass(frozen=True, slots=True)
class TrafficClass:
    kind: str
    handle: int
    parent: int
    rate: int  # bytes per second (htb)


_tc_plugins_tuned = False


def _tune_tc_plugins() -> None:
    """Additions to pyroute2's tc plugins, once per process: `bfifo` (its options are pfifo's struct,
    a limit, here in bytes), and HTB classes and tbf qdiscs without the 256-entry rate tables that
    pyroute2 computes in Python for each rate of each one (seven tables, 1,800 transmit-time
    computations, per shaped link). The kernel has not needed the tables since 3.x: it only peeks at
    them for the link layer, which pycni leaves at Ethernet."""
    global _tc_plugins_tuned
    if _tc_plugins_tuned:
        return
    import logging

    from pyroute2.netlink import nla
    from pyroute2.netlink.rtnl.tcmsg import plugins, sched_htb, sched_pfifo, sched_tbf

    def without_rate_tables(parameters: dict) -> dict:
        tables = ("TCA_HTB_RTAB", "TCA_HTB_CTAB", "TCA_TBF_RTAB")
        parameters["attrs"] = [a for a in parameters["attrs"] if a[0] not in tables]
        return parameters

    class HtbOptions(sched_htb.options):
        class htb_parms(sched_htb.options.htb_parms):
            def encode(self) -> None:
                nla.encode(self)  # the parameters alone: no rate tables computed

    class TbfOptions(sched_tbf.options):
        class tbf_parms(sched_tbf.options.tbf_parms):
            def encode(self) -> None:
                nla.encode(self)

    plugins["htb"] = _plugin_copy(sched_htb, options=HtbOptions, get_class_parameters=lambda kwarg:
                                  without_rate_tables(sched_htb.get_class_parameters(kwarg)))
    plugins["tbf"] = _plugin_copy(sched_tbf, options=TbfOptions, get_parameters=lambda kwarg:
                                  without_rate_tables(sched_tbf.get_parameters(kwarg)))
    plugins.setdefault("bfifo", sched_pfifo)
    # pyroute2 warns on every fq_codel request that its parameter names will change
    logging.getLogger("pyroute2.netlink.rtnl.tcmsg.sched_fq_codel").setLevel(logging.ERROR)
    _tc_plugins_tuned = True


def _plugin_copy(module, **replaced):
    """A copy of a pyroute2 tc plugin module with some of its names replaced."""
    import types

    copy = types.ModuleType(f"pycni_{module.__name__.rsplit('.', 1)[-1]}")
    copy.__dict__.update(module.__dict__)
    copy.__dict__.update(replaced)
    return copy


@contextmanager
def session(netns_fd: int | None = None):
    """A netlink session bound to the namespace `netns_fd` (or to the caller's)."""
    _import_lean()
    from pyroute2.iproute.linux import IPRoute

    _tune_tc_plugins()
    if netns_fd is None:
        socket = IPRoute()
    else:
        with entered(netns_fd):
            socket = IPRoute()
    try:
        yield Netlink(socket)
    finally:
        socket.close()


def split_cidr(cidr: str) -> tuple[str, int]:
    address, _, prefix = cidr.partition("/")
    return address, int(prefix) if prefix else (128 if ":" in address else 32)


class Netlink:
    def __init__(self, socket) -> None:
        self.socket = socket

    def call(self, what: str, method, *args, **kwargs):
        """Run one pyroute2 request, turning netlink errors into CNI errors that say what failed."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            return method(*args, **kwargs)
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                raise LinkNotFound(f"{what}: no such link") from None
            reason = e.args[1] if len(e.args) > 1 else str(e)
            raise NetlinkFailure(f"{what}: {reason}", e.code) from None

    # links

    def find_link(self, name: str) -> int | None:
        found = self.call(f"looking up link {name}", self.socket.link_lookup, ifname=name)
        return found[0] if found else None

    def link_index(self, name: str) -> int:
        index = self.find_link(name)
        if index is None:
            raise LinkNotFound(f"link {name} not found")
        return index

    def link(self, index: int) -> LinkInfo:
        return self._link_info(self.call(f"reading link {index}", self.socket.link, "get", index=index)[0])

    def link_named(self, name: str) -> LinkInfo | None:
        """The link called `name` in one request, None when there is none (no lookup-then-read race with a
        link that is being deleted)."""
        try:
            return self._link_info(self.call(f"reading link {name}", self.socket.link, "get", ifname=name)[0])
        except LinkNotFound:
            return None

    def links_named(self, names: list[str]) -> dict[str, LinkInfo]:
        """Those of the links `names` that exist, read in one batch (one round trip)."""
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWLINK
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        if not names:
            return {}
        requests = []
        for name in names:
            request = ifinfmsg()
            request["attrs"] = [["IFLA_IFNAME", name]]
            request["header"]["type"] = RTM_GETLINK
            request["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
            requests.append(request)
        # noraise: a name no link has answers ENODEV, which only means "absent"
        answers = self.call("reading links", self.socket.nlm_request_batch, requests, noraise=True)
        found = (self._link_info(msg) for msg in answers if msg["header"]["type"] == RTM_NEWLINK)
        return {link.name: link for link in found}

    @staticmethod
    def _link_info(msg) -> LinkInfo:
        info = msg.get_attr("IFLA_LINKINFO")
        return LinkInfo(
            index=msg["index"],
            name=msg.get_attr("IFLA_IFNAME"),
            kind=(info.get_attr("IFLA_INFO_KIND") if info else "") or "",
            mac=msg.get_attr("IFLA_ADDRESS") or "",
            mtu=msg.get_attr("IFLA_MTU") or 0,
            flags=msg["flags"],
            master=msg.get_attr("IFLA_MASTER") or 0,
            peer_index=msg.get_attr("IFLA_LINK") or 0,
            operstate=msg.get_attr("IFLA_OPERSTATE") or "",
        )

    def is_up(self, index: int) -> bool:
        return self.link(index).up

    def set_state(self, index: int, up: bool) -> None:
        self.call(f"setting link {index} {'up' if up else 'down'}", self.socket.link, "set", index=index,
                   state="up" if up else "down")

    def set_link(self, index: int, **attributes) -> None:
        self.call(f"setting {', '.join(attributes)} on link {index}", self.socket.link, "set", index=index,
                   **attributes)

    def links(self) -> list[LinkInfo]:
        return [self.link(msg["index"]) for msg in self.call("listing links", self.socket.get_links)]

    def delete_link(self, index: int) -> None:
        self.call(f"deleting link {index}", self.socket.link, "del", index=index)

    def delete_link_named(self, name: str) -> None:
        """Delete link `name` if it exists (already gone is fine), in one request."""
        try:
            self.call(f"deleting link {name}", self.socket.link, "del", ifname=name)
        except LinkNotFound:
            pass

    def add_link(self, name: str, kind: str, up: bool = False, **attributes) -> LinkInfo:
        """Create a link of `kind` (ifb, veth with peer=..., ...), up from the start when asked, and read it."""
        if up:
            attributes["state"] = "up"
        self.call(f"creating {kind} {name}", self.socket.link, "add", ifname=name, kind=kind, **attributes)
        created = self.link_named(name)
        if created is None:
            raise LinkNotFound(f"link {name} vanished as soon as it was created")
        return created

    def move_link(self, index: int, netns_fd: int, new_name: str = "") -> None:
        """Move link `index` into the namespace `netns_fd`, renamed to `new_name` on the way when given
        (the kernel refuses to rename a link that is up: set it down first)."""
        attributes: dict = {"net_ns_fd": netns_fd}
        if new_name:
            attributes["ifname"] = new_name
        self.call(f"moving link {index}", self.socket.link, "set", index=index, **attributes)

    def set_alias(self, index: int, alias: str) -> None:
        """IFLA_IFALIAS of a link; the empty string clears it."""
        self.call(f"setting alias of link {index}", self.socket.link, "set", index=index, ifalias=alias)

    def alias(self, index: int) -> str:
        msg = self.call(f"reading link {index}", self.socket.link, "get", index=index)[0]
        return msg.get_attr("IFLA_IFALIAS") or ""

    def add_bridge(self, name: str, mtu: int = 0, vlan_filtering: bool = False) -> None:
        """Create a bridge; an existing link of that name is left to the caller to inspect."""
        attributes: dict = {"ifname": name, "kind": "bridge"}
        if mtu:
            attributes["mtu"] = mtu
        try:
            self.call(f"creating bridge {name}", self.socket.link, "add", **attributes)
        except NetlinkFailure as e:
            if e.errno != errno.EEXIST:
                raise
            return
        if vlan_filtering:
            index = self.link_index(name)
            try:
                self.call(f"enabling VLAN filtering on {name}", self.socket.link, "set", index=index,
                           kind="bridge", br_vlan_filtering=1)
            except NetlinkFailure as e:
                self.delete_link(index)
                if e.errno == errno.EOPNOTSUPP:
                    raise CNIError(f"bridge {name}: this kernel has no bridge VLAN filtering "
                                   "(CONFIG_BRIDGE_VLAN_FILTERING), needed for vlan/vlanTrunk") from None
                raise

    def add_veth(self, name: str, peer_name: str, peer_netns_fd: int, mtu: int = 0, peer_mac: str = "",
                 up: bool = False) -> None:
        """A veth pair: `name` here (up from the start when asked), `peer_name` created directly inside
        `peer_netns_fd`."""
        peer: dict = {"ifname": peer_name, "net_ns_fd": peer_netns_fd}
        attributes: dict = {"ifname": name, "kind": "veth", "peer": peer}
        if up:
            attributes["state"] = "up"
        if mtu:
            attributes["mtu"] = peer["mtu"] = mtu
        if peer_mac:
            peer["address"] = peer_mac
        self.call(f"creating veth pair {name}/{peer_name}", self.socket.link, "add", **attributes)

    def set_bridge_port(self, index: int, **options) -> None:
        """IFLA_BRPORT_* options of a bridge port, e.g. mode (hairpin) or isolated."""
        self.call(f"setting bridge port options {options} on link {index}", self.socket.brport, "set",
                   index=index, **options)

    def vlan(self, command: str, index: int, vid: int, pvid_untagged: bool = False) -> None:
        info: dict = {"vid": vid}
        if pvid_untagged:
            info["flags"] = ["pvid", "untagged"]
        self.call(f"{command} VLAN {vid} on link {index}", self.socket.vlan_filter, command, index=index,
                   vlan_info=info)

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
        addresses out (strict checking, Linux 4.20+): a node of 500 pods has an IPv6 link-local address
        per veth, and reading them all would cost ~15 ms. Older kernels send them all; they are left out
        here then."""
        from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_NEWADDR
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        request = ifaddrmsg()
        request["index"], request["family"] = index, family
        request["header"]["type"] = RTM_GETADDR
        request["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        with self._strict_checking():
            found = self.call(f"reading addresses of link {index}", self.socket.nlm_request_batch, [request])
        return [(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in found
                if a["header"]["type"] == RTM_NEWADDR and a["index"] == index and family in (0, a["family"])]

    @contextmanager
    def _strict_checking(self):
        """NETLINK_GET_STRICT_CHK on this session's socket for the block: the kernel then applies a dump's
        header fields as filters (and refuses fields it cannot apply, hence only for dumps built here)."""
        import socket

        handle = socket.socket(fileno=os.dup(self.socket.fileno()))
        try:
            handle.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            try:
                yield
            finally:
                handle.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 0)
        finally:
            handle.close()

    def add_address(self, index: int, cidr: str, nodad: bool = False) -> bool:
        """Add an address; False when it was already there."""
        address, prefix = split_cidr(cidr)
        attributes: dict = {"index": index, "address": address, "prefixlen": prefix}
        if nodad and ":" in address:
            attributes["flags"] = IFA_F_NODAD
        try:
            self.call(f"adding address {cidr} to link {index}", self.socket.addr, "add", **attributes)
        except NetlinkFailure as e:
            if e.errno == errno.EEXIST:
                return False
            raise
        return True

    def delete_address(self, index: int, cidr: str) -> None:
        address, prefix = split_cidr(cidr)
        self.call(f"deleting address {cidr}", self.socket.addr, "del", index=index, address=address,
                   prefixlen=prefix)

    # traffic control

    def add_qdisc(self, kind: str, index: int, **parameters) -> None:
        self.call(f"adding {kind} qdisc to link {index}", self.socket.tc, "add", kind, index, **parameters)

    def delete_qdisc(self, index: int, handle: int, parent: int) -> bool:
        """Remove the qdisc `handle` attached at `parent` (TC_H_ROOT, TC_H_INGRESS); False when there is none."""
        try:
            self.call(f"removing qdisc {handle:x} from link {index}", self.socket.tc, "del", index=index,
                      handle=handle, parent=parent)
        except NetlinkFailure as e:
            if e.errno in (errno.ENOENT, errno.EINVAL):
                return False
            raise
        return True

    def add_filter(self, kind: str, index: int, **parameters) -> None:
        self.call(f"adding {kind} filter to link {index}", self.socket.tc, "add-filter", kind, index, **parameters)

    def add_class(self, kind: str, index: int, **parameters) -> None:
        self.call(f"adding {kind} class to link {index}", self.socket.tc, "add-class", kind, index, **parameters)

    def add_fq_codel(self, index: int, handle: int, parent: int, target_us: int, quantum: int) -> None:
        """fq_codel with CoDel's target delay `target_us` (a kernel without sch_fq_codel refuses it)."""
        self.call(f"adding fq_codel qdisc to link {index}", self.socket.tc, "add", "fq_codel", index, handle=handle,
                  parent=parent, fqc_target=f"{target_us}us", fqc_quantum=quantum, fqc_limit=1024)

    def qdiscs(self, index: int | None = None) -> list[Qdisc]:
        """The qdiscs of link `index`, or of every link. The kernel answers a qdisc dump with every link's
        qdiscs (the filtering is done here), so this costs in proportion to the node's links: use `qdisc()`
        where the handle is known."""
        messages = self.call(f"reading qdiscs of link {index or 'any'}", self.socket.get_qdiscs, index=index)
        return [self._qdisc(msg) for msg in messages]

    def tc_by_handle(self, qdiscs: list[tuple[int, int]], classes: list[tuple[int, int]]
                     ) -> tuple[dict[tuple[int, int], Qdisc], dict[tuple[int, int], TrafficClass]]:
        """Those of the qdiscs and classes named by (link index, handle) that exist, asked for in one batch
        (one round trip, however many links the node has: a dump would return them all).

        Each request carries NLM_F_ECHO: kernels since 6.10 answer an RTM_GETQDISC or RTM_GETTCLASS only to
        a requester that asks for the echo (they treat the answer as a notification); older ones answer it
        either way."""
        from pyroute2.netlink import NLM_F_ACK, NLM_F_ECHO, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_GETQDISC, RTM_GETTCLASS, RTM_NEWQDISC, RTM_NEWTCLASS
        from pyroute2.netlink.rtnl.tcmsg import tcmsg

        if not qdiscs and not classes:
            return {}, {}
        requests = []
        for message_type, wanted in ((RTM_GETQDISC, qdiscs), (RTM_GETTCLASS, classes)):
            for index, handle in wanted:
                request = tcmsg()
                request["index"], request["handle"] = index, handle
                request["header"]["type"] = message_type
                request["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO
                requests.append(request)
        # noraise: a handle the link lacks answers ENOENT, which only means "absent"
        answers = self.call("reading qdiscs and classes", self.socket.nlm_request_batch, requests, noraise=True)
        found_qdiscs, found_classes = {}, {}
        for msg in answers:
            if msg["header"]["type"] == RTM_NEWQDISC:
                found_qdiscs[msg["index"], msg["handle"]] = self._qdisc(msg)
            elif msg["header"]["type"] == RTM_NEWTCLASS:
                found_classes[msg["index"], msg["handle"]] = self._traffic_class(msg)
        return found_qdiscs, found_classes

    @staticmethod
    def _qdisc(msg) -> Qdisc:
        kind = msg.get_attr("TCA_KIND") or ""
        rate = limit = 0
        options = msg.get_attr("TCA_OPTIONS")
        if kind == "tbf":
            parms = options.get_attr("TCA_TBF_PARMS")
            rate, limit = parms["rate"], parms["limit"]
        elif kind in ("bfifo", "pfifo") and options is not None:
            limit = options["limit"]
        return Qdisc(kind, msg["handle"], msg["parent"], rate, limit, msg["index"])

    @staticmethod
    def _traffic_class(msg) -> TrafficClass:
        kind = msg.get_attr("TCA_KIND") or ""
        rate = 0
        if kind == "htb":
            options = msg.get_attr("TCA_OPTIONS")
            parms = options.get_attr("TCA_HTB_PARMS") if options is not None else None
            rate = options.get_attr("TCA_HTB_RATE64") or parms["rate"] if parms is not None else 0
        return TrafficClass(kind, msg["handle"], msg["parent"], rate)

    # routes

    def add_route(self, dst: str, gateway: str = "", index: int = 0, priority: int = 0, table: int | None = None,
                  scope: int | None = None, mtu: int = 0, advmss: int = 0) -> None:
        address, prefix = split_cidr(dst)
        attributes: dict = {"dst_len": prefix, "family": AF_INET6 if ":" in address else AF_INET}
        if prefix:
            attributes["dst"] = address
        if gateway:
            attributes["gateway"] = gateway
        if index:
            attributes["oif"] = index
        if priority:
            attributes["priority"] = priority
        if table is not None:
            attributes["table"] = table
        if scope is not None:
            attributes["scope"] = scope
        metrics = {k: v for k, v in (("RTAX_MTU", mtu), ("RTAX_ADVMSS", advmss)) if v}
        if metrics:
            attributes["metrics"] = {"attrs": list(metrics.items())}
        try:
            self.call(f"adding route {dst} via {gateway or 'link'}", self.socket.route, "add", **attributes)
        except NetlinkFailure as e:
            if e.errno != errno.EEXIST:  # a duplicate: the first one wins, as in the reference
                raise

    def routes(self, family: int, table: int = 254) -> list[tuple[str, str, int]]:
        """(dst CIDR, gateway, oif) of the routes of one family in `table`."""
        found = self.call("reading routes", self.socket.get_routes, family=family, table=table)
        default = "0.0.0.0/0" if family == AF_INET else "::/0"
        out = []
        for r in found:
            dst = r.get_attr("RTA_DST")
            out.append((f"{dst}/{r['dst_len']}" if dst else default, r.get_attr("RTA_GATEWAY") or "",
                        r.get_attr("RTA_OIF") or 0))
        return out
