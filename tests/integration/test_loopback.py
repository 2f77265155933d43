"""loopback, installed binary, real env protocol, inside a throwaway node namespace."""

import json

import pytest

from tests.helpers import plugin_env, run_plugin

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def lo_is_up(pod) -> bool:
    return "UP" in pod.link_json("lo")[0]["flags"]


def call(node, cni_bin, command, pod_path, version="1.0.0", extra=None):
    config = {"cniVersion": version, "name": "lo-net", "type": "loopback", **(extra or {})}
    env = plugin_env(command, "ctr1", pod_path, "lo", args="none=1;IgnoreUnknown=1")
    return run_plugin(node, f"{cni_bin}/loopback", env, json.dumps(config))


@pytest.mark.parametrize("version", VERSIONS)
def test_add_brings_lo_up_and_reports_it(sandbox, node, cni_bin, version):
    pod = sandbox.pod()
    assert not lo_is_up(pod)
    run = call(node, cni_bin, "ADD", pod.path, version)
    assert run.ok, run.stdout
    assert lo_is_up(pod)
    out = run.json
    assert out["cniVersion"] == version
    assert out["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": pod.path}]
    expected_ips = [{"interface": 0, "address": "127.0.0.1/8"}, {"interface": 0, "address": "::1/128"}]
    if version < "1.0.0":
        expected_ips = [{"version": v, **ip} for v, ip in zip("46", expected_ips, strict=True)]
    assert out["ips"] == expected_ips
    assert not run.stderr


def test_prev_result_is_passed_through(sandbox, node, cni_bin):
    pod = sandbox.pod()
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]}
    run = call(node, cni_bin, "ADD", pod.path, extra={"prevResult": prev})
    assert run.ok and run.json == prev


def test_check_fails_when_lo_is_down_and_del_brings_it_down(sandbox, node, cni_bin):
    pod = sandbox.pod()
    assert call(node, cni_bin, "ADD", pod.path).ok
    assert call(node, cni_bin, "CHECK", pod.path).ok
    pod.run("ip", "link", "set", "lo", "down")
    failed = call(node, cni_bin, "CHECK", pod.path)
    assert failed.returncode != 0 and "down" in failed.json["msg"]
    pod.run("ip", "link", "set", "lo", "up")
    assert call(node, cni_bin, "DEL", pod.path).ok
    assert not lo_is_up(pod)
    assert call(node, cni_bin, "DEL", pod.path).ok


def test_del_succeeds_when_the_namespace_is_gone(sandbox, node, cni_bin):
    pod = sandbox.pod()
    assert call(node, cni_bin, "ADD", pod.path).ok
    path = pod.path
    sandbox.remove(pod)
    assert call(node, cni_bin, "DEL", path).ok
    assert call(node, cni_bin, "DEL", "").ok


def test_add_into_missing_namespace_is_a_clear_error(node, cni_bin):
    run = call(node, cni_bin, "ADD", "/run/netns/pycni-does-not-exist")
    assert run.returncode != 0 and run.json["code"] == 4 and "does not exist" in run.json["msg"]


def test_add_into_a_file_that_is_not_a_namespace(node, cni_bin):
    run = call(node, cni_bin, "ADD", "/etc/hostname")
    assert run.returncode != 0 and run.json["code"] == 4 and "not a network namespace" in run.json["msg"]


@pytest.mark.parametrize("address", ["10.9.9.9/32", "10.9.9.10/24 label lo:extra", "2001:db8::9/128"])
def test_add_refuses_a_loopback_holding_a_non_loopback_address(sandbox, node, cni_bin, address):
    pod = sandbox.pod()
    pod.run("ip", "link", "set", "lo", "up")
    pod.run("ip", "address", "add", *address.split(), "dev", "lo")
    run = call(node, cni_bin, "ADD", pod.path)
    assert run.returncode != 0
    assert run.json["msg"] == f"loopback interface has a non-loopback address {address.split('/')[0]}"


def test_add_reports_the_primary_addresses_when_lo_has_more(sandbox, node, cni_bin):
    pod = sandbox.pod()
    pod.run("ip", "link", "set", "lo", "up")
    pod.run("ip", "address", "add", "127.0.0.2/16", "dev", "lo", "label", "lo:two")
    pod.run("ip", "address", "add", "127.1.0.1/8", "dev", "lo")
    run = call(node, cni_bin, "ADD", pod.path)
    assert run.ok, run.stdout
    assert run.json["ips"] == [{"interface": 0, "address": "127.0.0.1/8"}, {"interface": 0, "address": "::1/128"}]
