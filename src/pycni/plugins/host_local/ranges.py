"""Address ranges and range-sets as host-local defines them (pure logic, no I/O)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pycni.protocol.errors import InvalidConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class IPRange:
    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress

    @property
    def family(self) -> int:
        return self.subnet.version

    def contains(self, address: IPAddress) -> bool:
        return address.version == self.family and address in self.subnet and \
            int(self.start) <= int(address) <= int(self.end)

    def size(self) -> int:
        """Allocatable addresses: start..end without the gateway."""
        total = int(self.end) - int(self.start) + 1
        gateway_inside = self.gateway.version == self.family and int(self.start) <= int(self.gateway) <= int(self.end)
        return total - (1 if gateway_inside else 0)

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


class RangeSet(tuple):
    """One address is allocated from each range-set; its ranges share one address family."""

    @property
    def family(self) -> int:
        return self[0].family

    def find(self, address: IPAddress) -> IPRange | None:
        return next((r for r in self if r.contains(address)), None)

    def overlaps(self, other: RangeSet) -> bool:
        return any(a.subnet.overlaps(b.subnet) for a in self for b in other)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self)


def parse_range(data: dict, where: str) -> IPRange:
    """A range from config keys, with the reference's defaults and checks."""
    subnet_text = data["subnet"]
    try:
        interface = ipaddress.ip_interface(subnet_text)
    except ValueError:
        raise InvalidConfig(f"invalid network config: {where}.subnet {subnet_text!r} is not a CIDR") from None
    subnet = interface.network
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise InvalidConfig(f"invalid network config: {where}.subnet: network {subnet} too small to allocate from")
    if interface.ip != subnet.network_address:
        raise InvalidConfig(
            f"invalid network config: {where}.subnet {subnet_text!r}: network has host bits set",
            f"for a prefix of length {subnet.prefixlen} the network address is {subnet.network_address}",
        )
    first = subnet.network_address + 1
    last = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
    gateway = _address_in(data.get("gateway"), subnet, f"{where}.gateway", first, must_contain=False)
    start = _address_in(data.get("rangeStart"), subnet, f"{where}.rangeStart", first)
    end = _address_in(data.get("rangeEnd"), subnet, f"{where}.rangeEnd", last)
    if int(start) > int(end):
        raise InvalidConfig(f"invalid network config: {where}: rangeStart {start} is after rangeEnd {end}")
    return IPRange(subnet, start, end, gateway)


def parse_range_set(entries: list, where: str) -> RangeSet:
    if not entries:
        raise InvalidConfig(f"invalid network config: {where} is an empty range set")
    ranges = [parse_range(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]
    if len({r.family for r in ranges}) > 1:
        raise InvalidConfig(f"invalid network config: {where} mixes address families")
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            if a.subnet.overlaps(b.subnet):
                raise InvalidConfig(f"invalid network config: {where}: subnets {a.subnet} and {b.subnet} overlap")
    return RangeSet(ranges)


def check_disjoint(sets: list[RangeSet]) -> None:
    for i, a in enumerate(sets):
        for j in range(i + 1, len(sets)):
            if a.overlaps(sets[j]):
                raise InvalidConfig(f"invalid network config: range set {i} overlaps with range set {j}")


def _address_in(text, subnet: IPNetwork, where: str, default: IPAddress, must_contain: bool = True) -> IPAddress:
    if not text:
        return default
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidConfig(f"invalid network config: {where} {text!r} is not an IP address") from None
    if must_contain and (address.version != subnet.version or address not in subnet):
        raise InvalidConfig(f"invalid network config: {where} {address} is not in network {subnet}")
    return address


def iterate_from(range_set: RangeSet, last_reserved: IPAddress | None):
    """Candidate addresses in round-robin order: after `last_reserved`, wrapping across the set's ranges,
    skipping each range's gateway, visiting every address once (the reference's RangeIter)."""
    index, current = 0, None
    if last_reserved is not None:
        for i, r in enumerate(range_set):
            if r.contains(last_reserved):
                index, current = i, last_reserved
                break
    first = None
    while True:
        r = range_set[index]
        if current is None:
            current = r.start
        elif current >= r.end:
            index = (index + 1) % len(range_set)
            r = range_set[index]
            current = r.start
        else:
            current = current + 1
        if first is None:
            first = current
        elif current == first:
            return
        if current != r.gateway:
            yield r, current
