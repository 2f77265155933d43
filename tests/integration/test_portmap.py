"""portmap on nftables: hostPorts through libcni with bridge + host-local, real traffic."""

import json

import pytest

from tests.helpers import Chain, PeerServer, link_namespaces, peer_seen_by, plugin_env, reservation_files, run_plugin

NODE_IP, EXT_IP, NODE_IP2 = "192.0.2.1", "192.0.2.2", "192.0.2.10"
NODE_IP6, EXT_IP6 = "2001:db8:1::1", "2001:db8:1::2"


def conflist(tmp_path, name="k8s-pod-network", bridge="cni0", subnet="10.244.5.0/24", subnet6=None,
             default_gateway=True, **portmap):
    ranges = [[{"subnet": subnet}]] + ([[{"subnet": subnet6}]] if subnet6 else [])
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "isDefaultGateway": default_gateway, "ipMasq": True,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": str(tmp_path / f"ipam-{name}"), "ranges": ranges}},
        {"type": "portmap", "capabilities": {"portMappings": True}, **portmap}]}


@pytest.fixture
def site(sandbox, node):
    """The node with an uplink to an outside namespace `ext`."""
    ext = sandbox.namespace("ext")
    link_namespaces(node, ext, "uplink", "wan", [f"{NODE_IP}/24", f"{NODE_IP2}/24", f"{NODE_IP6}/64"],
                    [f"{EXT_IP}/24", f"{EXT_IP6}/64"])
    return ext


@pytest.fixture
def make_chain(node, cni_bin, cnidriver, tmp_path):
    def make(config, label="net"):
        path = tmp_path / f"{label}.conflist"
        path.write_text(json.dumps(config))
        return Chain(node, cnidriver, cni_bin, str(path), str(tmp_path / f"cache-{label}"))
    return make


def ports(*specs):
    out = []
    for spec in specs:
        host, container, proto, *host_ip = spec
        entry = {"hostPort": host, "containerPort": container, "protocol": proto}
        if host_ip:
            entry["hostIP"] = host_ip[0]
        out.append(entry)
    return {"portMappings": out}


def elements(node):
    done = node.run("nft", "-j", "list", "table", "inet", "pycni_hostport", check=False)
    if done.returncode:
        return []
    return [e for item in json.loads(done.stdout)["nftables"] for kind in ("set", "map") if kind in item
            for e in item[kind].get("elem", [])]


def test_tcp_and_udp_host_ports_from_outside(sandbox, node, site, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path))
    pod = sandbox.pod()
    chain.add(pod, "web", ports((8080, 80, "tcp"), (5353, 53, "udp")))
    with PeerServer(pod, 80), PeerServer(pod, 53, "udp"):
        assert peer_seen_by(site, NODE_IP, 8080) == EXT_IP  # DNAT, client address preserved
        assert peer_seen_by(site, NODE_IP, 5353, "udp") == EXT_IP
        assert peer_seen_by(site, NODE_IP, 8081) is None
    code, out = chain("check", pod, "web", ports((8080, 80, "tcp"), (5353, 53, "udp")))
    assert code == 0, out
    assert chain("del", pod, "web", ports((8080, 80, "tcp"), (5353, 53, "udp")))[0] == 0
    with PeerServer(pod, 80):
        assert peer_seen_by(site, NODE_IP, 8080) is None
    assert elements(node) == []


def test_host_ip_restricts_the_mapping(sandbox, node, site, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path))
    pod = sandbox.pod()
    chain.add(pod, "pinned", ports((8080, 80, "tcp", NODE_IP2)))
    with PeerServer(pod, 80):
        assert peer_seen_by(site, NODE_IP2, 8080) == EXT_IP
        assert peer_seen_by(site, NODE_IP, 8080) is None


def test_ipv6_host_port(sandbox, node, site, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path, subnet6="fd44:5::/64"))
    pod = sandbox.pod()
    chain.add(pod, "v6", ports((8443, 443, "tcp")))
    with PeerServer(pod, 443):
        assert peer_seen_by(site, NODE_IP6, 8443) == EXT_IP6
        assert peer_seen_by(site, NODE_IP, 8443) == EXT_IP


def test_hairpin_and_localhost(sandbox, node, site, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path))
    pod = sandbox.pod()
    result = chain.add(pod, "self", ports((8080, 80, "tcp")))
    pod_ip = result["ips"][0]["address"].split("/")[0]
    with PeerServer(pod, 80):
        # the pod reaches itself through the node's address: masqueraded to the gateway, so replies return
        assert peer_seen_by(pod, NODE_IP, 8080) == "10.244.5.1"
        # the node itself, through 127.0.0.1 (route_localnet on the bridge only)
        assert peer_seen_by(node, "127.0.0.1", 8080) == "10.244.5.1"
        assert peer_seen_by(node, NODE_IP, 8080) is not None
    assert node.sysctl("net.ipv4.conf.cni0.route_localnet") == "1"
    assert node.sysctl("net.ipv4.conf.all.route_localnet") == "0"
    assert pod_ip == "10.244.5.2"


def test_transit_traffic_is_not_touched(sandbox, node, site, make_chain, tmp_path):
    beyond = sandbox.namespace("beyond")
    link_namespaces(node, beyond, "side", "lan", ["198.51.100.1/24"], ["198.51.100.2/24"])
    beyond.run("ip", "route", "add", "default", "via", "198.51.100.1")
    site.run("ip", "route", "add", "198.51.100.0/24", "via", NODE_IP)
    chain = make_chain(conflist(tmp_path))
    pod = sandbox.pod()
    chain.add(pod, "web", ports((8080, 80, "tcp")))
    with PeerServer(pod, 80), PeerServer(beyond, 8080):
        assert peer_seen_by(site, "198.51.100.2", 8080) == EXT_IP  # answered by `beyond`, not DNATed
        assert peer_seen_by(site, NODE_IP, 8080) == EXT_IP


def test_udp_port_reused_by_a_second_pod_gets_traffic_at_once(sandbox, node, site, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path))
    first, second = sandbox.pod(), sandbox.pod()
    mapping = ports((5000, 5000, "udp"))
    chain.add(first, "first", mapping)
    with PeerServer(first, 5000, "udp"):
        assert peer_seen_by(site, NODE_IP, 5000, "udp", source_port=40000) == EXT_IP
    assert chain("del", first, "first", mapping)[0] == 0
    chain.add(second, "second", mapping)
    with PeerServer(second, 5000, "udp"):
        # same client 5-tuple as before: a stale conntrack entry would send this to the dead pod
        assert peer_seen_by(site, NODE_IP, 5000, "udp", source_port=40000) == EXT_IP


def test_two_networks_same_container_do_not_disturb_each_other(sandbox, node, site, make_chain, tmp_path):
    net_a = make_chain(conflist(tmp_path, name="net-a", bridge="br-a", subnet="10.60.0.0/24",
                                default_gateway=False), "a")
    net_b = make_chain(conflist(tmp_path, name="net-b", bridge="br-b", subnet="10.61.0.0/24"), "b")
    pod = sandbox.pod()
    net_a.add(pod, "shared-id", ports((8080, 80, "tcp")))
    code, out = net_b("add", pod, "shared-id", ports((9090, 90, "tcp")), ifname="net1")
    assert code == 0, out
    assert net_a("del", pod, "shared-id", ports((8080, 80, "tcp")))[0] == 0
    with PeerServer(pod, 90):
        assert peer_seen_by(site, NODE_IP, 9090) == EXT_IP
    assert len([e for e in elements(node) if isinstance(e, list)]) == 1


def test_host_port_conflict_is_refused_cleanly(sandbox, node, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path))
    a, b = sandbox.pod(), sandbox.pod()
    chain.add(a, "a", ports((8080, 80, "tcp")))
    before = elements(node)
    code, out = chain("add", b, "b", ports((8080, 80, "tcp")))
    assert code == 1 and out["code"] == 7 and "already allocated" in out["error"]
    assert elements(node) == before
    # a runtime follows a failed ADD with DEL; that must not touch the owner's mapping
    assert chain("del", b, "b", ports((8080, 80, "tcp")))[0] == 0
    assert elements(node) == before
    assert [link["ifname"] for link in b.link_json()] == ["lo"]


def test_del_without_mappings_or_namespace_still_cleans(sandbox, node, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path))
    a, b = sandbox.pod(), sandbox.pod()
    chain.add(a, "a", ports((8080, 80, "tcp"), (8443, 443, "tcp")))
    chain.add(b, "b", ports((9090, 90, "tcp")))
    assert chain("del", a, "a", None)[0] == 0  # the runtime did not resend portMappings
    path = b.path
    sandbox.remove(b)
    assert chain("del", None, "b", ports((9090, 90, "tcp")), netns=path)[0] == 0
    assert chain("del", None, "b", ports((9090, 90, "tcp")), netns=path)[0] == 0
    assert elements(node) == []


def test_check_fails_when_an_element_is_removed_by_hand(sandbox, node, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path))
    pod = sandbox.pod()
    chain.add(pod, "c", ports((8080, 80, "tcp")))
    assert chain("check", pod, "c", ports((8080, 80, "tcp")))[0] == 0
    maps = json.loads(node.run("nft", "-j", "list", "maps", "inet").stdout)["nftables"]
    any4 = next(m["map"]["name"] for m in maps if "map" in m and m["map"]["name"].endswith("-any4"))
    node.run("nft", "delete", "element", "inet", "pycni_hostport", any4, "{ tcp . 8080 }")
    code, out = chain("check", pod, "c", ports((8080, 80, "tcp")))
    assert code == 1 and "8080" in out["error"]


def test_many_pods_stay_constant_size_per_pod(sandbox, node, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path))
    pods = [(sandbox.pod(), f"p{i}") for i in range(12)]
    for i, (pod, cid) in enumerate(pods):
        chain.add(pod, cid, ports((20000 + i, 80, "tcp")))
    assert len(elements(node)) == 12 * 3  # one map element, one hairpin pair, one localhost entry per pod
    rules = node.run("nft", "list", "table", "inet", "pycni_hostport").stdout
    assert rules.count("jump net-") == 4  # chains are per network, not per pod
    for pod, cid in pods:
        assert chain("del", pod, cid, None)[0] == 0
    assert elements(node) == []


@pytest.mark.parametrize("keys,word", [({"markMasqBit": 13}, "markMasqBit"),
                                       ({"externalSetMarkChain": "KUBE-MARK-MASQ"}, "externalSetMarkChain"),
                                       ({"backend": "iptables"}, "iptables"),
                                       ({"conditionsV4": ["-s", "10.0.0.0/8"]}, "iptables syntax")])
def test_iptables_only_keys_are_answered_clearly(sandbox, make_chain, tmp_path, keys, word):
    chain = make_chain(conflist(tmp_path, **keys))
    code, out = chain("add", sandbox.pod(), "x", ports((8080, 80, "tcp")))
    assert code == 1 and out["code"] == 2 and word in out["error"]


def test_conditions_restrict_sources(sandbox, node, site, make_chain, tmp_path):
    chain = make_chain(conflist(tmp_path, conditionsV4=["ip saddr != 192.0.2.2"]))
    pod = sandbox.pod()
    chain.add(pod, "cond", ports((8080, 80, "tcp")))
    with PeerServer(pod, 80):
        assert peer_seen_by(site, NODE_IP, 8080) is None
        assert peer_seen_by(node, "127.0.0.1", 8080) is not None


def test_gc_removes_elements_of_invalid_attachments(sandbox, node, cni_bin, make_chain, tmp_path):
    from tests.helpers import plugin_env, run_plugin

    config = conflist(tmp_path)
    config["cniVersion"] = "1.0.0"
    chain = make_chain(config)
    a, b = sandbox.pod(), sandbox.pod()
    chain.add(a, "keep", ports((8080, 80, "tcp")))
    chain.add(b, "gone", ports((9090, 90, "tcp")))
    gc_conf = {"cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "portmap",
               "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    run = run_plugin(node, f"{cni_bin}/portmap", plugin_env("GC", path=cni_bin), json.dumps(gc_conf))
    assert run.ok, run.stdout
    remaining = {e[0]["elem"]["comment"] if isinstance(e, list) else e["elem"]["comment"] for e in elements(node)}
    assert len(remaining) == 1 and remaining.pop().endswith("keep/eth0")


def test_a_repeated_mapping_is_taken_once_and_a_conflicting_one_refused_by_name(sandbox, node, site, make_chain,
                                                                                tmp_path):
    chain = make_chain(conflist(tmp_path))
    pod, other = sandbox.pod(), sandbox.pod()
    # the same mapping twice, once with the wildcard spelled out: one element per map, traffic flows
    chain.add(pod, "pod", ports((8080, 80, "tcp"), (8080, 80, "tcp", "0.0.0.0"), (8080, 80, "tcp")))
    assert len([e for e in elements(node) if isinstance(e, list)]) == 1
    with PeerServer(pod, 80):
        assert peer_seen_by(site, NODE_IP, 8080) == EXT_IP
    before = elements(node)
    code, out = chain("add", other, "other", ports((9090, 90, "tcp"), (9090, 91, "tcp")))
    assert code == 1 and out["code"] == 7, out
    assert out["error"] == "portMappings map host port 9090/tcp twice" and "90 and 91" in out["details"]
    assert elements(node) == before
    assert chain("del", other, "other", ports((9090, 90, "tcp"), (9090, 91, "tcp")))[0] == 0  # as a runtime does
    assert elements(node) == before and [link["ifname"] for link in other.link_json()] == ["lo"]


@pytest.mark.parametrize("valid", [None, "absent"], ids=["null", "absent"])
def test_gc_after_a_reboot_with_no_pod_left_reclaims_everything(sandbox, node, cni_bin, make_chain, tmp_path, valid):
    """CRI-O starting with no pod (a boot, a restart after one) sends GC with `cni.dev/valid-attachments: null`:
    libcni ≥ 1.2 marshals its nil list so. Every plugin of the chain takes it for "none is valid". (Debian's
    libcni 1.1.2, which drives the ADDs here, has no GC: the GC calls are made as libcni makes them, each plugin's
    config with the list's name and cniVersion 1.1.0.)"""
    config = conflist(tmp_path)  # at 1.0.0: Debian's libcni reads no 1.1.0 result
    config["plugins"].append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    chain = make_chain(config)
    shaped = {"ingressRate": 8_000_000, "ingressBurst": 400_000, "egressRate": 8_000_000, "egressBurst": 400_000}
    for name in ("a", "b"):
        chain.add(sandbox.pod(), name, {**ports((8080 if name == "a" else 8081, 80, "tcp")), "bandwidth": shaped})
    assert elements(node) and any(link["ifname"].startswith("bw") for link in node.link_json())
    for plugin in config["plugins"]:
        gc = {**plugin, "name": config["name"], "cniVersion": "1.1.0"}
        if valid != "absent":
            gc["cni.dev/valid-attachments"] = valid
        run = run_plugin(node, f"{cni_bin}/{plugin['type']}", plugin_env("GC", path=cni_bin), json.dumps(gc))
        assert run.ok, (plugin["type"], run.stdout)
    assert elements(node) == []
    assert not any(link["ifname"].startswith("bw") for link in node.link_json())
    assert reservation_files(str(tmp_path / "ipam-k8s-pod-network" / "k8s-pod-network")) == []
    masq = node.run("nft", "-j", "list", "table", "inet", "pycni_masq").stdout
    assert '"elem"' not in masq
