"""host-local, installed binary, real env protocol and real files, inside a node namespace."""

import json
import os
import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import plugin_env, reservation_files, run_plugin


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "networks")


def conf(data_dir, version="1.0.0", name="hl-net", **ipam):
    ipam = {"type": "host-local", "dataDir": data_dir, **ipam}
    if "ranges" not in ipam and "subnet" not in ipam:
        ipam["ranges"] = [[{"subnet": "10.22.0.0/24"}]]
    return {"cniVersion": version, "name": name, "type": "host-local", "ipam": ipam}


def call(node, binary, command, config, container_id="ctr1", ifname="eth0", args="", netns="/run/netns/unused"):
    env = plugin_env(command, container_id, netns, ifname, args=args, path=os.path.dirname(binary))
    data = config if isinstance(config, (str, bytes)) else json.dumps(config)
    return run_plugin(node, binary, env, data)


def files(data_dir, name="hl-net"):
    try:
        return sorted(os.listdir(os.path.join(data_dir, name)))
    except FileNotFoundError:
        return []


def reserved(data_dir, name="hl-net"):
    return reservation_files(os.path.join(data_dir, name))


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_dual_stack_result_shape_per_version(node, cni_bin, data_dir, version):
    config = conf(data_dir, version, ranges=[[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd22::/64"}]],
                  routes=[{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd22::1"}])
    run = call(node, f"{cni_bin}/host-local", "ADD", config)
    assert run.ok, run.stdout
    out = run.json
    ips = [{"address": "10.22.0.2/24", "gateway": "10.22.0.1"}, {"address": "fd22::2/64", "gateway": "fd22::1"}]
    if version < "1.0.0":
        ips = [{"version": "4", **ips[0]}, {"version": "6", **ips[1]}]
    assert out == {"cniVersion": version, "ips": ips,
                   "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd22::1"}]}
    assert reserved(data_dir) == ["10.22.0.2", "fd22::2"]
    with open(os.path.join(data_dir, "hl-net", "fd22::2"), "rb") as f:
        assert f.read() == b"ctr1\r\neth0"


def test_round_robin_del_twice_and_check(node, cni_bin, data_dir):
    binary = f"{cni_bin}/host-local"
    config = conf(data_dir)
    first = call(node, binary, "ADD", config, "a").json["ips"][0]["address"]
    second = call(node, binary, "ADD", config, "b").json["ips"][0]["address"]
    assert (first, second) == ("10.22.0.2/24", "10.22.0.3/24")
    assert call(node, binary, "CHECK", {**config, "prevResult": {"cniVersion": "1.0.0", "ips": [
        {"address": second}]}}, "b").ok
    wrong = call(node, binary, "CHECK", {**config, "prevResult": {"cniVersion": "1.0.0", "ips": [
        {"address": first}]}}, "b")
    assert not wrong.ok and "not reserved" in wrong.json["msg"]
    assert call(node, binary, "DEL", config, "a").ok
    assert call(node, binary, "DEL", config, "a").ok
    assert reserved(data_dir) == ["10.22.0.3"]
    assert not call(node, binary, "CHECK", config, "a").ok
    # round robin: the next address is .4, not the .2 just freed
    assert call(node, binary, "ADD", config, "c").json["ips"][0]["address"] == "10.22.0.4/24"
    # no prevResult: the range set is searched for c's address; a freed address in prevResult is refused
    assert call(node, binary, "CHECK", config, "c").ok
    freed = call(node, binary, "CHECK", {**config, "prevResult": {"cniVersion": "1.0.0", "ips": [
        {"address": first}]}}, "c")
    assert not freed.ok and freed.json["msg"] == "host-local: 10.22.0.2 from prevResult is not reserved for c"
    assert call(node, binary, "DEL", config, "never-added").ok


def test_same_container_two_interfaces_and_duplicate(node, cni_bin, data_dir):
    binary = f"{cni_bin}/host-local"
    config = conf(data_dir)
    assert call(node, binary, "ADD", config, "a", "eth0").ok
    assert call(node, binary, "ADD", config, "a", "net1").ok
    dup = call(node, binary, "ADD", config, "a", "eth0")
    assert not dup.ok and "duplicate allocation" in dup.json["msg"]
    assert len(reserved(data_dir)) == 2
    assert call(node, binary, "DEL", config, "a", "net1").ok
    assert len(reserved(data_dir)) == 1


def test_parallel_adds_get_distinct_addresses(node, cni_bin, data_dir):
    binary = f"{cni_bin}/host-local"
    config = conf(data_dir, ranges=[[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd22::/120"}]])
    with ThreadPoolExecutor(16) as pool:
        runs = list(pool.map(lambda i: call(node, binary, "ADD", config, f"par{i}"), range(16)))
    assert all(r.ok for r in runs), [r.stdout for r in runs if not r.ok]
    v4 = {r.json["ips"][0]["address"] for r in runs}
    v6 = {r.json["ips"][1]["address"] for r in runs}
    assert len(v4) == 16 and len(v6) == 16
    assert len(reserved(data_dir)) == 32
    with ThreadPoolExecutor(16) as pool:
        dels = list(pool.map(lambda i: call(node, binary, "DEL", config, f"par{i}"), range(16)))
    assert all(r.ok for r in dels)
    assert reserved(data_dir) == []


def test_exhaustion_is_clean_and_leaks_nothing(node, cni_bin, data_dir):
    binary = f"{cni_bin}/host-local"
    config = conf(data_dir, version="1.1.0", ranges=[[{"subnet": "10.22.0.0/29"}], [{"subnet": "fd22::/120"}]])
    for i in range(5):
        assert call(node, binary, "ADD", config, f"c{i}").ok
    assert call(node, binary, "STATUS", config).ok is False
    before = files(data_dir)
    run = call(node, binary, "ADD", config, "c5")
    assert run.returncode != 0
    assert run.json["code"] == 999 and "no IP addresses available in range set: 10.22.0.1-10.22.0.6" in run.json["msg"]
    assert files(data_dir) == before  # the v6 set was not left half-claimed
    status = call(node, binary, "STATUS", config)
    assert status.json["code"] == 50
    assert call(node, binary, "DEL", config, "c2").ok
    assert call(node, binary, "STATUS", config).ok
    assert call(node, binary, "ADD", config, "c5").json["ips"][0]["address"] == "10.22.0.4/29"


def test_requested_addresses_from_each_source(node, cni_bin, data_dir):
    binary = f"{cni_bin}/host-local"
    config = conf(data_dir, ranges=[[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd22::/64"}]])
    by_args = call(node, binary, "ADD", config, "a", args="IgnoreUnknown=1;IP=10.22.0.50")
    assert by_args.json["ips"][0]["address"] == "10.22.0.50/24"
    by_cni_args = call(node, binary, "ADD", {**config, "args": {"cni": {"ips": ["10.22.0.60", "fd22::60"]}}}, "b")
    assert [ip["address"] for ip in by_cni_args.json["ips"]] == ["10.22.0.60/24", "fd22::60/64"]
    by_runtime = call(node, binary, "ADD", {**config, "runtimeConfig": {"ips": ["10.22.0.70/24"]}}, "c")
    assert by_runtime.json["ips"][0]["address"] == "10.22.0.70/24"
    taken = call(node, binary, "ADD", config, "d", args="IP=10.22.0.50")
    assert not taken.ok and "not available" in taken.json["msg"]
    outside = call(node, binary, "ADD", config, "e", args="IP=192.168.7.7")
    assert not outside.ok and "failed to allocate all requested IPs" in outside.json["msg"]
    assert sorted(reserved(data_dir)) == ["10.22.0.50", "10.22.0.60", "10.22.0.70", "fd22::2", "fd22::60", "fd22::61"]


def test_legacy_subnet_runtime_ranges_routes_and_resolv_conf(node, cni_bin, data_dir, tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\n"
                      "options ndots:5\ndomain cluster.local\n")
    config = conf(data_dir, subnet="10.30.0.0/24", rangeStart="10.30.0.100", gateway="10.30.0.254",
                  resolvConf=str(resolv), routes=[{"dst": "10.40.0.0/16", "gw": "10.30.0.254"}])
    config["runtimeConfig"] = {"ipRanges": [[{"subnet": "10.50.0.0/24"}]]}
    out = call(node, f"{cni_bin}/host-local", "ADD", config).json
    assert out["ips"] == [{"address": "10.50.0.2/24", "gateway": "10.50.0.1"},
                          {"address": "10.30.0.100/24", "gateway": "10.30.0.254"}]
    assert out["dns"] == {"nameservers": ["10.96.0.10"], "domain": "cluster.local",
                          "search": ["default.svc.cluster.local", "svc.cluster.local"], "options": ["ndots:5"]}
    assert out["routes"] == [{"dst": "10.40.0.0/16", "gw": "10.30.0.254"}]


def test_gc_releases_what_is_not_valid(node, cni_bin, data_dir):
    binary = f"{cni_bin}/host-local"
    config = conf(data_dir, version="1.1.0")
    for cid in ("keep", "drop1", "drop2"):
        assert call(node, binary, "ADD", config, cid).ok
    with open(os.path.join(data_dir, "hl-net", "10.22.0.77"), "w") as f:
        f.write("legacy-gone")  # a reference-era file holding only the container ID
    gc_conf = {**config, "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    run = call(node, binary, "GC", gc_conf, container_id="", ifname="", netns="")
    assert run.ok, run.stdout
    assert reserved(data_dir) == ["10.22.0.2"]
    legacy_key = {**config, "cni.dev/attachments": []}
    assert call(node, binary, "GC", legacy_key, container_id="", ifname="", netns="").ok
    assert reserved(data_dir) == []


@pytest.mark.parametrize("config,code", [
    ("{not json", 6),
    ({"cniVersion": "0.2.0", "name": "hl-net", "ipam": {}}, 1),
    ({"cniVersion": "1.0.0", "name": "../../etc", "ipam": {}}, 7),
    ({"cniVersion": "1.0.0", "name": "hl-net", "ipam": {"ranges": [[{"subnet": "10.22.0.0/33"}]]}}, 7),
    ({"cniVersion": "1.0.0", "name": "hl-net", "ipam": {"ranges": "10.22.0.0/24"}}, 7),
    ({"cniVersion": "1.0.0", "name": "hl-net", "ipam": {"ranges": [[{"subnet": "10.22.0.1/24"}]]}}, 7),
    ({"cniVersion": "1.0.0", "name": "hl-net"}, 7),
])
def test_bad_input_gets_the_right_code_and_changes_nothing(node, cni_bin, data_dir, config, code):
    if isinstance(config, dict) and "ipam" in config:
        config = {**config, "ipam": {**config["ipam"], "dataDir": data_dir}}
    run = call(node, f"{cni_bin}/host-local", "ADD", config)
    assert run.returncode != 0 and run.json["code"] == code, run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert not os.path.exists(data_dir)


def test_missing_env_and_long_ifname(node, cni_bin, data_dir):
    binary = f"{cni_bin}/host-local"
    no_id = run_plugin(node, binary, plugin_env("ADD", "", "/run/netns/x", "eth0"), json.dumps(conf(data_dir)))
    assert no_id.json["code"] == 4 and "CNI_CONTAINERID" in no_id.json["msg"]
    long_if = call(node, binary, "ADD", conf(data_dir), ifname="a-very-long-ifname")
    assert long_if.json["code"] == 4 and "CNI_IFNAME" in long_if.json["msg"]
    assert not os.path.exists(data_dir)


def test_killed_mid_add_never_corrupts_the_store(node, cni_bin, data_dir):
    """Start many ADDs and SIGKILL them at random moments: every file left is a whole reservation."""
    binary = f"{cni_bin}/host-local"
    config = json.dumps(conf(data_dir, ranges=[[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd22::/120"}]]))
    rng = random.Random(7)
    for i in range(24):
        env = plugin_env("ADD", f"k{i}", "/run/netns/unused", "eth0")
        proc = node.popen("env", "-i", *[f"{k}={v}" for k, v in env.items()], binary, stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        proc.stdin.write(config.encode())
        proc.stdin.close()
        time.sleep(rng.uniform(0.0, 0.4))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    directory = os.path.join(data_dir, "hl-net")
    for name in reserved(data_dir):
        with open(os.path.join(directory, name), "rb") as f:
            content = f.read()
        cid, _, ifname = content.decode().partition("\r\n")
        assert cid.startswith("k") and ifname == "eth0", (name, content)
    for name in files(data_dir):
        if name.startswith("last_reserved_ip."):
            with open(os.path.join(directory, name)) as f:
                assert f.read().strip()
    after = call(node, binary, "ADD", config, "survivor")
    assert after.ok, after.stdout


def test_store_is_shared_with_the_reference_binary(node, cni_bin, reference_bin, data_dir):
    config = conf(data_dir)
    ours, theirs = f"{cni_bin}/host-local", f"{reference_bin}/host-local"
    assert call(node, theirs, "ADD", config, "ref").json["ips"][0]["address"] == "10.22.0.2/24"
    assert call(node, ours, "ADD", config, "py").json["ips"][0]["address"] == "10.22.0.3/24"
    assert call(node, theirs, "ADD", config, "ref2").json["ips"][0]["address"] == "10.22.0.4/24"
    assert call(node, ours, "DEL", config, "ref").ok
    assert call(node, theirs, "DEL", config, "py").ok
    assert reserved(data_dir) == ["10.22.0.4"]


def test_del_with_prev_result_releases_only_what_the_attachment_owns(node, cni_bin, data_dir):
    binary = f"{cni_bin}/host-local"
    config = conf(data_dir)
    mine = call(node, binary, "ADD", config, "mine").json
    theirs = call(node, binary, "ADD", config, "theirs").json
    assert call(node, binary, "DEL", {**config, "prevResult": mine}, "mine").ok
    assert reserved(data_dir) == ["10.22.0.3"]
    # a prevResult naming someone else's address (a confused runtime) frees ours, never theirs
    again = call(node, binary, "ADD", config, "mine").json
    assert again["ips"][0]["address"] == "10.22.0.4/24"
    assert call(node, binary, "DEL", {**config, "prevResult": theirs}, "mine").ok
    assert reserved(data_dir) == ["10.22.0.3"]
