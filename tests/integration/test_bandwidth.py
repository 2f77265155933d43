"""bandwidth: shaping measured with iperf3, through libcni with the whole k8s chain."""

import json
import os
import re
import statistics
import subprocess
import sys

import pytest

from tests.helpers import Chain, PeerServer, eventually, link_namespaces, peer_seen_by, ping, plugin_env, run_plugin

RATE = 8_000_000  # bits per second
FLOW_DEFAULT = 0x100  # the first flow queue, HTB's default class
BURST = 800_000  # bits (100 kB)
GATEWAY = "10.244.6.1"


def k8s_conflist(tmp_path, **bandwidth_keys):
    repo = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(repo, "conf", "10-k8s-pod-network.conflist")) as f:
        conflist = json.load(f)
    for plugin in conflist["plugins"]:
        if plugin["type"] == "bridge":
            plugin["ipam"]["ranges"] = [[{"subnet": "10.244.6.0/24"}]]
            plugin["ipam"]["dataDir"] = str(tmp_path / "ipam")
        if plugin["type"] == "bandwidth":
            plugin.update(bandwidth_keys)
    return conflist


@pytest.fixture
def chain(node, cni_bin, cnidriver, tmp_path):
    def make(**bandwidth_keys):
        path = tmp_path / "k8s.conflist"
        path.write_text(json.dumps(k8s_conflist(tmp_path, **bandwidth_keys)))
        return Chain(node, cnidriver, cni_bin, str(path), str(tmp_path / "cache"))
    return make


def tc_flows():
    from pycni.plugins.bandwidth import flows

    return flows.FLOWS


def shaped(ingress=RATE, egress=RATE, burst=BURST):
    bw = {}
    if ingress:
        bw.update(ingressRate=ingress, ingressBurst=burst)
    if egress:
        bw.update(egressRate=egress, egressBurst=burst)
    return {"bandwidth": bw}


def iperf(node, pod, port, reverse=False, seconds=4, flows=1, during=None):
    """TCP throughput in bits/s between the pod and an iperf3 server on the node's bridge address;
    `during()` runs while the transfer is under way."""
    server = node.popen("iperf3", "-s", "-1", "-B", GATEWAY, "-p", str(port), stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if node.run("ss", "-ltn", f"sport = :{port}").stdout.count("LISTEN"):
                break
            subprocess.run(["sleep", "0.1"])
        argv = ["iperf3", "-c", GATEWAY, "-p", str(port), "-t", str(seconds), "-O", "1", "-J", "-P", str(flows)] + (
            ["-R"] if reverse else [])
        client = pod.popen(*argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if during is not None:
            subprocess.run(["sleep", "1.5"])  # past slow start
            during()
        out = json.loads(client.communicate(timeout=seconds + 30)[0])
        return out["end"]["sum_received"]["bits_per_second"]
    finally:
        server.kill()
        server.wait(timeout=10)


def qdiscs(node):
    return node.run("tc", "qdisc", "show").stdout


def test_rates_in_both_directions_against_an_unshaped_pod(sandbox, node, chain):
    net = chain()
    slow, fast = sandbox.pod(), sandbox.pod()
    net.add(slow, "slow", shaped())
    net.add(fast, "fast", None)
    into_pod = iperf(node, slow, 5301, reverse=True)
    out_of_pod = iperf(node, slow, 5302)
    unshaped = iperf(node, fast, 5303)
    print(f"\nset {RATE / 1e6:.1f} Mbit/s: into pod {into_pod / 1e6:.2f} Mbit/s, out of pod {out_of_pod / 1e6:.2f} "
          f"Mbit/s; unshaped pod {unshaped / 1e6:.0f} Mbit/s")
    assert 0.6 * RATE <= into_pod <= 1.15 * RATE
    assert 0.6 * RATE <= out_of_pod <= 1.15 * RATE
    assert unshaped > 10 * RATE


def ping_rtts(pod, count=10):
    out = pod.run("ping", "-c", str(count), "-i", "0.2", "-W", "2", GATEWAY, check=False, timeout=30).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+)", out)]


@pytest.mark.parametrize("reverse,flows", [(False, 1), (False, 4), (True, 1), (True, 4)],
                         ids=["egress-1-flow", "egress-4-flows", "ingress-1-flow", "ingress-4-flows"])
def test_a_saturated_pod_keeps_its_rate_and_its_pings_get_through(sandbox, node, chain, reverse, flows):
    """The shaper's interactive class: pings are neither dropped nor queued behind the bulk transfer. The
    added RTT is reported here and measured against the reference by benchmarks/bufferbloat.py."""
    net = chain()
    pod = sandbox.pod()
    net.add(pod, "p", shaped(burst=1_000_000))
    idle = statistics.median(ping_rtts(pod))
    loaded: list[float] = []
    rate = iperf(node, pod, 5310 + flows + (10 if reverse else 0), reverse=reverse, seconds=5, flows=flows,
                 during=lambda: loaded.extend(ping_rtts(pod, 10)))
    print(f"\n{'ingress' if reverse else 'egress'} x{flows}: {rate / 1e6:.2f} Mbit/s of {RATE / 1e6:g}; "
          f"ping {idle:.3f} ms idle, {statistics.median(loaded):.3f} ms loaded")
    assert 0.9 * RATE <= rate <= 1.1 * RATE
    assert len(loaded) == 10  # not one ping lost to the full bulk queue


def test_qdiscs_and_ifb_are_gone_after_del_and_result_lists_the_ifb(sandbox, node, chain):
    net = chain()
    pod = sandbox.pod()
    result = net.add(pod, "p", shaped())
    ifb = result["interfaces"][-1]
    assert ifb["name"].startswith("bw") and "sandbox" not in ifb
    links = {link["ifname"]: link for link in node.link_json()}
    host_veth = result["interfaces"][1]["name"]
    assert links[ifb["name"]]["mtu"] == links[host_veth]["mtu"]
    for link in (host_veth, ifb["name"]):
        shown = node.run("tc", "qdisc", "show", "dev", link).stdout
        assert "htb 1: root" in shown and "pfifo 10: parent 1:10" in shown, shown
        # the bulk queue: 8 frames (12 ms of 8 Mbit/s), not 25 ms + the 100 kB burst; 2 frames segment
        # no fq_codel in this kernel: sixteen flow queues, each a tbf that segments with its own short bfifo
        assert len(re.findall(r"tbf 10[0-9a-f]: parent 1:10[0-9a-f] rate 80Mbit burst 30\d\db lat 9\d\dus",
                              shown)) == tc_flows(), shown
        classes = node.run("tc", "class", "show", "dev", link).stdout
        assert "class htb 1:1 root rate 8Mbit ceil 8Mbit burst 100000b" in classes, classes
        filters = node.run("tc", "filter", "show", "dev", link).stdout
        assert filters.count("flowid 1:10") == 2, filters  # ICMP and short packets (an IPv4-only pod)
        assert "protocol all pref 10 bpf" in filters, filters  # the flow hash
    assert "ingress ffff: dev " + host_veth in qdiscs(node)
    assert net("del", pod, "p", shaped())[0] == 0
    assert "ingress" not in qdiscs(node)  # the redirect into the ifb: gone by the answer
    # the idle ifb and its shaper: gone by the answer (standalone), or ~20 ms after it (the service unregisters
    # the ifb after answering)
    assert eventually(lambda: "htb" not in qdiscs(node)
                      and ifb["name"] not in [link["ifname"] for link in node.link_json()])
    assert net("del", pod, "p", shaped())[0] == 0


def test_check_fails_after_a_qdisc_is_removed_by_hand(sandbox, node, chain):
    net = chain()
    pod = sandbox.pod()
    result = net.add(pod, "p", shaped())
    assert net("check", pod, "p", shaped())[0] == 0
    node.run("tc", "qdisc", "del", "dev", result["interfaces"][1]["name"], "root")
    code, out = net("check", pod, "p", shaped())
    assert code == 1 and "ingress" in out["error"]


def test_a_dual_stack_pod_gets_the_ipv6_interactive_filters_too(sandbox, node, cnidriver, cni_bin, tmp_path):
    conflist = k8s_conflist(tmp_path)
    conflist["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.244.6.0/24"}], [{"subnet": "fd44:6::/64"}]]
    path = tmp_path / "dual.conflist"
    path.write_text(json.dumps(conflist))
    net = Chain(node, cnidriver, cni_bin, str(path), str(tmp_path / "cache"))
    pod = sandbox.pod()
    result = net.add(pod, "p", shaped())
    filters = node.run("tc", "filter", "show", "dev", result["interfaces"][1]["name"]).stdout
    assert filters.count("flowid 1:10") == 4, filters  # ICMP, ICMPv6, short IPv4 and short IPv6 packets
    assert "protocol ipv6" in filters and "match 00003a00/0000ff00 at 4" in filters, filters
    assert ping(pod, "fd44:6::1", count=2)


def test_a_second_add_is_refused_and_the_first_keeps_its_shaping(sandbox, node, chain, cni_bin):
    net = chain()
    pod = sandbox.pod()
    result = net.add(pod, "p", shaped())
    before = qdiscs(node)
    prev = {**result, "interfaces": result["interfaces"][:-1]}  # what bandwidth was given: without its ifb
    config = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "bandwidth", "prevResult": prev,
              "runtimeConfig": shaped()}
    again = run_plugin(node, f"{cni_bin}/bandwidth", plugin_env("ADD", "p", pod.path, "eth0"), json.dumps(config))
    assert again.returncode != 0 and "Traceback" not in again.stdout + again.stderr, again.stdout
    assert qdiscs(node) == before
    assert net("check", pod, "p", shaped())[0] == 0


def test_each_flow_gets_the_queue_its_ports_hash_to(sandbox, node, chain):
    """Without fq_codel, flows are spread over sixteen queues by a hash of their ports (a classic BPF
    classifier), so a request waits for one frame of a bulk transfer, not for its queue: datagrams sent from
    chosen ports land, on the real kernel, in the classes `flows.flow_queue` names."""
    from pycni.plugins.bandwidth import flows

    net = chain()
    pod = sandbox.pod()
    result = net.add(pod, "p", shaped())
    ifb = result["interfaces"][-1]["name"]
    pod_ip = result["ips"][0]["address"].split("/")[0]
    ports = {}  # one source port per flow queue
    for port in range(41000, 41100):
        ports.setdefault(flows.flow_queue(port, 5353), port)
    assert len(ports) == flows.FLOWS
    sends = "; ".join(f"s{port} = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                      f"s{port}.bind(({pod_ip!r}, {port})); "
                      f"[s{port}.sendto(b'x' * (200 + {i}), ({GATEWAY!r}, 5353)) for _ in range({i + 1})]"
                      for i, port in enumerate(ports.values()))
    pod.run(sys.executable, "-c", "import socket; " + sends)

    def sent():  # packets each flow queue has sent so far (the pod's egress is shaped on its ifb)
        shown = node.run("tc", "-s", "class", "show", "dev", ifb).stdout
        return {int(m.group(1), 16): int(m.group(2)) for m in re.finditer(
            r"class htb 1:(10[0-9a-f]) .*?\n Sent \d+ bytes (\d+) pkt", shown, re.S)}

    # the i-th port's i + 1 datagrams, in its own queue (1:100 also takes what is not TCP or UDP); a queue
    # sends at the pod's rate, so the last datagrams may still be queued when the sender is done
    expected = {queue & 0xFFFF: i + 1 for i, queue in enumerate(ports)}
    assert eventually(lambda: all(sent().get(q, 0) >= n for q, n in expected.items())), (expected, sent())
    counts = sent()
    assert all(counts[q] == n for q, n in expected.items() if q != FLOW_DEFAULT), (expected, counts)
    assert net("check", pod, "p", shaped())[0] == 0


def test_check_notices_a_changed_queue(sandbox, node, chain):
    net = chain()
    pod = sandbox.pod()
    result = net.add(pod, "p", shaped())
    node.run("tc", "qdisc", "change", "dev", result["interfaces"][1]["name"], "parent", "1:100", "handle", "100:",
             "tbf", "rate", "80mbit", "burst", "1514", "limit", "150000")
    code, out = net("check", pod, "p", shaped())
    assert code == 1 and "queue 150000 B" in out["error"], out


def test_static_config_wins_and_unlimited_passes_through(sandbox, node, chain):
    net = chain(ingressRate=16_000_000, ingressBurst=BURST, queueLatencyMs=20)
    pod = sandbox.pod()
    result = net.add(pod, "p", shaped(ingress=RATE, egress=RATE))
    host_veth = result["interfaces"][1]["name"]
    assert "root rate 16Mbit" in node.run("tc", "class", "show", "dev", host_veth).stdout
    # queueLatencyMs 20: a bulk queue of 40000 bytes, shown by tc as its latency beyond the ~3.5 kB
    # segmenting bucket (rounded to scheduler ticks) at 160 Mbit/s: (40000 - 3514) / 20e6 s
    shown = qdiscs(node)
    assert re.search(r"tbf 100: dev \S+ parent 1:100 rate 160Mbit burst 3[45]\d\db lat 1\.8\dms", shown), shown
    assert not result["interfaces"][-1]["name"].startswith("bw")  # static config has no egress: no ifb
    plain = sandbox.pod()
    result = net.add(plain, "q", None)
    assert result["interfaces"][-1]["name"] == "eth0"


@pytest.mark.parametrize("bandwidth,word", [
    ({"ingressRate": RATE}, "burst must also be set"),
    ({"egressBurst": BURST}, "rate must also be set"),
    ({"ingressRate": 4, "ingressBurst": 8}, "out of range"),
    ({"ingressRate": RATE, "ingressBurst": 2**35 * 8}, "4GB"),
])
def test_invalid_limits_are_config_errors(sandbox, node, chain, bandwidth, word):
    net = chain()
    pod = sandbox.pod()
    code, out = net("add", pod, "bad", {"bandwidth": bandwidth})
    assert code == 1 and out["code"] == 7 and word in (out["error"] + out.get("details", ""))
    assert "htb" not in qdiscs(node)


def test_an_add_right_after_the_del_of_the_same_attachment_gets_its_ifb(sandbox, node, chain):
    """The same ifb name at once: through the service, the ADD waits for the DEL's deferred unregistering."""
    net = chain()
    pod = sandbox.pod()
    for _ in range(3):
        first = net.add(pod, "again", shaped())
        assert net("del", pod, "again", shaped())[0] == 0
    again = net.add(pod, "again", shaped())
    assert again["interfaces"][-1]["name"] == first["interfaces"][-1]["name"]
    shown = node.run("tc", "qdisc", "show", "dev", again["interfaces"][-1]["name"]).stdout
    assert "htb 1: root" in shown, shown
    assert net("del", pod, "again", shaped())[0] == 0


def test_gc_removes_ifbs_of_invalid_attachments(sandbox, node, chain, cni_bin):
    net = chain()
    keep, gone = sandbox.pod(), sandbox.pod()
    net.add(keep, "keep", shaped())
    r = net.add(gone, "gone", shaped())
    gc_conf = {"cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "bandwidth",
               "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    assert run_plugin(node, f"{cni_bin}/bandwidth", plugin_env("GC", path=cni_bin), json.dumps(gc_conf)).ok
    ifbs = [link["ifname"] for link in node.link_json() if link["ifname"].startswith("bw")]
    assert len(ifbs) == 1 and r["interfaces"][-1]["name"] not in ifbs


def test_not_chained_is_an_error(node, cni_bin):
    config = {"cniVersion": "1.0.0", "name": "n", "type": "bandwidth", "ingressRate": RATE, "ingressBurst": BURST}
    run = run_plugin(node, f"{cni_bin}/bandwidth", plugin_env("ADD", "c", "/run/netns/x", "eth0", path=cni_bin),
                     json.dumps(config))
    assert not run.ok and "chained" in run.json["msg"]


def test_whole_k8s_chain_through_libcni(sandbox, node, chain):
    """bridge + host-local + portmap + bandwidth from the shipped conflist: two pods, a hostPort, a limit."""
    ext = sandbox.namespace("ext")
    link_namespaces(node, ext, "uplink", "wan", ["192.0.2.1/24"], ["192.0.2.2/24"])
    net = chain()
    web, client = sandbox.pod(), sandbox.pod()
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], **shaped()}
    web_result = net.add(web, "web", caps)
    client_result = net.add(client, "client", None)
    web_ip = web_result["ips"][0]["address"].split("/")[0]
    assert ping(client, web_ip)
    with PeerServer(web, 80):
        assert peer_seen_by(ext, "192.0.2.1", 8080) == "192.0.2.2"
        assert peer_seen_by(client, web_ip, 80) == client_result["ips"][0]["address"].split("/")[0]
    assert net("check", web, "web", caps)[0] == 0
    for pod, cid, c in ((web, "web", caps), (client, "client", None)):
        assert net("del", pod, cid, c)[0] == 0
    assert node.link_names() == ["cni0", "lo", "uplink"]


def test_sixteen_pods_at_once_on_a_fresh_node(sandbox, node, chain):
    """Runtimes start pods in parallel: the first ones race to create the bridge and pycni's nft tables."""
    from concurrent.futures import ThreadPoolExecutor

    net = chain()
    pods = [sandbox.pod() for _ in range(16)]
    caps = [{"portMappings": [{"hostPort": 30000 + i, "containerPort": 80, "protocol": "tcp"}], **shaped()}
            for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        added = list(pool.map(lambda i: net("add", pods[i], f"par{i}", caps[i]), range(16)))
    assert [code for code, _ in added] == [0] * 16, [out for code, out in added if code]
    addresses = {out["ips"][0]["address"] for _, out in added}
    assert len(addresses) == 16
    assert ping(pods[0], added[15][1]["ips"][0]["address"].split("/")[0])
    hostport_maps = json.loads(node.run("nft", "-j", "list", "maps", "inet").stdout)["nftables"]
    assert sum(len(m["map"].get("elem", [])) for m in hostport_maps if "map" in m) == 16
    with ThreadPoolExecutor(16) as pool:
        removed = list(pool.map(lambda i: net("del", pods[i], f"par{i}", caps[i]), range(16)))
    assert [code for code, _ in removed] == [0] * 16
    # the ifbs: through the service, unregistered one after another once the DELs have answered
    assert eventually(lambda: sorted(link["ifname"] for link in node.link_json()) == ["cni0", "lo"], timeout=10)
    assert "elements" not in node.run("nft", "list", "ruleset").stdout
