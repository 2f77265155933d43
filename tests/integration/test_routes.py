"""`pycni routes` on a cluster of namespaces: every pod reaches every pod on every node without NAT, by
direct routes between neighbours and VXLAN across the router, dual-stack; kept true when entries are
removed by hand, nodes change or go, the agent restarts, the API server goes away, and the node's FORWARD
policy is DROP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.apiserver import node_object
from tests.cluster import Cluster, wait_for
from tests.helpers import PeerServer, eventually, peer_seen_by, ping

pytestmark = pytest.mark.netns


@pytest.fixture
def cluster(sandbox, cni_bin, cnidriver, tmp_path):
    built = Cluster(sandbox, cni_bin, cnidriver, tmp_path)
    try:
        yield built
    finally:
        built.close()


def _start_all(cluster: Cluster) -> None:
    for name in cluster.nodes:
        cluster.start_agent(name)
    assert cluster.synced(), {n: cluster.nodes[n].state() for n in cluster.nodes}


def test_pods_on_every_node_reach_each_other_without_nat(cluster):
    _start_all(cluster)
    a, b, c = (cluster.nodes[n] for n in "abc")
    # a and b are neighbours: direct routes over eth0, marked as the agent's
    routes_a = {r["dst"]: r for r in a.routes()}
    assert routes_a["10.244.2.0/24"]["gateway"] == "192.0.2.12" and routes_a["10.244.2.0/24"]["dev"] == "eth0"
    routes6_a = {r["dst"]: r for r in a.routes("-6")}
    assert routes6_a["fd00:10:244:2::/64"]["gateway"] == "2001:db8:2::12"
    # c is behind the router: VXLAN, its VTEP (the first address of its pod CIDR) onlink, with the
    # permanent neighbour and FDB entries to c's published MAC and node address
    assert routes_a["10.244.3.0/24"]["dev"] == "pycni.vxlan" and "onlink" in routes_a["10.244.3.0/24"]["flags"]
    assert routes_a["10.244.3.0/24"]["gateway"] == "10.244.3.0"
    assert routes6_a["fd00:10:244:3::/64"]["dev"] == "pycni.vxlan"
    mac_c = cluster.api.nodes["c"]["metadata"]["annotations"]["pycni.io/vtep-mac"]
    assert {n["dst"]: n["lladdr"] for n in a.neighbours()} == {"10.244.3.0": mac_c, "fd00:10:244:3::": mac_c}
    assert [(e["mac"], e["dst"]) for e in a.fdb()] == [(mac_c, "203.0.113.13")]
    vxlan = a.ns.link_json("pycni.vxlan")[0]
    data = vxlan["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["learning"]) == (4097, 4789, False)
    assert vxlan["mtu"] == 1450 and vxlan["address"] == cluster.api.nodes["a"]["metadata"]["annotations"][
        "pycni.io/vtep-mac"]
    # the patch that published it is a merge patch of the annotation alone
    assert all(body == {"metadata": {"annotations": {"pycni.io/vtep-mac": body["metadata"]["annotations"][
        "pycni.io/vtep-mac"]}}} for _, body in cluster.api.patches)
    # each node has a VXLAN peer: the pods' MTU is the overlay's
    for node in cluster.nodes.values():
        with open(node.conflist) as f:
            assert json.load(f)["plugins"][0]["mtu"] == 1450
    state = a.state()
    assert {p["node"]: [x["via"] for x in p["paths"]] for p in state["peers"]} == {
        "b": ["direct", "direct"], "c": ["vxlan", "vxlan"]}
    assert state["api"]["source"] == "api" and state["vxlan"]["inUse"] is True
    assert a.metric('pycni_routes_peers{state="direct"}') == 2
    assert a.metric('pycni_routes_peers{state="vxlan"}') == 2

    pods = {name: cluster.attach(name, "p") for name in "abc"}
    for name in "abc":
        assert pods[name][0].startswith(f"10.244.{ 'abc'.index(name) + 1}.")
    for src in "abc":
        for dst in "abc":
            if src == dst:
                continue
            src_ns, src_ips = cluster.nodes[src].pods["p"]
            dst_ns, dst_ips = cluster.nodes[dst].pods["p"]
            for family in (0, 1):  # IPv4 and IPv6, TCP and UDP: the server sees the pod's own address
                for proto in ("tcp", "udp"):
                    with PeerServer(dst_ns, 8080, proto):
                        seen = peer_seen_by(src_ns, dst_ips[family], 8080, proto)
                    assert seen == src_ips[family], (src, dst, family, proto, seen)
    # a full-size packet with DF set crosses the overlay (1400 bytes of payload within the pods' 1450)
    a_pod, _ = a.pods["p"]
    assert ping(a_pod, pods["c"][0], size=1400, dont_fragment=True)
    assert ping(a_pod, pods["c"][1], size=1400, dont_fragment=True)
    # the status command shows the peers
    shown = a.ns.run(sys.executable, "-m", "pycni", "status", "--routes-state", a.state_file, "--conf-dir",
                     a.directory + "/net.d", check=False).stdout
    assert "peer c: 10.244.3.0/24 by vxlan via 10.244.3.0 (ok)" in shown, shown


def test_entries_removed_by_hand_come_back_from_the_kernels_notifications(cluster):
    _start_all(cluster)
    a = cluster.nodes["a"]
    before = a.metric("pycni_routes_repairs_total")
    mac_c = cluster.api.nodes["c"]["metadata"]["annotations"]["pycni.io/vtep-mac"]
    # the agent reads the kernel whole only every 600 s here: repairs within seconds come from notifications
    a.ns.run("ip", "route", "del", "10.244.2.0/24")
    a.ns.run("ip", "-6", "route", "del", "fd00:10:244:3::/64")
    a.ns.run("ip", "neigh", "del", "10.244.3.0", "dev", "pycni.vxlan")
    a.ns.run("bridge", "fdb", "del", mac_c, "dev", "pycni.vxlan", "dst", "203.0.113.13")
    took = wait_for(lambda: {r["dst"] for r in a.routes()} >= {"10.244.2.0/24", "10.244.3.0/24"}
                    and "fd00:10:244:3::/64" in {r["dst"] for r in a.routes("-6")}
                    and "10.244.3.0" in {n["dst"] for n in a.neighbours()} and len(a.fdb()) == 1)
    assert took is not None, cluster.agent_log("a")
    assert a.metric("pycni_routes_repairs_total") - before == 4
    # someone else's route beside them is left alone, and a changed entry of ours is put right
    a.ns.run("ip", "route", "add", "198.18.0.0/24", "via", "192.0.2.1")
    a.ns.run("ip", "route", "replace", "10.244.2.0/24", "via", "192.0.2.99", "proto", "114")
    assert wait_for(lambda: {r["dst"]: r.get("gateway") for r in a.routes()}.get("10.244.2.0/24") == "192.0.2.12")
    assert "198.18.0.0/24" in {r["dst"] for r in json.loads(a.ns.run("ip", "-j", "route").stdout)}
    # the VXLAN device removed: made again, with everything on it
    a.ns.run("ip", "link", "del", "pycni.vxlan")
    assert wait_for(lambda: a.ns.run("ip", "link", "show", "pycni.vxlan", check=False).returncode == 0
                    and len(a.fdb()) == 1 and "10.244.3.0/24" in {r["dst"] for r in a.routes()}), \
        cluster.agent_log("a")


def test_a_node_changed_or_deleted_changes_only_its_own_entries(cluster):
    _start_all(cluster)
    a = cluster.nodes["a"]
    monitor = a.ns.popen("ip", "monitor", "route", "neigh", stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # subscribed before anything changes
    try:
        # a heartbeat (conditions, a label) changes nothing
        node_b = cluster.api.nodes["b"]
        node_b["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-12-07T00:00:00Z"
        node_b["metadata"]["labels"]["x"] = "y"
        cluster.api.put(node_b)
        # c moves to a new address behind the router: its FDB entry follows, nothing else of c's changes
        node_c = node_object("c", ["10.244.3.0/24", "fd00:10:244:3::/64"], ["203.0.113.14", "2001:db8:3::13"],
                             cluster.api.nodes["c"]["metadata"]["annotations"])
        cluster.nodes["c"].ns.run("ip", "addr", "add", "203.0.113.14/24", "dev", "eth0")
        cluster.api.put(node_c)
        assert wait_for(lambda: [e["dst"] for e in a.fdb()] == ["203.0.113.14"]), cluster.agent_log("a")
    finally:
        monitor.terminate()
        seen = monitor.communicate(timeout=10)[0]
    # what the kernel makes by itself (a link-local route once DAD ends) is not the agent's doing
    changed = [line for line in seen.splitlines() if line.strip() and "proto kernel" not in line]
    assert changed and all("pycni.vxlan" in line and "203.0.113.1" in line for line in changed), seen
    # b gets a new pod CIDR: the old route goes, the new one comes
    cluster.api.put(node_object("b", ["10.244.20.0/24", "fd00:10:244:2::/64"], ["192.0.2.12", "2001:db8:2::12"],
                                cluster.api.nodes["b"]["metadata"]["annotations"]))
    assert wait_for(lambda: "10.244.20.0/24" in {r["dst"] for r in a.routes()}
                    and "10.244.2.0/24" not in {r["dst"] for r in a.routes()})
    # c is deleted from the API: its routes, neighbour and FDB entries go from every other node
    cluster.api.delete("c")
    for name in "ab":
        node = cluster.nodes[name]
        assert wait_for(lambda n=node: not n.fdb() and not n.neighbours()
                        and not {r["dst"] for r in n.routes()} & {"10.244.3.0/24"}
                        and not {r["dst"] for r in n.routes("-6")} & {"fd00:10:244:3::/64"}), \
            cluster.agent_log(name)
    assert {r["dst"] for r in a.routes()} == {"10.244.20.0/24"}


def test_a_restarted_agent_changes_nothing_that_is_right_and_a_reboot_gets_everything_back(cluster):
    _start_all(cluster)
    a = cluster.nodes["a"]
    before = (a.routes(), a.routes("-6"), a.neighbours(), a.fdb())
    assert cluster.stop_agent("a", signal.SIGKILL) == -signal.SIGKILL
    # away: everything stays
    assert (a.routes(), a.routes("-6"), a.neighbours(), a.fdb()) == before
    monitor = a.ns.popen("ip", "monitor", "route", "neigh", "link", stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # subscribed before the agent starts
    try:
        cluster.start_agent("a")
        assert cluster.synced(names="a")
        assert eventually(lambda: a.state().get("api", {}).get("source") == "api", 10)
    finally:
        monitor.terminate()
        seen = monitor.communicate(timeout=10)[0]
    assert not [line for line in seen.splitlines()
                if ("pycni.vxlan" in line or "proto 114" in line) and "proto kernel" not in line], seen
    assert (a.routes(), a.routes("-6"), a.neighbours(), a.fdb()) == before
    # a reboot: nothing of the agent's is left, and the API server is away when it starts; the last list
    # (its cache on disk) brings the routes back at once, and the API's word later keeps them
    assert cluster.stop_agent("a") == 0
    assert not a.state(), "a clean exit removes the state file"
    a.ns.run("ip", "link", "del", "pycni.vxlan")
    for route in a.routes() + a.routes("-6"):
        a.ns.run("ip", "route", "del", route["dst"], "proto", "114")
    assert not a.routes() and not a.routes("-6")
    cluster.api.stop()
    cluster.start_agent("a")
    assert wait_for(lambda: {r["dst"] for r in a.routes()} == {"10.244.2.0/24", "10.244.3.0/24"}
                    and len(a.fdb()) == 1, 30), cluster.agent_log("a")
    assert a.state()["api"]["source"] == "cache"
    cluster.api.start()
    assert eventually(lambda: a.state().get("api", {}).get("source") == "api", 30), cluster.agent_log("a")
    assert (a.routes(), a.routes("-6"), a.neighbours(), a.fdb()) == before


@pytest.mark.parametrize("gone_as", ["http", "event"])
def test_the_api_server_away_keeps_everything_and_a_410_leads_to_a_fresh_list(cluster, gone_as):
    _start_all(cluster)
    a = cluster.nodes["a"]
    before = (a.routes(), a.routes("-6"), a.neighbours(), a.fdb())
    lists = cluster.api.lists()
    cluster.api.stop()
    assert eventually(lambda: a.state().get("api", {}).get("lastError"), 20), cluster.agent_log("a")
    assert (a.routes(), a.routes("-6"), a.neighbours(), a.fdb()) == before
    # meanwhile, in the cluster: c is gone and d arrives (history compacted: the agent's version is too old)
    cluster.api.delete("c")
    cluster.api.put(node_object("d", ["10.244.4.0/24"], ["192.0.2.14"]))
    cluster.api.compact()
    cluster.api.gone_as_event = gone_as == "event"
    cluster.api.start()
    assert wait_for(lambda: {r["dst"] for r in a.routes()} == {"10.244.2.0/24", "10.244.4.0/24"}, 30), \
        cluster.agent_log("a")
    assert cluster.api.lists() > lists
    assert a.metric("pycni_routes_watch_restarts_total") >= 1, cluster.agent_log("a")
    assert not a.fdb() and not a.neighbours()
    assert a.agent is not None and a.agent.poll() is None


def test_forwarded_pod_traffic_flows_on_a_node_whose_forward_policy_is_drop(cluster):
    for name in "ab":  # as Docker leaves it
        cluster.nodes[name].ns.run("iptables", "-P", "FORWARD", "DROP")
        cluster.nodes[name].ns.run("ip6tables", "-P", "FORWARD", "DROP")
    _start_all(cluster)
    a = cluster.nodes["a"]
    rules = a.ns.run("iptables", "-S", "FORWARD").stdout
    assert "-A FORWARD -s 10.244.0.0/16 -m comment --comment" in rules and "-d 10.244.0.0/16" in rules, rules
    assert "-s fd00:10:244::/56" in a.ns.run("ip6tables", "-S", "FORWARD").stdout
    assert a.ns.run("iptables", "-S", "FORWARD").stdout.startswith("-P FORWARD DROP")
    ips_a, ips_b = cluster.attach("a", "p"), cluster.attach("b", "p")
    with PeerServer(cluster.nodes["b"].pods["p"][0], 8080):
        assert peer_seen_by(a.pods["p"][0], ips_b[0], 8080) == ips_a[0]
        assert peer_seen_by(a.pods["p"][0], ips_b[1], 8080) == ips_a[1]
    # a restart adds nothing twice
    cluster.stop_agent("a")
    cluster.start_agent("a")
    assert cluster.synced(names="a")
    assert a.ns.run("iptables", "-S", "FORWARD").stdout == rules


def test_a_bad_command_line_says_so_in_one_line(sandbox, tmp_path):
    node = sandbox.namespace("node")
    for argv, said in ((["--cluster-cidr", "10.244.0.1/16"], "has host bits set"),
                       (["--kubeconfig", str(tmp_path / "missing")], "no such file"),
                       (["--vxlan-device", "a-name-far-too-long"], "not an interface name")):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text("{}")
        done = node.run(sys.executable, "-m", "pycni", "routes", "--node-name", "a",
                        *(["--kubeconfig", str(kubeconfig)] if "--kubeconfig" not in argv else []), *argv, check=False)
        assert done.returncode == 2 and said in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
            (argv, done.stderr)
    # in a pod without its service account's token (automountServiceAccountToken: false)
    done = node.run("env", "-u", "KUBECONFIG", "KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443",
                    sys.executable, "-m", "pycni", "routes", "--node-name", "a", "--service-account", str(tmp_path),
                    check=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 \
        and f"{tmp_path}/token: no such file" in done.stderr, done.stderr
