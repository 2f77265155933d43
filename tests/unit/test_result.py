"""Result model: the spec's JSON shape for each version, and conversion between versions."""

import pytest

from pycni.protocol.errors import DecodeFailure
from pycni.protocol.result import DNS, Interface, IPConfig, Result, Route

FULL = Result(
    interfaces=[Interface("cni0", "aa:bb:cc:dd:ee:01", mtu=1400), Interface("eth0", "aa:bb:cc:dd:ee:02",
                                                                             sandbox="/run/netns/p", mtu=1400)],
    ips=[IPConfig("10.0.0.2/24", "10.0.0.1", 1), IPConfig("fd00::2/64", "fd00::1", 1)],
    routes=[Route("0.0.0.0/0", "10.0.0.1", mtu=1400, priority=10, table=100, scope=0)],
    dns=DNS(nameservers=["10.0.0.10"], search=["svc.cluster.local"]),
)


def test_1_1_0_carries_the_new_fields():
    out = FULL.to_dict("1.1.0")
    assert out["cniVersion"] == "1.1.0"
    assert out["interfaces"][0] == {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1400}
    assert out["interfaces"][1]["sandbox"] == "/run/netns/p"
    assert out["ips"][0] == {"interface": 1, "address": "10.0.0.2/24", "gateway": "10.0.0.1"}
    assert out["routes"][0] == {"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1400, "priority": 10, "table": 100,
                                "scope": 0}
    assert out["dns"] == {"nameservers": ["10.0.0.10"], "search": ["svc.cluster.local"]}


def test_1_0_0_has_only_the_1_0_fields():
    out = FULL.to_dict("1.0.0")
    assert out["interfaces"][0] == {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"}
    assert out["routes"][0] == {"dst": "0.0.0.0/0", "gw": "10.0.0.1"}
    assert all("version" not in ip for ip in out["ips"])


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_0_x_results_have_ip_versions(version):
    out = FULL.to_dict(version)
    assert out["cniVersion"] == version
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert "mtu" not in out["interfaces"][0]


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_round_trip_through_every_version(version):
    parsed = Result.from_dict(FULL.to_dict(version), "1.1.0")
    assert [ip.address for ip in parsed.ips] == ["10.0.0.2/24", "fd00::2/64"]
    assert parsed.ips[0].interface == 1 and parsed.ips[0].gateway == "10.0.0.1"
    assert parsed.dns.nameservers == ["10.0.0.10"]
    assert parsed.to_dict(version) == FULL.to_dict(version)


def test_empty_dns_is_omitted():
    assert "dns" not in Result(ips=[IPConfig("10.0.0.2/24")]).to_dict("1.0.0")


def test_prev_result_keys_match_case_insensitively():
    parsed = Result.from_dict({"cniVersion": "1.0.0", "IPs": [{"Address": "10.1.0.5/16"}]}, "1.0.0")
    assert parsed.ips[0].address == "10.1.0.5/16"


@pytest.mark.parametrize("bad", [
    {"ips": [{"address": "10.0.0.1"}]},
    {"ips": [{"version": "6", "address": "10.0.0.1/24"}]},
    {"ips": "nope"},
    {"interfaces": [{"mac": "aa"}]},
    {"cniVersion": "0.2.0", "ips": []},
    {"routes": [{"gw": "1.2.3.4"}]},
])
def test_malformed_results_are_decode_failures(bad):
    with pytest.raises(DecodeFailure):
        Result.from_dict(bad, "1.0.0")
