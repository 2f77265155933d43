"""portmap: Kubernetes hostPort, DNAT from the node's addresses to the pod, on nftables maps."""

from __future__ import annotations

from dataclasses import dataclass, field

from pycni.host import conntrack, nft, sysctl
from pycni.plugins import tags
from pycni.plugins.portmap import layout as hostport
from pycni.protocol import skel
from pycni.protocol.errors import CNIError, InvalidConfig, UnsupportedField
from pycni.protocol.request import Request
from pycni.protocol.result import Result

WILDCARD_HOST_IPS = ("", "0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str
    host_ip: str = ""

    def family_allows(self, family: int) -> bool:
        if self.host_ip in WILDCARD_HOST_IPS:
            return True
        return (6 if ":" in self.host_ip else 4) == family


@dataclass(slots=True)
class PortmapConfig:
    mappings: list[PortMapping] = field(default_factory=list)
    snat: bool = True
    masq_all: bool = False
    conditions_v4: list[str] = field(default_factory=list)
    conditions_v6: list[str] = field(default_factory=list)

    @classmethod
    def from_request(cls, request: Request, refuse_conflicts: bool = False) -> PortmapConfig:
        """The config; `refuse_conflicts` (ADD) refuses one host port mapped to two container ports, which a DEL
        must not refuse (the first mapping of a host port is the one kept)."""
        c = request.config
        for key in ("markMasqBit", "externalSetMarkChain"):
            if key in c:
                raise UnsupportedField(f"{key} is not supported", "it configures the iptables backend; pycni's portmap "
                                       "runs on nftables and masquerades hairpin traffic through sets, no mark bit")
        if c.get("backend") == "iptables":
            raise UnsupportedField('backend "iptables" is not supported',
                                   "pycni's portmap uses nftables (table inet pycni_hostport); omit the key")
        for key in ("conditionsV4", "conditionsV6"):
            if any(cond.lstrip().startswith(("-", "!")) for cond in c.get(key) or []):
                raise UnsupportedField(f"{key} uses iptables syntax", "give nftables match expressions, e.g. "
                                       '"ip saddr 10.0.0.0/8"')
        mappings = [PortMapping(m["hostPort"], m["containerPort"], m.get("protocol", "tcp").lower(),
                                m.get("hostIP", "")) for m in request.runtime_config.get("portMappings") or []]
        return cls(_distinct(mappings, refuse_conflicts), c.get("snat", True), c.get("masqAll", False),
                   list(c.get("conditionsV4") or []), list(c.get("conditionsV6") or []))


def _distinct(mappings: list[PortMapping], refuse_conflicts: bool) -> list[PortMapping]:
    """The mappings with repeats dropped; one host port (address, protocol, port) mapped to two container ports
    is refused here, by name, instead of by the kernel for a map key given two values."""
    seen: dict[tuple[str, str, int], PortMapping] = {}
    for mapping in mappings:
        key = ("" if mapping.host_ip in WILDCARD_HOST_IPS else mapping.host_ip, mapping.protocol, mapping.host_port)
        first = seen.setdefault(key, mapping)
        if refuse_conflicts and first.container_port != mapping.container_port:
            where = f"{mapping.host_ip}:" if key[0] else ""
            raise InvalidConfig(f"portMappings map host port {where}{mapping.host_port}/{mapping.protocol} twice",
                                f"to container ports {first.container_port} and {mapping.container_port}")
    return list(seen.values())


@dataclass(frozen=True, slots=True)
class Element:
    """One nft set or map element this pod owns."""

    set_name: str  # the nft set or map holding it
    key: object  # JSON form
    key_text: str  # nft syntax, for lookups
    value: object = None  # JSON form, maps only
    value_text: str = ""


def pod_addresses(request: Request) -> dict[int, str]:
    """First IPv4 and first IPv6 address of CNI_IFNAME (inside the sandbox) in prevResult."""
    prev = request.prev_result
    addresses: dict[int, str] = {}
    if prev is None:
        return addresses
    for ip in prev.ips:
        if ip.interface is not None:
            if ip.interface >= len(prev.interfaces):
                continue
            iface = prev.interfaces[ip.interface]
            if iface.name != request.ifname or not iface.sandbox:
                continue
        addresses.setdefault(ip.family, ip.ip)
    return addresses


def planned_elements(conf: PortmapConfig, addresses: dict[int, str], network_tag: str) -> list[Element]:
    maps = hostport.map_names(network_tag)
    elements: list[Element] = []
    for family, pod_ip in sorted(addresses.items()):
        for m in conf.mappings:
            if not m.family_allows(family):
                continue
            value = {"concat": [pod_ip, m.container_port]}
            value_text = f"{pod_ip} . {m.container_port}"
            if m.host_ip in WILDCARD_HOST_IPS:
                elements.append(Element(maps[f"any{family}"], {"concat": [m.protocol, m.host_port]},
                                        f"{m.protocol} . {m.host_port}", value, value_text))
            else:
                elements.append(Element(maps[f"ip{family}"], {"concat": [m.host_ip, m.protocol, m.host_port]},
                                        f"{m.host_ip} . {m.protocol} . {m.host_port}", value, value_text))
        if conf.snat:
            elements.append(Element(f"hairpin{family}", {"concat": [pod_ip, pod_ip]}, f"{pod_ip} . {pod_ip}"))
            if family == 4:
                elements.append(Element("localhost4", pod_ip, pod_ip))
        if conf.masq_all:
            elements.append(Element(f"masqall{family}", pod_ip, pod_ip))
    return elements


def _add_command(element: Element, tag: str) -> dict:
    tagged = {"elem": {"val": element.key, "comment": tag}}
    item = [tagged, element.value] if element.value is not None else tagged
    return {"add": {"element": {"family": hostport.FAMILY, "table": hostport.TABLE, "name": element.set_name,
                                "elem": [item]}}}


def _owner(element: Element) -> str | None:
    return nft.element_comment(hostport.FAMILY, hostport.TABLE, element.set_name, element.key_text)


def _require_chained(request: Request) -> Result:
    if request.prev_result is None:
        raise CNIError("portmap must be called as a chained plugin (no prevResult)")
    return request.prev_result


def add(request: Request) -> Result:
    prev = _require_chained(request)
    conf = PortmapConfig.from_request(request, refuse_conflicts=True)
    if not conf.mappings:
        return prev
    addresses = pod_addresses(request)
    if not addresses:
        raise CNIError(f"prevResult has no address on {request.ifname} to forward host ports to")
    network_tag = tags.network_tag(request.network_name)
    tag = tags.of_request(request)
    elements = planned_elements(conf, addresses, network_tag)
    commands = [_add_command(e, tag) for e in elements]
    try:
        if not nft.try_run(commands):  # first pod of the network on this node, or a taken port
            hostport.ensure(network_tag, conf.conditions_v4, conf.conditions_v6)
            nft.run(commands)
    except nft.NftError as e:
        taken = [el for el in elements if el.value is not None and (_owner(el) or tag) != tag]
        if taken:
            raise InvalidConfig(f"host port {taken[0].key_text.replace(' . ', '/')} is already allocated to another "
                                f"pod", f"held by {_owner(taken[0])}") from None
        raise e
    _flush_udp(conf, addresses)
    if conf.snat and 4 in addresses:
        _allow_localhost_dnat(prev)
    return prev


def _flush_udp(conf: PortmapConfig, addresses: dict[int, str]) -> None:
    for m in conf.mappings:
        if m.protocol == "udp":
            for family in addresses:
                if m.family_allows(family):
                    conntrack.flush_udp_destination_port(m.host_port, family)


def _allow_localhost_dnat(prev: Result) -> None:
    """127.0.0.1:hostPort from the node needs route_localnet on the links towards the pod (the bridge and
    the pod's host veth), as in the reference; it is scoped to those links, never `all`."""
    for iface in prev.interfaces:
        if not iface.sandbox and sysctl.exists(f"net/ipv4/conf/{iface.name}"):
            sysctl.write(f"net/ipv4/conf/{iface.name}/route_localnet", 1)


def delete(request: Request) -> None:
    conf = PortmapConfig.from_request(request)
    network_tag = tags.network_tag(request.network_name)
    tag = tags.of_request(request)
    addresses = pod_addresses(request)
    if conf.mappings and addresses:
        # each element looked up by its key: the cost does not depend on how many pods the node has
        planned = planned_elements(conf, addresses, network_tag)
        owners = nft.element_comments(hostport.FAMILY, hostport.TABLE, [(e.set_name, e.key_text) for e in planned])
        mine = [e for e, owner in zip(planned, owners, strict=True) if owner == tag]
        nft.run([nft.delete_element(hostport.FAMILY, hostport.TABLE, e.set_name, e.key) for e in mine])
        _flush_udp(conf, addresses)
    elif hostport.table_exists():
        # the runtime sent no mappings or no prevResult: find our elements by their tag
        set_names = tuple(hostport.map_names(network_tag).values()) + hostport.GLOBAL_SETS
        nft.remove_attachment(hostport.FAMILY, hostport.TABLE, set_names, tag)


def check(request: Request) -> None:
    _require_chained(request)
    conf = PortmapConfig.from_request(request)
    if not conf.mappings:
        return
    tag = tags.of_request(request)
    elements = planned_elements(conf, pod_addresses(request), tags.network_tag(request.network_name))
    entries = nft.element_texts(hostport.FAMILY, hostport.TABLE, [(e.set_name, e.key_text) for e in elements])
    for element, entry in zip(elements, entries, strict=True):
        if entry is None or f'comment "{tag}"' not in entry:
            raise CNIError(f"portmap: no entry for {element.key_text} in {element.set_name} owned by this pod")
        if element.value is not None and f": {element.value_text}" not in entry:
            raise CNIError(f"portmap: {element.key_text} does not point at {element.value_text}")


def gc(request: Request) -> None:
    if not hostport.table_exists():
        return
    set_names = tuple(hostport.map_names(tags.network_tag(request.network_name)).values()) + hostport.GLOBAL_SETS
    nft.remove_stale(hostport.FAMILY, hostport.TABLE, set_names,
                     tags.stale_rule(request.network_name, request.valid_attachments))


PLUGIN = skel.PluginSpec(
    name="portmap",
    about="Kubernetes hostPort on nftables",
    schema="portmap.json",
    add=add,
    delete=delete,
    check=check,
    gc=gc,
)


def main() -> None:
    skel.main(PLUGIN)


if __name__ == "__main__":
    main()
