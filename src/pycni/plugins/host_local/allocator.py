"""Picking addresses from range-sets against a store (the reference allocator's rules)."""

from __future__ import annotations

from pycni.plugins.host_local.ranges import IPAddress, IPRange, RangeSet, iterate_from
from pycni.protocol.errors import CNIError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from pycni.plugins.host_local.store import DiskStore


class AllocationError(CNIError):
    """An address could not be allocated (exhausted pool, requested address taken...)."""

    code = 999


def allocate(
    store: DiskStore,
    range_set: RangeSet,
    set_index: int,
    container_id: str,
    ifname: str,
    requested: IPAddress | None,
) -> tuple[IPRange, IPAddress]:
    """Reserve one address of `range_set` for (container_id, ifname). The caller holds the store's lock."""
    if requested is not None:
        chosen = range_set.find(requested)
        if chosen is None:
            raise AllocationError(f"requested IP address {requested} is not in range set {range_set}")
        if requested == chosen.gateway:
            raise AllocationError(f"requested IP address {requested} is the subnet's gateway")
        if not store.reserve(requested, container_id, ifname, set_index):
            raise AllocationError(f"requested IP address {requested} is not available in range set {range_set}")
        return chosen, requested

    for reservation in store.reservations():
        if reservation.container_id == container_id and reservation.ifname == ifname and range_set.find(
            reservation.address
        ):
            raise AllocationError(
                f"{reservation.address} has been allocated to {container_id}, duplicate allocation is not allowed"
            )
    for candidate_range, candidate in iterate_from(range_set, store.last_reserved(set_index)):
        if store.reserve(candidate, container_id, ifname, set_index):
            return candidate_range, candidate
    raise AllocationError(f"no IP addresses available in range set: {range_set}")


def free_addresses(range_set: RangeSet, reserved: list[IPAddress]) -> int:
    taken = sum(1 for address in reserved if (r := range_set.find(address)) and address != r.gateway)
    return sum(r.size() for r in range_set) - taken
