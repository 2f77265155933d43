"""host-local IPAM: addresses from configured ranges, reserved in files on this node."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pycni.plugins.host_local.allocator import AllocationError, allocate, free_addresses
from pycni.plugins.host_local.ranges import IPAddress, RangeSet, check_disjoint, parse_range_set
from pycni.plugins.host_local.store import DiskStore
from pycni.protocol import skel
from pycni.protocol.errors import CNIError, InvalidConfig, NotAvailable
from pycni.protocol.request import Request
from pycni.protocol.result import DNS, IPConfig, Result, Route, route_from_dict

DEFAULT_DATA_DIR = "/var/lib/cni/networks"


@dataclass(slots=True)
class HostLocalConfig:
    range_sets: list[RangeSet]
    data_dir: str = DEFAULT_DATA_DIR
    routes: list[Route] = field(default_factory=list)
    resolv_conf: str = ""
    requested: list[IPAddress] = field(default_factory=list)

    @classmethod
    def from_request(cls, request: Request) -> HostLocalConfig:
        ipam = request.config["ipam"]
        return cls(
            range_sets=range_sets_of(ipam, request.runtime_config),
            data_dir=ipam.get("dataDir") or DEFAULT_DATA_DIR,
            routes=[route_from_dict(r) for r in ipam.get("routes") or []],
            resolv_conf=ipam.get("resolvConf") or "",
            requested=_requested_addresses(request),
        )


def range_sets_of(ipam: dict, runtime_config: dict) -> list[RangeSet]:
    """The range-sets an ipam section gives, numbered as the plugin numbers them: runtime ipRanges first,
    then the legacy `subnet` keys, then `ranges`; checked to be disjoint."""
    raw_sets = list(runtime_config.get("ipRanges") or [])
    if ipam.get("subnet"):
        legacy = {k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if ipam.get(k)}
        raw_sets.append([legacy])
    raw_sets.extend(ipam.get("ranges") or [])
    if not raw_sets:
        raise InvalidConfig("invalid network config: ipam has no IP ranges", "set ipam.ranges or ipam.subnet")
    range_sets = [parse_range_set(entries, f"ipam.ranges[{i}]") for i, entries in enumerate(raw_sets)]
    check_disjoint(range_sets)
    return range_sets


def _requested_addresses(request: Request) -> list[IPAddress]:
    """Requested IPs from every source, merged as the reference does: CNI_ARGS IP, args.cni.ips, runtimeConfig.ips."""
    texts = [t for t in request.cni_args.get("IP", "").split(",") if t]
    texts += (request.config.get("args") or {}).get("cni", {}).get("ips") or []
    texts += request.runtime_config.get("ips") or []
    requested = []
    for text in texts:
        try:
            requested.append(ipaddress.ip_address(text.split("/", 1)[0]))
        except ValueError:
            raise InvalidConfig(f"invalid requested IP address {text!r}") from None
    return requested


def parse_resolv_conf(path: str) -> DNS:
    dns = DNS()
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InvalidConfig(f"cannot read ipam.resolvConf {path!r}: {e.strerror}") from None
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        keyword, values = words[0], words[1:]
        if keyword == "nameserver":
            dns.nameservers.append(values[0])
        elif keyword == "domain":
            dns.domain = values[0]
        elif keyword == "search":
            dns.search = values
        elif keyword == "options":
            dns.options.extend(values)
    return dns


def add(request: Request) -> Result:
    conf = HostLocalConfig.from_request(request)
    dns = parse_resolv_conf(conf.resolv_conf) if conf.resolv_conf else DNS()
    store = DiskStore(conf.data_dir, request.network_name)
    unclaimed = list(conf.requested)
    ips: list[IPConfig] = []
    with store.locked():
        reserved_now = []
        try:
            for index, range_set in enumerate(conf.range_sets):
                wanted = next((a for a in unclaimed if range_set.find(a)), None)
                if wanted is not None:
                    unclaimed.remove(wanted)
                chosen, address = allocate(store, range_set, index, request.container_id, request.ifname, wanted)
                reserved_now.append(address)
                ips.append(IPConfig(f"{address}/{chosen.subnet.prefixlen}", str(chosen.gateway)))
            if unclaimed:
                raise AllocationError(
                    f"failed to allocate all requested IPs: {', '.join(map(str, unclaimed))}",
                    "each requested address must lie in one of the range sets",
                )
        except BaseException:
            for address in reserved_now:
                store.release(address)
            raise
    return Result(ips=ips, routes=conf.routes, dns=dns)


def delete(request: Request) -> None:
    """Release the attachment's addresses. With a prevResult naming them only those files are read (O(1));
    otherwise every reservation is checked, as the reference always does."""
    conf = HostLocalConfig.from_request(request)
    store = DiskStore(conf.data_dir, request.network_name)
    listed = [ipaddress.ip_address(ip.ip) for ip in (request.prev_result.ips if request.prev_result else [])]
    listed = [a for a in listed if any(rs.find(a) for rs in conf.range_sets)]
    with store.locked():
        mine = [r for r in map(store.reservation, listed) if r and r.belongs_to(request.container_id, request.ifname)]
        if not mine:  # prevResult absent, or naming none of ours: look through every reservation
            mine = [r for r in store.reservations() if r.belongs_to(request.container_id, request.ifname)]
        for reservation in mine:
            store.release(reservation.address)


def check(request: Request) -> None:
    """Every range set holds an address of this attachment, and every address of ours in prevResult is
    reserved for it. The addresses prevResult names are looked up by name (O(1)); only a range set it
    names none in is searched for, through every reservation."""
    conf = HostLocalConfig.from_request(request)
    store = DiskStore(conf.data_dir, request.network_name)
    claimed = [ipaddress.ip_address(ip.ip) for ip in request.prev_result.ips] if request.prev_result else []
    claimed = [address for address in claimed if any(rs.find(address) for rs in conf.range_sets)]
    for address in claimed:
        holder = store.reservation(address)
        if holder is None or not holder.belongs_to(request.container_id, request.ifname):
            raise CNIError(f"host-local: {address} from prevResult is not reserved for {request.container_id}")
    mine: set | None = None
    for index, range_set in enumerate(conf.range_sets):
        if any(range_set.find(address) for address in claimed):
            continue
        if mine is None:
            mine = {r.address for r in store.reservations() if r.belongs_to(request.container_id, request.ifname)}
        if not any(range_set.find(address) for address in mine):
            raise CNIError(
                f"host-local: no address reserved for {request.container_id}/{request.ifname} in range set {index}"
            )


def gc(request: Request) -> None:
    """Release every reservation whose attachment the runtime no longer lists as valid."""
    conf = HostLocalConfig.from_request(request)
    valid = request.valid_attachments or frozenset()
    valid_ids = {container_id for container_id, _ in valid}
    store = DiskStore(conf.data_dir, request.network_name)
    with store.locked():
        for reservation in store.reservations():
            still_valid = (
                (reservation.container_id, reservation.ifname) in valid
                if reservation.ifname
                else reservation.container_id in valid_ids
            )
            if not still_valid:
                store.release(reservation.address)
        store.remove_stale_temporaries()


def usage(ipam: dict, network: str, runtime_config: dict | None = None) -> tuple[str, list[tuple[RangeSet, int, int]]]:
    """(the data dir, each range set with its used and free addresses), from one read of the store: what
    STATUS, `pycni status` and the service's metrics all report."""
    data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
    range_sets = range_sets_of(ipam, runtime_config or {})
    reserved = [r.address for r in DiskStore(data_dir, network).reservations()]
    return data_dir, [(s, sum(1 for a in reserved if s.find(a)), free_addresses(s, reserved)) for s in range_sets]


def status(request: Request) -> None:
    """Code 50 when an ADD could not get an address: some range set has none free."""
    _, sets = usage(request.config["ipam"], request.network_name, request.runtime_config)
    for index, (range_set, _, free) in enumerate(sets):
        if free <= 0:
            raise NotAvailable(f"host-local: range set {index} ({range_set}) has no free addresses")


PLUGIN = skel.PluginSpec(
    name="host-local",
    about="IP address management from local ranges",
    schema="host-local.json",
    add=add,
    delete=delete,
    check=check,
    gc=gc,
    status=status,
    known_cni_args=frozenset({"IP"}),
)


def main() -> None:
    skel.main(PLUGIN)


if __name__ == "__main__":
    main()
