"""`pycni run/status/gc/install` against real namespaces, compared with libcni."""

import json
import os
import subprocess
import sys

import pytest

from pycni.plugins import REGISTRY
from tests.helpers import Chain, eventually

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
SHIPPED = os.path.join(REPO, "conf", "10-k8s-pod-network.conflist")


@pytest.fixture
def conf_dir(tmp_path):
    from pycni.node.install import render_conflist

    directory = tmp_path / "net.d"
    directory.mkdir()
    with open(SHIPPED) as f:
        conflist = json.loads(render_conflist(f.read(), ["10.244.8.0/24"]))
    conflist["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "ipam")
    (directory / "10-k8s-pod-network.conflist").write_text(json.dumps(conflist))
    return str(directory)


@pytest.fixture
def pycni(node, cni_bin, tmp_path, conf_dir):
    def call(*argv, check=True):
        common = {"run": ["--bin-dir", cni_bin, "--cache-dir", str(tmp_path / "cache"), "--conf-dir", conf_dir],
                  "status": ["--cache-dir", str(tmp_path / "cache"), "--conf-dir", conf_dir],
                  "gc": ["--bin-dir", cni_bin, "--cache-dir", str(tmp_path / "cache"), "--conf-dir", conf_dir]}
        done = node.run(sys.executable, "-m", "pycni", *argv, *common.get(argv[0], []), check=False, timeout=120)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done
    return call


def _comparable(result):
    """A result without what is random per attachment (MACs)."""
    result = json.loads(json.dumps(result))
    if result.get("dns") == {}:
        del result["dns"]  # libcni re-encodes an absent dns as {}
    for iface in result.get("interfaces", []):
        iface.pop("mac", None)
    return result


def test_run_matches_libcni_and_shares_its_cache(sandbox, node, cni_bin, cnidriver, tmp_path, conf_dir, pycni):
    pod = sandbox.pod()
    ours = json.loads(pycni("run", "add", "--json", "--netns", pod.path, "--container-id", "c1", "--ip",
                            "10.244.8.50", "--port", "8080:80/tcp",
                            "--annotation", "kubernetes.io/ingress-bandwidth=5M").stdout)
    # libcni (the Go library runtimes use) can CHECK and DEL what `pycni run` added, from the shared cache
    chain = Chain(node, cnidriver, cni_bin, os.path.join(conf_dir, "10-k8s-pod-network.conflist"),
                  str(tmp_path / "cache"))
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 5_000_000, "ingressBurst": 2**32 - 1}}
    assert chain("check", pod, "c1", caps)[0] == 0
    assert chain("del", pod, "c1", caps)[0] == 0
    theirs = chain.add(pod, "c1", caps, args="IgnoreUnknown=1;IP=10.244.8.50")
    assert _comparable(ours) == _comparable(theirs)
    assert pycni("run", "check", "--netns", pod.path, "--container-id", "c1").returncode == 0
    assert pycni("run", "del", "--netns", pod.path, "--container-id", "c1").returncode == 0
    assert eventually(lambda: [link["ifname"] for link in pod.link_json()] == ["lo"])  # the service: after answering


def test_run_reports_errors_readably(sandbox, pycni):
    pod = sandbox.pod()
    done = pycni("run", "add", "--netns", pod.path, "--container-id", "c1", "--port", "8080:80/tcp",
                 "--mac", "01:00:00:00:00:01", check=False)
    assert done.returncode == 1 and "bridge ADD failed" in done.stderr and "CNI error 7" in done.stderr
    done = pycni("run", "add", "--json", "--netns", pod.path, "--container-id", "c1", "--mac", "01:00:00:00:00:01",
                 check=False)
    assert json.loads(done.stdout)["code"] == 7


def test_status_shows_pools_attachments_ports_and_shaping(sandbox, pycni):
    pod = sandbox.pod()
    pycni("run", "add", "--netns", pod.path, "--container-id", "web", "--port", "8080:80/tcp",
          "--annotation", "kubernetes.io/egress-bandwidth=2M")
    data = json.loads(pycni("status", "--json").stdout)
    net = data["networks"][0]
    assert net["name"] == "k8s-pod-network" and net["pools"][0]["used"] == 1 and net["pools"][0]["free"] == 252
    attachment = net["attachments"][0]
    assert attachment["alive"] and attachment["host_ports"] == ["*:8080->80/tcp"]
    assert attachment["ips"] == ["10.244.8.2/24"]
    assert data["hostPortEntries"] == 1
    assert [s["kind"] for s in data["shaping"]] == ["ifb"] and data["shaping"][0]["rate_bits"] == 2_000_000
    assert all(data["kernel"].values()), data["kernel"]
    human = pycni("status").stdout
    assert "1 used, 252 free" in human and "web/eth0" in human


def test_gc_reclaims_what_a_vanished_pod_left(sandbox, node, pycni):
    """As after a node reboot: the pod's namespace is gone, DEL was never called."""
    kept, lost = sandbox.pod(), sandbox.pod()
    pycni("run", "add", "--netns", kept.path, "--container-id", "kept", "--port", "8080:80/tcp")
    pycni("run", "add", "--netns", lost.path, "--container-id", "lost", "--port", "9090:90/udp",
          "--annotation", "kubernetes.io/egress-bandwidth=2M")
    sandbox.remove(lost)
    report = json.loads(pycni("gc", "--json").stdout)
    assert report["networks"][0]["ok"] and report["networks"][0]["addresses_released"] == 1
    assert report["networks"][0]["kept"] == [["kept", "eth0"]]
    assert report["hostPortEntriesRemoved"] == 1
    data = json.loads(pycni("status", "--json").stdout)
    assert [a["container_id"] for a in data["networks"][0]["attachments"]] == ["kept"]
    assert data["networks"][0]["pools"][0]["used"] == 1
    assert not [link for link in node.link_json() if link["ifname"].startswith("bw")]
    assert pycni("run", "check", "--netns", kept.path, "--container-id", "kept").returncode == 0


def test_gc_after_reboot_with_no_cache_still_frees_addresses(sandbox, node, pycni, tmp_path):
    pod = sandbox.pod()
    pycni("run", "add", "--netns", pod.path, "--container-id", "p")
    sandbox.remove(pod)
    subprocess.run(["rm", "-rf", str(tmp_path / "cache")], check=True)  # /var/lib/cni lost as well
    pycni("gc")
    assert json.loads(pycni("status", "--json").stdout)["networks"][0]["pools"][0]["used"] == 0


def test_install_places_launchers_and_a_dual_stack_conflist(tmp_path):
    bin_dir, conf = tmp_path / "bin", tmp_path / "conf"
    done = subprocess.run([sys.executable, "-m", "pycni", "install", "--bin-dir", str(bin_dir), "--conf-dir",
                           str(conf), "--conflist", SHIPPED, "--pod-cidr", "10.244.9.0/24", "--pod-cidr",
                           "fd00:9::/64", "--cluster-cidr", "10.244.0.0/16"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(name for name in os.listdir(bin_dir) if not name.startswith(".")) == sorted(REGISTRY)
    version = subprocess.run([str(bin_dir / "bridge")], env={"CNI_COMMAND": "VERSION"}, input=b"",
                             capture_output=True)
    assert json.loads(version.stdout)["supportedVersions"][-1] == "1.1.0"
    conflist = json.loads((conf / "10-k8s-pod-network.conflist").read_text())
    assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.9.0/24"}], [{"subnet": "fd00:9::/64"}]]
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "bandwidth"]


CRIO_HOSTPORTS = """
table ip crio-hostports {
  map hostipports { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
  map hostports { type inet_proto . inet_service : ipv4_addr . inet_service; }
  chain hostports {
    dnat ip addr . port to ip daddr . meta l4proto . th dport map @hostipports
    dnat ip addr . port to meta l4proto . th dport map @hostports
  }
  chain prerouting { type nat hook prerouting priority -100; fib daddr type local goto hostports; }
}
add element ip crio-hostports hostports { tcp . 8080 comment "BBK5KOLM3RTTV4JS" : 10.244.8.2 . 80 }
add element ip crio-hostports hostports { udp . 5353 comment "BBK5KOLM3RTTV4JS" : 10.244.8.2 . 53 }
add element ip crio-hostports hostipports { 127.0.0.1 . tcp . 8443 comment "FWUCPWRIB7ZR62ZF" : 10.244.8.3 . 443 }
"""


def test_status_and_validate_on_a_node_whose_runtime_programs_hostports(node, pycni, conf_dir, tmp_path):
    """CRI-O programs hostPorts in its own nftables table and passes no portMappings to CNI: `status` shows
    them from that table, and `validate` does not call a conflist without portMappings broken there."""
    node.run("nft", "-f", "-", input=CRIO_HOSTPORTS)
    data = json.loads(pycni("status", "--json").stdout)
    assert data["hostPortEntries"] == 0  # none of portmap's
    assert sorted(p["mapping"] for p in data["runtimeHostPorts"]) == [
        "*:5353/udp -> 10.244.8.2:53", "*:8080/tcp -> 10.244.8.2:80", "127.0.0.1:8443/tcp -> 10.244.8.3:443"]
    assert {p["runtime"] for p in data["runtimeHostPorts"]} == {"CRI-O"}
    text = pycni("status").stdout
    assert "hostPorts programmed by the runtime, CRI-O (nftables table ip crio-hostports): 3" in text
    assert "127.0.0.1:8443/tcp -> 10.244.8.3:443" in text

    conflist = json.loads(open(os.path.join(conf_dir, "10-k8s-pod-network.conflist")).read())
    del conflist["plugins"][1]["capabilities"]
    path = tmp_path / "crio.conflist"
    path.write_text(json.dumps(conflist))
    done = pycni("validate", "--json", str(path), check=False)
    report = json.loads(done.stdout)
    assert not [f for f in report["findings"] if "hostPort" in f["message"]], report
    assert any("programmed by CRI-O" in line for line in report["checked"]), report

    node.run("nft", "delete", "table", "ip", "crio-hostports")  # without CRI-O the same conflist is broken
    report = json.loads(pycni("validate", "--json", str(path), check=False).stdout)
    assert [f for f in report["findings"] if "no hostPort of any pod will work" in f["message"]], report
