"""pycni driven by libcni (Go), the library containerd and CRI-O call plugins through."""

import json
import os

import pytest

from tests.helpers import eventually, reservation_files

pytestmark = pytest.mark.libcni


def drive(node, cnidriver, bin_dir, cache_dir, conf_path, verb, *extra, netns="", container_id="", ifname="eth0"):
    argv = [cnidriver, "-bin", bin_dir, "-cache", cache_dir, "-conf", conf_path, "-ifname", ifname]
    if netns:
        argv += ["-netns", netns]
    if container_id:
        argv += ["-id", container_id]
    done = node.run(*argv, verb, *extra, check=False)
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def write_conf(tmp_path):
    def write(config, name="net.conflist"):
        path = tmp_path / name
        path.write_text(json.dumps(config))
        return str(path)
    return write


@pytest.mark.parametrize("plugin", ["loopback", "host-local"])
def test_version_info_through_libcni(node, cni_bin, cnidriver, tmp_path, plugin):
    code, out = drive(node, cnidriver, cni_bin, str(tmp_path), "/dev/null", "version", plugin)
    assert code == 0, out
    assert out["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_loopback_conflist_add_check_del(sandbox, node, cni_bin, cnidriver, tmp_path, write_conf, version):
    pod = sandbox.pod()
    conf = write_conf({"cniVersion": version, "name": "lo-net", "plugins": [{"type": "loopback"}]})
    cache = str(tmp_path / "cache")
    code, result = drive(node, cnidriver, cni_bin, cache, conf, "add", netns=pod.path, container_id="c1",
                         ifname="lo")
    assert code == 0, result
    assert result["cniVersion"] == version and result["interfaces"][0]["name"] == "lo"
    assert "UP" in pod.link_json("lo")[0]["flags"]
    cached = os.path.join(cache, "results", "lo-net-c1-lo")
    assert json.load(open(cached))["kind"] == "cniCacheV1"
    if version >= "0.4.0":
        assert drive(node, cnidriver, cni_bin, cache, conf, "check", netns=pod.path, container_id="c1",
                     ifname="lo")[0] == 0
    assert drive(node, cnidriver, cni_bin, cache, conf, "del", netns=pod.path, container_id="c1", ifname="lo")[0] == 0
    assert "UP" not in pod.link_json("lo")[0]["flags"]
    assert not os.path.exists(cached)


def test_host_local_through_libcni_matches_direct_and_reference(sandbox, node, cni_bin, cnidriver, tmp_path,
                                                                 write_conf, reference_bin):
    results = {}
    for label, bin_dir in (("pycni", cni_bin), ("reference", reference_bin)):
        data_dir = str(tmp_path / label / "data")
        conf = write_conf({"cniVersion": "1.0.0", "name": "hl-net", "plugins": [{
            "type": "host-local", "ipam": {"type": "host-local", "dataDir": data_dir,
                                           "ranges": [[{"subnet": "10.33.0.0/24"}], [{"subnet": "fd33::/64"}]],
                                           "routes": [{"dst": "0.0.0.0/0"}]}}]}, f"{label}.conflist")
        cache = str(tmp_path / label / "cache")
        code, result = drive(node, cnidriver, bin_dir, cache, conf, "add", netns="/run/netns/unused",
                             container_id="c1")
        assert code == 0, result
        results[label] = result
        assert sorted(os.listdir(os.path.join(data_dir, "hl-net")))[:2] == ["10.33.0.2", "fd33::2"]
        assert drive(node, cnidriver, bin_dir, cache, conf, "check", netns="/run/netns/unused",
                     container_id="c1")[0] == 0
        assert drive(node, cnidriver, bin_dir, cache, conf, "del", container_id="c1")[0] == 0
        assert not reservation_files(os.path.join(data_dir, "hl-net"))
    for result in results.values():
        assert result.pop("dns", {}) == {}  # libcni re-encodes an absent dns as {}
    assert results["pycni"] == results["reference"]


def test_libcni_reports_our_errors(sandbox, node, cni_bin, cnidriver, tmp_path, write_conf):
    conf = write_conf({"cniVersion": "1.0.0", "name": "hl-net", "plugins": [{
        "type": "host-local", "ipam": {"type": "host-local", "dataDir": str(tmp_path / "d"),
                                       "ranges": [[{"subnet": "10.33.0.1/24"}]]}}]})
    code, out = drive(node, cnidriver, cni_bin, str(tmp_path / "c"), conf, "add", netns="/run/netns/x",
                      container_id="c1")
    assert code == 1 and out["code"] == 7 and "host bits" in out["error"]


def test_bridge_chain_through_libcni(sandbox, node, cni_bin, cnidriver, tmp_path, write_conf):
    """The shipped conflist's shape (bridge + host-local), driven by libcni into two pods that then talk."""
    from pycni.node.install import render_conflist
    from tests.helpers import ping

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "conf", "10-k8s-pod-network.conflist")) as f:
        conflist = json.loads(render_conflist(f.read(), ["10.88.0.0/24"]))
    for plugin in conflist["plugins"]:
        if "ipam" in plugin:
            plugin["ipam"]["dataDir"] = str(tmp_path / "ipam")
    conf = write_conf(conflist)
    cache = str(tmp_path / "cache")
    pod_a, pod_b = sandbox.pod(), sandbox.pod()
    code, ra = drive(node, cnidriver, cni_bin, cache, conf, "add", netns=pod_a.path, container_id="a")
    assert code == 0, ra
    code, rb = drive(node, cnidriver, cni_bin, cache, conf, "add", netns=pod_b.path, container_id="b")
    assert code == 0, rb
    assert ra["ips"][0]["address"] == "10.88.0.2/24" and rb["ips"][0]["address"] == "10.88.0.3/24"
    assert ping(pod_a, "10.88.0.3")
    for cid, pod in (("a", pod_a), ("b", pod_b)):
        code, out = drive(node, cnidriver, cni_bin, cache, conf, "check", netns=pod.path, container_id=cid)
        assert code == 0, out
        code, out = drive(node, cnidriver, cni_bin, cache, conf, "del", netns=pod.path, container_id=cid)
        assert code == 0, out
    assert eventually(lambda: [link["ifname"] for link in pod_a.link_json()] == ["lo"])  # the service: after answering
    assert node.link_names() == ["cni0", "lo"]
