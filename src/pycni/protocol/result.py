"""The result model (spec 1.1.0 is canonical) and its conversion to and from every supported version."""

from __future__ import annotations

from dataclasses import dataclass, field

from pycni.protocol.errors import DecodeFailure
from pycni.protocol.jsonkeys import lookup
from pycni.protocol.versions import at_least, parse


def address_family(address: str) -> int:
    return 6 if ":" in address else 4


@dataclass(slots=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int = 0
    socket_path: str = ""
    pci_id: str = ""


@dataclass(slots=True)
class IPConfig:
    address: str  # CIDR: address/prefix
    gateway: str = ""
    interface: int | None = None

    @property
    def family(self) -> int:
        return address_family(self.address)

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]


@dataclass(slots=True)
class Route:
    dst: str
    gw: str = ""
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int | None = None
    scope: int | None = None


@dataclass(slots=True)
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)

    def to_dict(self) -> dict:
        out: dict = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_dict(cls, data) -> DNS:
        if not data:
            return cls()
        _require(isinstance(data, dict), "dns must be an object")
        return cls(
            nameservers=_str_list(lookup(data, "nameservers"), "dns.nameservers"),
            domain=_str(lookup(data, "domain"), "dns.domain"),
            search=_str_list(lookup(data, "search"), "dns.search"),
            options=_str_list(lookup(data, "options"), "dns.options"),
        )


@dataclass(slots=True)
class Result:
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

    def to_dict(self, version: str) -> dict:
        """The result as the spec's JSON for `version` (0.3.0 up to 1.1.0)."""
        rich = at_least(version, "1.1.0")
        with_ip_version = not at_least(version, "1.0.0")
        out: dict = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [_interface_dict(i, rich) for i in self.interfaces]
        if self.ips:
            out["ips"] = [_ip_dict(ip, with_ip_version) for ip in self.ips]
        if self.routes:
            out["routes"] = [_route_dict(r, rich) for r in self.routes]
        if not self.dns.is_empty():
            out["dns"] = self.dns.to_dict()
        return out

    @classmethod
    def from_dict(cls, data, default_version: str) -> Result:
        """Parse a result of any supported version (prevResult or a delegated plugin's output)."""
        _require(isinstance(data, dict), "a result must be a JSON object")
        version = lookup(data, "cniVersion") or default_version
        _require(isinstance(version, str), "result cniVersion must be a string")
        parse(version)
        _require(at_least(version, "0.3.0"), f"result version {version} is older than 0.3.0")
        interfaces = [_interface_from(i) for i in _list(lookup(data, "interfaces"), "interfaces")]
        ips = [_ip_from(ip, len(interfaces)) for ip in _list(lookup(data, "ips"), "ips")]
        routes = [route_from_dict(r) for r in _list(lookup(data, "routes"), "routes")]
        return cls(interfaces, ips, routes, DNS.from_dict(lookup(data, "dns")))


def _interface_dict(iface: Interface, rich: bool) -> dict:
    out: dict = {"name": iface.name}
    if iface.mac:
        out["mac"] = iface.mac
    if rich and iface.mtu:
        out["mtu"] = iface.mtu
    if iface.sandbox:
        out["sandbox"] = iface.sandbox
    if rich and iface.socket_path:
        out["socketPath"] = iface.socket_path
    if rich and iface.pci_id:
        out["pciID"] = iface.pci_id
    return out


def _ip_dict(ip: IPConfig, with_ip_version: bool) -> dict:
    out: dict = {}
    if with_ip_version:
        out["version"] = str(ip.family)
    if ip.interface is not None:
        out["interface"] = ip.interface
    out["address"] = ip.address
    if ip.gateway:
        out["gateway"] = ip.gateway
    return out


def _route_dict(route: Route, rich: bool) -> dict:
    out: dict = {"dst": route.dst}
    if route.gw:
        out["gw"] = route.gw
    if rich:
        for key, value in (("mtu", route.mtu), ("advmss", route.advmss), ("priority", route.priority)):
            if value:
                out[key] = value
        if route.table is not None:
            out["table"] = route.table
        if route.scope is not None:
            out["scope"] = route.scope
    return out


def _interface_from(data) -> Interface:
    _require(isinstance(data, dict), "interfaces[] entries must be objects")
    return Interface(
        name=_str(lookup(data, "name"), "interfaces[].name", required=True),
        mac=_str(lookup(data, "mac"), "interfaces[].mac"),
        sandbox=_str(lookup(data, "sandbox"), "interfaces[].sandbox"),
        mtu=_int(lookup(data, "mtu"), "interfaces[].mtu") or 0,
        socket_path=_str(lookup(data, "socketPath"), "interfaces[].socketPath"),
        pci_id=_str(lookup(data, "pciID"), "interfaces[].pciID"),
    )


def _ip_from(data, interface_count: int) -> IPConfig:
    _require(isinstance(data, dict), "ips[] entries must be objects")
    address = _str(lookup(data, "address"), "ips[].address", required=True)
    _require(address.count("/") == 1, f"ips[].address {address!r} is not in CIDR form")
    version = lookup(data, "version")
    if version is not None:
        _require(version in ("4", "6"), f"ips[].version must be \"4\" or \"6\", got {version!r}")
        _require(int(version) == address_family(address), f"ips[].version {version} does not match {address}")
    interface = _int(lookup(data, "interface"), "ips[].interface")
    if interface is not None:
        _require(0 <= interface < max(interface_count, 1) or interface_count == 0,
                 f"ips[].interface {interface} points past the {interface_count} interfaces")
    return IPConfig(address, _str(lookup(data, "gateway"), "ips[].gateway"), interface)


def route_from_dict(data: object) -> Route:
    """A Route from its JSON form (results, and IPAM configs that list routes the same way)."""
    if not isinstance(data, dict):
        raise DecodeFailure("failed to parse result", "routes[] entries must be objects")
    return Route(
        dst=_str(lookup(data, "dst"), "routes[].dst", required=True),
        gw=_str(lookup(data, "gw"), "routes[].gw"),
        mtu=_int(lookup(data, "mtu"), "routes[].mtu") or 0,
        advmss=_int(lookup(data, "advmss"), "routes[].advmss") or 0,
        priority=_int(lookup(data, "priority"), "routes[].priority") or 0,
        table=_int(lookup(data, "table"), "routes[].table"),
        scope=_int(lookup(data, "scope"), "routes[].scope"),
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DecodeFailure("failed to parse result", message)


def _str(value, where: str, required: bool = False) -> str:
    if value is None or value == "":
        _require(not required, f"{where} is required")
        return ""
    _require(isinstance(value, str), f"{where} must be a string, got {value!r}")
    return value


def _int(value, where: str) -> int | None:
    if value is None:
        return None
    _require(isinstance(value, int) and not isinstance(value, bool), f"{where} must be an integer, got {value!r}")
    return value


def _list(value, where: str) -> list:
    if value is None:
        return []
    _require(isinstance(value, list), f"{where} must be a list")
    return value


def _str_list(value, where: str) -> list[str]:
    return [_str(v, where + "[]", required=True) for v in _list(value, where)]
