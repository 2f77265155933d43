"""bridge: a veth pair from the pod to a Linux bridge on the node, addressed by the delegated IPAM plugin."""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field

from pycni.host import netlink, netns, sysctl
from pycni.plugins import delegation, interface, tags
from pycni.plugins.bridge import masquerade, spoofcheck
from pycni.protocol import skel
from pycni.protocol.errors import CNIError, InvalidConfig, UnsupportedField
from pycni.protocol.request import Request
from pycni.protocol.result import DNS, Interface, Result, Route

DEFAULT_BRIDGE = "cni0"
DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}


@dataclass(slots=True)
class BridgeConfig:
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    force_address: bool = False
    ip_masq: bool = False
    mtu: int = 0
    hairpin: bool = False
    promisc: bool = False
    vlan: int = 0
    vlan_trunk: list[int] = field(default_factory=list)
    preserve_default_vlan: bool = False
    enable_dad: bool = False
    macspoofchk: bool = False
    disable_container_interface: bool = False
    port_isolation: bool = False
    non_masquerade_cidrs: list[str] = field(default_factory=list)
    ipam_type: str = ""
    dns: DNS = field(default_factory=DNS)
    mac: str = ""

    @property
    def vlan_filtering(self) -> bool:
        return bool(self.vlan or self.vlan_trunk)

    @classmethod
    def from_request(cls, request: Request) -> BridgeConfig:
        c = request.config
        conf = cls(
            bridge=c.get("bridge") or DEFAULT_BRIDGE,
            is_default_gateway=c.get("isDefaultGateway", False),
            force_address=c.get("forceAddress", False),
            ip_masq=c.get("ipMasq", False),
            mtu=c.get("mtu", 0),
            hairpin=c.get("hairpinMode", False),
            promisc=c.get("promiscMode", False),
            vlan=c.get("vlan", 0),
            vlan_trunk=parse_vlan_trunk(c.get("vlanTrunk") or []),
            preserve_default_vlan=c.get("preserveDefaultVlan", False),
            enable_dad=c.get("enabledad", False),
            macspoofchk=c.get("macspoofchk", False),
            disable_container_interface=c.get("disableContainerInterface", False),
            port_isolation=c.get("portIsolation", False),
            non_masquerade_cidrs=list(c.get("nonMasqueradeCIDRs") or []),
            ipam_type=(c.get("ipam") or {}).get("type", ""),
            dns=DNS.from_dict(c.get("dns")),
            mac=_requested_mac(request),
        )
        conf.is_gateway = c.get("isGateway", False) or conf.is_default_gateway
        if conf.hairpin and conf.promisc:
            raise InvalidConfig("invalid network config: hairpinMode and promiscMode cannot both be set")
        if conf.ipam_type and conf.disable_container_interface:
            raise InvalidConfig("invalid network config: disableContainerInterface cannot be used with an ipam type",
                                "a container interface that stays down cannot be addressed")
        if c.get("ipMasqBackend") == "iptables":
            raise UnsupportedField('ipMasqBackend "iptables" is not supported',
                                   "pycni masquerades with nftables (table inet pycni_masq); omit the key")
        return conf


def parse_vlan_trunk(entries: list[dict]) -> list[int]:
    """vlanTrunk [{id} | {minID, maxID}] as a sorted list of VLAN IDs."""
    ids: set[int] = set()
    for i, entry in enumerate(entries):
        low, high = entry.get("minID"), entry.get("maxID")
        if (low is None) != (high is None):
            raise InvalidConfig(f"invalid network config: vlanTrunk[{i}] needs both minID and maxID")
        if low is not None and high is not None:
            if low > high:
                raise InvalidConfig(f"invalid network config: vlanTrunk[{i}] minID {low} is above maxID {high}")
            ids.update(range(low, high + 1))
        if entry.get("id") is not None:
            ids.add(entry["id"])
        if low is None and entry.get("id") is None:
            raise InvalidConfig(f"invalid network config: vlanTrunk[{i}] needs id or minID/maxID")
    return sorted(ids)


def _requested_mac(request: Request) -> str:
    """runtimeConfig.mac, then args.cni.mac, then CNI_ARGS MAC (the reference's priority)."""
    mac = request.runtime_config.get("mac") or ((request.config.get("args") or {}).get("cni") or {}).get("mac")
    mac = mac or request.cni_args.get("MAC", "")
    if mac and not _is_unicast_mac(mac):
        raise InvalidConfig(f"invalid MAC address {mac!r}", "a unicast MAC such as 0a:58:0a:f4:00:05")
    return mac.lower()


def _is_unicast_mac(mac: str) -> bool:
    parts = mac.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts) \
        and not int(parts[0], 16) & 1


def host_veth_name(request: Request) -> str:
    return tags.link_name("veth", request.network_name, request.container_id, request.ifname)


# ---------------------------------------------------------------- ADD


def add(request: Request) -> Result:
    conf = BridgeConfig.from_request(request)
    host_veth = host_veth_name(request)
    tag = tags.of_request(request)
    with netns.opened(request.netns, given=request.netns_fd) as pod_fd, netlink.session() as host, \
            netlink.session(pod_fd) as pod:
        assert pod_fd is not None  # must_exist
        with interface.Rollback() as undo:
            bridge = ensure_bridge(host, conf)
            try:
                host.add_veth(host_veth, request.ifname, pod_fd, conf.mtu, conf.mac, up=True)
            except netlink.NetlinkFailure as e:
                if e.errno == errno.EEXIST and pod.find_link(request.ifname) is not None:
                    raise CNIError(f"container already has an interface named {request.ifname}") from None
                raise
            undo.push(lambda: host.delete_link_named(host_veth))
            port = attach_port(host, conf, bridge.index, host_veth)
            pod_link = _must_read(pod, request.ifname, "container interface")
            pod_index = pod_link.index
            if conf.macspoofchk:
                spoofcheck.add(host_veth, pod_link.mac, tag)
                undo.push(lambda: spoofcheck.TABLE.remove(tag))
            result = Result()
            if conf.ipam_type:
                result = delegation.invoke(conf.ipam_type, "ADD", request) or Result()
                undo.push(lambda: delegation.invoke(conf.ipam_type, "DEL", request))
                if not result.ips:
                    raise CNIError(f"IPAM plugin {conf.ipam_type} returned no IP addresses")
                complete_gateways(result, conf)
                interface.configure(pod, pod_fd, pod_index, request.ifname, result, conf.enable_dad)
                configure_gateway(host, bridge.index, result, conf)
                if conf.ip_masq:
                    masquerade.add(result.ips, tag, conf.non_masquerade_cidrs)
                    undo.push(lambda: masquerade.remove(tag, result.ips, conf.non_masquerade_cidrs))
            elif not conf.disable_container_interface:
                pod.set_state(pod_index, up=True)
            enable_bridge_netfilter(any(ip.family == 6 for ip in result.ips))
            # the bridge is read again: its MTU follows its ports' when none is configured
            if conf.disable_container_interface:
                bridge = host.link(bridge.index)
            else:
                links = host.wait_oper_up(host_veth, also=(conf.bridge,))
                port, bridge = links[host_veth], links.get(conf.bridge, bridge)
                if port.operstate not in ("UP", "UNKNOWN"):
                    raise CNIError(f"bridge port {host_veth} is in state {port.operstate}")
    result.interfaces = [
        Interface(bridge.name, bridge.mac, mtu=bridge.mtu),
        Interface(port.name, port.mac, mtu=port.mtu),
        Interface(request.ifname, pod_link.mac, sandbox=request.netns, mtu=pod_link.mtu),
    ]
    for ip in result.ips:
        ip.interface = 2
    if not conf.dns.is_empty():
        result.dns = conf.dns
    return result


def ensure_bridge(host: netlink.Netlink, conf: BridgeConfig) -> netlink.LinkInfo:
    """Create the bridge or reuse it; an existing link of that name must be a bridge."""
    bridge = host.link_named(conf.bridge)
    if bridge is None:
        host.add_bridge(conf.bridge, conf.mtu, conf.vlan_filtering)
        bridge = _must_read(host, conf.bridge, "bridge")
        host.set_link(bridge.index, address=bridge.mac)  # pinned: it no longer follows the lowest port MAC
        if sysctl.exists(f"net/ipv6/conf/{conf.bridge}"):
            sysctl.write(f"net/ipv6/conf/{conf.bridge}/accept_ra", 0)
    if bridge.kind != "bridge":
        raise CNIError(f"{conf.bridge} already exists but is not a bridge (it is a {bridge.kind or 'plain'} link)")
    if conf.promisc and not bridge.flags & netlink.IFF_PROMISC:
        host.set_link(bridge.index, flags=netlink.IFF_PROMISC, change=netlink.IFF_PROMISC)
    if not bridge.up:
        host.set_state(bridge.index, up=True)
    return bridge


def attach_port(host: netlink.Netlink, conf: BridgeConfig, bridge_index: int, name: str) -> netlink.LinkInfo:
    """Make link `name` a port of the bridge (it is brought up when it is not already)."""
    port = _must_read(host, name, "host veth")
    index = port.index
    if sysctl.exists(f"net/ipv6/conf/{name}"):
        sysctl.write(f"net/ipv6/conf/{name}/accept_ra", 0)
    host.set_link(index, master=bridge_index)
    if conf.hairpin or conf.port_isolation:
        host.set_bridge_port(index, hairpin=conf.hairpin, isolated=conf.port_isolation)
    if conf.vlan_filtering:
        if not conf.preserve_default_vlan:
            host.vlan("del", index, 1)
        native = conf.vlan or 1
        host.vlan("add", index, native, pvid_untagged=True)
        for vid in conf.vlan_trunk:
            if vid != native:
                host.vlan("add", index, vid)
    if not port.up:
        host.set_state(index, up=True)
    return port


def complete_gateways(result: Result, conf: BridgeConfig) -> None:
    """Give every address a gateway (the subnet's first address, as the reference does) and add the
    default route per family when isDefaultGateway asks for it."""
    for ip in result.ips:
        if not ip.gateway and conf.is_gateway:
            ip.gateway = str(ipaddress.ip_interface(ip.address).network.network_address + 1)
    if not conf.is_default_gateway:
        return
    for family in (4, 6):
        gateway = next((ip.gateway for ip in result.ips if ip.family == family and ip.gateway), "")
        if not gateway:
            continue
        defaults = [r for r in result.routes if r.dst == DEFAULT_ROUTE[family]]
        if not defaults:
            result.routes.append(Route(DEFAULT_ROUTE[family], gateway))
        elif not any(r.gw for r in defaults):
            defaults[0].gw = gateway  # IPAM's default route without a gateway: it goes via ours


def configure_gateway(host: netlink.Netlink, bridge_index: int, result: Result, conf: BridgeConfig) -> None:
    if not conf.is_gateway:
        return
    families = set()
    for ip in result.ips:
        if not ip.gateway or ip.family in families:
            continue
        families.add(ip.family)
        prefix = ip.address.split("/", 1)[1]
        ensure_bridge_address(host, bridge_index, f"{ip.gateway}/{prefix}", conf.force_address)
    if 4 in families:
        sysctl.write("net/ipv4/ip_forward", 1)
    if 6 in families:
        sysctl.write("net/ipv6/conf/all/forwarding", 1)


def ensure_bridge_address(host: netlink.Netlink, bridge_index: int, cidr: str, force: bool) -> None:
    wanted = ipaddress.ip_interface(cidr)
    family = netlink.AF_INET if wanted.version == 4 else netlink.AF_INET6
    present = [ipaddress.ip_interface(f"{a}/{p}") for a, p in host.addresses(bridge_index, family)]
    if wanted in present:
        return
    # IPv4: a bridge carries one gateway address; IPv6: several, unless they overlap.
    conflicting = [a for a in present if not a.ip.is_link_local and (
        wanted.version == 4 or a.network.overlaps(wanted.network))]
    if conflicting and not force:
        raise CNIError(f"bridge already has address {conflicting[0]}, different from gateway {cidr}",
                       "set forceAddress to replace it")
    for old in conflicting:
        host.delete_address(bridge_index, str(old))
    host.add_address(bridge_index, cidr, nodad=True)


def enable_bridge_netfilter(ipv6: bool) -> None:
    """kube-proxy's rules only see bridged pod traffic with bridge-nf-call-ip(6)tables=1."""
    if not sysctl.exists("net/bridge/bridge-nf-call-iptables"):
        _load_br_netfilter()
    sysctl.write("net/bridge/bridge-nf-call-iptables", 1)
    if ipv6:
        sysctl.write("net/bridge/bridge-nf-call-ip6tables", 1)


def _load_br_netfilter() -> None:
    import subprocess

    subprocess.run(["modprobe", "br_netfilter"], capture_output=True, timeout=30)
    if not sysctl.exists("net/bridge/bridge-nf-call-iptables"):
        raise CNIError("net.bridge.bridge-nf-call-iptables is missing: the br_netfilter module is not loaded",
                       "run `modprobe br_netfilter` on the node")


# ---------------------------------------------------------------- DEL


def delete(request: Request) -> None:
    conf = BridgeConfig.from_request(request)
    # the veth pair: down at once, so that its address answers nothing after the DEL, and in the service
    # unregistered after answering (~20 ms of the kernel's that the runtime need not wait for); the host end
    # goes with the pod's
    dropped = False
    if request.netns:
        with netns.opened(request.netns, must_exist=False, given=request.netns_fd) as pod_fd:
            if pod_fd is not None:
                with netlink.session(pod_fd) as pod:
                    dropped = pod.drop_link_named(request.ifname)
    with netlink.session() as host:
        if dropped:
            host.drop_veth_peer_named(host_veth_name(request))
        else:
            host.drop_link_named(host_veth_name(request))
    if conf.ipam_type:
        delegation.invoke(conf.ipam_type, "DEL", request)
    if conf.ip_masq:
        ips = [ip for ip in request.prev_result.ips if ip.interface in (None, 2)] if request.prev_result else None
        masquerade.remove(tags.of_request(request), ips, conf.non_masquerade_cidrs)
    if conf.macspoofchk:
        spoofcheck.TABLE.remove(tags.of_request(request))


# ---------------------------------------------------------------- CHECK


def check(request: Request) -> None:
    conf = BridgeConfig.from_request(request)
    prev = request.prev_result
    if prev is None:
        raise CNIError("required prevResult missing")
    if conf.ipam_type:
        delegation.invoke(conf.ipam_type, "CHECK", request)
    pod_iface_index = next((i for i, iface in enumerate(prev.interfaces)
                            if iface.name == request.ifname and iface.sandbox), None)
    if pod_iface_index is None:
        raise CNIError(f"prevResult has no interface {request.ifname} with a sandbox")
    expected = prev.interfaces[pod_iface_index]
    with netlink.session() as host:
        host_links = host.links_named([conf.bridge, host_veth_name(request)])
        bridge = host_links.get(conf.bridge)
        if bridge is None:
            raise CNIError(f"bridge {conf.bridge} not found")
        if bridge.kind != "bridge":
            raise CNIError(f"{conf.bridge} is not a bridge")
        if conf.promisc != bool(bridge.flags & netlink.IFF_PROMISC):
            raise CNIError(f"bridge {conf.bridge} promiscuous mode is not {conf.promisc}")
        with netns.opened(request.netns, given=request.netns_fd) as pod_fd, netlink.session(pod_fd) as pod:
            pod_link = _must_read(pod, request.ifname, "container interface")
            if pod_link.kind != "veth":
                raise CNIError(f"container interface {request.ifname} is a {pod_link.kind}, not a veth")
            if expected.mac and pod_link.mac.lower() != expected.mac.lower():
                raise CNIError(f"container interface {request.ifname} has MAC {pod_link.mac}, expected {expected.mac}")
            port = host_links.get(host_veth_name(request))
            if port is None:
                raise CNIError(f"host veth {host_veth_name(request)} not found")
            if port.index != pod_link.peer_index or port.master != bridge.index:
                raise CNIError(f"host veth {port.name} is not the peer of {request.ifname} on {conf.bridge}")
            present = {f"{a}/{p}" for a, p in pod.addresses(pod_link.index)}
            mine = [ip for ip in prev.ips if ip.interface in (None, pod_iface_index)]
            for ip in mine:
                if ip.address not in present:
                    raise CNIError(f"address {ip.address} is missing on {request.ifname}")
            routing_tables: dict[tuple[int, int], list[tuple[str, str, int]]] = {}
            for route in prev.routes:
                family = netlink.AF_INET6 if ":" in route.dst else netlink.AF_INET
                table = routing_tables.get((family, route.table or 254))
                if table is None:
                    table = routing_tables[family, route.table or 254] = pod.routes(family, route.table or 254)
                if not any(dst == route.dst and (not route.gw or gw == route.gw) for dst, gw, _ in table):
                    raise CNIError(f"route {route.dst} via {route.gw or 'link'} is missing in the container")
    if conf.ip_masq and mine:
        lost = masquerade.missing(mine, tags.of_request(request))
        if lost:
            raise CNIError(f"masquerade rule missing for {', '.join(lost)}")
    if conf.macspoofchk and not spoofcheck.present(tags.of_request(request)):
        raise CNIError(f"macspoofchk rule missing for {request.ifname}")


def _must_read(session: netlink.Netlink, name: str, what: str) -> netlink.LinkInfo:
    link = session.link_named(name)
    if link is None:
        raise CNIError(f"{what} {name} not found")
    return link


# ---------------------------------------------------------------- GC / STATUS


def gc(request: Request) -> None:
    """Drop masquerade and spoofcheck elements of attachments the runtime no longer lists; GC the IPAM; delete
    the veths a DEL set down but did not get to unregister (a service killed before its deferred deletions)."""
    conf = BridgeConfig.from_request(request)
    stale = tags.stale_rule(request.network_name, request.valid_attachments)
    errors = []
    try:
        _drop_retired_ports(request, conf.bridge)
    except CNIError as e:
        errors.append(e)
    if conf.ipam_type:
        try:
            delegation.invoke(conf.ipam_type, "GC", request)
        except CNIError as e:
            errors.append(e)
    for table in (masquerade.TABLE, spoofcheck.TABLE):
        try:
            table.gc(stale)
        except CNIError as e:
            errors.append(e)
    if errors:
        raise CNIError("; ".join(e.msg for e in errors), "; ".join(e.details for e in errors if e.details))


def _drop_retired_ports(request: Request, bridge_name: str) -> None:
    """The bridge's ports a DEL retired (`drop_link_named`: down, marked) but did not get to unregister: left
    by a service killed before its deferred deletions. No other link is touched."""
    keep = {tags.link_name("veth", request.network_name, container_id, ifname)
            for container_id, ifname in request.valid_attachments or ()}
    with netlink.session() as host:
        links = host.links()
        bridge = next((link.index for link in links if link.name == bridge_name), None)
        for link in links:
            if bridge is not None and link.master == bridge and link.alias == netlink.RETIRED_ALIAS \
                    and link.name not in keep:
                host.delete_link_named(link.name)


PLUGIN = skel.PluginSpec(
    name="bridge",
    about="attaches pods to a Linux bridge with a veth pair",
    schema="bridge.json",
    add=add,
    delete=delete,
    check=check,
    gc=gc,
    status=delegation.ipam_status,
    known_cni_args=frozenset({"MAC"}),
)


def main() -> None:
    skel.main(PLUGIN)


if __name__ == "__main__":
    main()
