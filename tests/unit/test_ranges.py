"""host-local range parsing and the round-robin iterator, against the reference's rules."""

import ipaddress

import pytest

from pycni.plugins.host_local.ranges import RangeSet, check_disjoint, iterate_from, parse_range, parse_range_set
from pycni.protocol.errors import InvalidConfig

A = ipaddress.ip_address


def test_defaults_follow_the_reference():
    r = parse_range({"subnet": "10.0.0.0/24"}, "r")
    assert (r.start, r.end, r.gateway) == (A("10.0.0.1"), A("10.0.0.254"), A("10.0.0.1"))
    v6 = parse_range({"subnet": "fd00::/120"}, "r")
    assert (v6.start, v6.end) == (A("fd00::1"), A("fd00::ff"))


@pytest.mark.parametrize("data,message", [
    ({"subnet": "10.0.0.1/24"}, "host bits"),
    ({"subnet": "10.0.0.0/31"}, "too small"),
    ({"subnet": "fd00::/127"}, "too small"),
    ({"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}, "not in network"),
    ({"subnet": "10.0.0.0/24", "rangeEnd": "fd00::1"}, "not in network"),
    ({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.50", "rangeEnd": "10.0.0.10"}, "after"),
])
def test_invalid_ranges(data, message):
    with pytest.raises(InvalidConfig, match=message):
        parse_range(data, "r")


def test_range_set_rules():
    with pytest.raises(InvalidConfig, match="mixes"):
        parse_range_set([{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}], "s")
    with pytest.raises(InvalidConfig, match="overlap"):
        parse_range_set([{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}], "s")
    a = parse_range_set([{"subnet": "10.0.0.0/24"}], "a")
    b = parse_range_set([{"subnet": "10.0.0.128/25"}], "b")
    with pytest.raises(InvalidConfig, match="range set 0 overlaps with range set 1"):
        check_disjoint([a, b])


def _order(range_set, last=None):
    return [str(ip) for _, ip in iterate_from(range_set, A(last) if last else None)]


def test_iteration_skips_gateway_and_visits_all_once():
    rs = parse_range_set([{"subnet": "10.0.0.0/29"}], "s")
    assert _order(rs) == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]


def test_round_robin_continues_after_last_reserved_and_wraps():
    rs = parse_range_set([{"subnet": "10.0.0.0/29"}], "s")
    assert _order(rs, "10.0.0.4") == ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]


def test_last_reserved_at_end_of_one_range_moves_to_next_range():
    rs = RangeSet([parse_range({"subnet": "10.0.0.0/29"}, "a"), parse_range({"subnet": "10.0.1.0/29"}, "b")])
    assert _order(rs, "10.0.0.6")[:2] == ["10.0.1.2", "10.0.1.3"]
    assert len(_order(rs)) == 10


def test_last_reserved_outside_the_set_starts_from_the_beginning():
    rs = parse_range_set([{"subnet": "10.0.0.0/29"}], "s")
    assert _order(rs, "192.168.0.1")[0] == "10.0.0.2"


def test_custom_start_end_and_gateway_inside():
    rs = parse_range_set([{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.12",
                           "gateway": "10.0.0.11"}], "s")
    assert _order(rs) == ["10.0.0.10", "10.0.0.12"]
    assert rs[0].size() == 2
