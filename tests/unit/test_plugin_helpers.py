"""Pure helpers of the plugins that the root-only integration tests otherwise exercise only through the kernel."""

from pycni.plugins import tags
from pycni.plugins.bandwidth.shaper import ETHERNET_HEADER, RUNTIME_UNLIMITED_BURST, TokenBucket
from pycni.plugins.bridge import BridgeConfig, complete_gateways
from pycni.plugins.portmap import PortmapConfig, PortMapping, planned_elements
from pycni.protocol.result import IPConfig, Result, Route

# ---------------------------------------------------------------- portmap


def _elements(conf, addresses):
    return [(e.set_name, e.key_text, e.value_text) for e in planned_elements(conf, addresses, "abc")]


def test_wildcard_mapping_goes_to_the_any_map_of_each_family_with_hairpin_and_localhost():
    conf = PortmapConfig([PortMapping(8080, 80, "tcp")])
    assert _elements(conf, {4: "10.0.0.2", 6: "fd00::2"}) == [
        ("net-abc-any4", "tcp . 8080", "10.0.0.2 . 80"),
        ("hairpin4", "10.0.0.2 . 10.0.0.2", ""),
        ("localhost4", "10.0.0.2", ""),
        ("net-abc-any6", "tcp . 8080", "fd00::2 . 80"),
        ("hairpin6", "fd00::2 . fd00::2", ""),
    ]


def test_host_ip_mapping_only_in_its_own_family_and_no_snat_sets_without_snat():
    conf = PortmapConfig([PortMapping(53, 5353, "udp", "192.0.2.1")], snat=False, masq_all=True)
    assert _elements(conf, {4: "10.0.0.2", 6: "fd00::2"}) == [
        ("net-abc-ip4", "192.0.2.1 . udp . 53", "10.0.0.2 . 5353"),
        ("masqall4", "10.0.0.2", ""),
        ("masqall6", "fd00::2", ""),
    ]


# ---------------------------------------------------------------- bridge gateways


def test_gateway_is_the_first_address_of_the_subnet_and_default_routes_follow_it():
    result = Result(ips=[IPConfig("10.1.0.7/24"), IPConfig("fd00:1::7/64")])
    complete_gateways(result, BridgeConfig(is_gateway=True, is_default_gateway=True))
    assert [ip.gateway for ip in result.ips] == ["10.1.0.1", "fd00:1::1"]
    assert [(r.dst, r.gw) for r in result.routes] == [("0.0.0.0/0", "10.1.0.1"), ("::/0", "fd00:1::1")]


def test_an_ipam_gateway_is_kept_and_an_ipam_default_route_without_gateway_goes_via_it():
    result = Result(ips=[IPConfig("10.1.0.7/24", gateway="10.1.0.254")], routes=[Route("0.0.0.0/0")])
    complete_gateways(result, BridgeConfig(is_gateway=True, is_default_gateway=True))
    assert [(r.dst, r.gw) for r in result.routes] == [("0.0.0.0/0", "10.1.0.254")]


def test_no_gateway_without_is_gateway():
    result = Result(ips=[IPConfig("10.1.0.7/24")])
    complete_gateways(result, BridgeConfig())
    assert result.ips[0].gateway == "" and result.routes == []


# ---------------------------------------------------------------- token buckets


def test_the_queue_is_sized_by_latency_not_by_the_burst():
    bucket = TokenBucket.from_bits(8_000_000, 800_000, 1500)
    assert (bucket.rate, bucket.burst) == (1_000_000, 100_000)
    assert bucket.limit == 8 * (1500 + ETHERNET_HEADER)  # the floor: 5 ms of 8 Mbit/s is fewer than 8 frames
    assert TokenBucket.from_bits(100_000_000, 800_000, 1500).limit == 62_500  # 5 ms
    assert TokenBucket.from_bits(100_000_000, 800_000, 1500, latency_seconds=0.002).limit == 25_000


def test_packets_over_a_millisecond_of_the_rate_are_segmented():
    assert TokenBucket.from_bits(8_000_000, 800_000, 1500).largest_packet == 1500 + ETHERNET_HEADER
    assert TokenBucket.from_bits(100_000_000, 800_000, 1500).largest_packet == 12_500
    assert TokenBucket.from_bits(10_000_000_000, 800_000, 9000).largest_packet == 65_536


def test_burst_is_at_least_one_frame_and_the_runtimes_unset_burst_is_100ms():
    assert TokenBucket.from_bits(8_000_000, 8, 1500).burst == 1500 + ETHERNET_HEADER
    assert TokenBucket.from_bits(8_000_000, RUNTIME_UNLIMITED_BURST, 1500).burst == 100_000


def test_burst_is_capped_at_a_minute_of_the_rate():
    assert TokenBucket.from_bits(8_000, RUNTIME_UNLIMITED_BURST - 1, 1500).burst == 1000 * 60


# ---------------------------------------------------------------- tags


def test_stale_rule_keeps_valid_attachments_and_other_networks():
    stale = tags.stale_rule("net", frozenset({("c1", "eth0")}))
    assert not stale(tags.attachment_tag("net", "c1", "eth0"))
    assert stale(tags.attachment_tag("net", "c2", "eth0"))
    assert not stale(tags.attachment_tag("other", "c2", "eth0"))
