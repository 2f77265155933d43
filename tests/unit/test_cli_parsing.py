"""Pure pieces of the operator's side: quantities, --port specs, conflist rendering."""

import json

import click
import pytest

from pycni.node.cli import parse_port
from pycni.node.install import launcher_text, render_conflist
from pycni.node.quantity import RUNTIME_BURST, bandwidth_from_annotations, parse_quantity
from pycni.plugins import read_launcher_marker as read_marker


@pytest.mark.parametrize("text,value", [("10M", 10_000_000), ("10Mi", 10 * 2**20), ("500k", 500_000),
                                        ("1.5G", 1_500_000_000), ("100", 100), ("0.5k", 500), ("1Gi", 2**30)])
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["10Q", "fast", "", "-5M", "10 M"])
def test_bad_quantities(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_annotations_become_the_bandwidth_capability_as_runtimes_make_it():
    bw = bandwidth_from_annotations({"kubernetes.io/ingress-bandwidth": "10M",
                                     "kubernetes.io/egress-bandwidth": "1Mi", "other": "x"})
    assert bw == {"ingressRate": 10_000_000, "ingressBurst": RUNTIME_BURST,
                  "egressRate": 2**20, "egressBurst": RUNTIME_BURST}
    with pytest.raises(ValueError, match="outside"):
        bandwidth_from_annotations({"kubernetes.io/ingress-bandwidth": "10"})


@pytest.mark.parametrize("spec,mapping", [
    ("8080:80/tcp", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}),
    ("53:53/UDP", {"hostPort": 53, "containerPort": 53, "protocol": "udp"}),
    ("9000", {"hostPort": 9000, "containerPort": 9000, "protocol": "tcp"}),
    ("8443:443@192.0.2.1", {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "192.0.2.1"}),
])
def test_port_specs(spec, mapping):
    assert parse_port(spec) == mapping


def test_bad_port_spec():
    with pytest.raises(click.BadParameter):
        parse_port("web:80")


def test_render_conflist_dual_stack_and_cluster_cidr():
    template = json.dumps({"cniVersion": "1.0.0", "name": "k", "plugins": [
        {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}},
        {"type": "portmap"}]})
    out = json.loads(render_conflist(template, ["10.244.3.0/24", "fd00:3::/64"], ["10.244.0.0/16"]))
    assert out["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.3.0/24"}], [{"subnet": "fd00:3::/64"}]]
    assert out["plugins"][0]["nonMasqueradeCIDRs"] == ["10.244.0.0/16"]
    with pytest.raises(ValueError):
        render_conflist(template, ["10.244.3.1/24"])


def test_launcher_marker_round_trip(tmp_path):
    path = tmp_path / "host-local"
    path.write_text(launcher_text("host-local", "/usr/bin/python3", "/opt/pycni/site"))
    assert read_marker(str(path)) == ("host-local", "/opt/pycni/site")
    assert path.read_text().startswith("#!/usr/bin/python3 -IS\n")
    other = tmp_path / "other"
    other.write_bytes(b"\x7fELF...")
    assert read_marker(str(other)) is None
