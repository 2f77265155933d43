"""Beyond one node: two nodes on an underlay, each with its own pod CIDR from the shipped conflist,
routes between pod CIDRs (as a cloud route controller adds them), pods talking across without NAT,
and traffic leaving the cluster masqueraded."""

import json
import os

from tests.helpers import Chain, PeerServer, link_namespaces, peer_seen_by, ping

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "..", "conf", "10-k8s-pod-network.conflist")
CLUSTER_CIDR = "10.244.0.0/16"
NODES = {"a": ("192.0.2.11", "10.244.1.0/24"), "b": ("192.0.2.12", "10.244.2.0/24")}
INTERNET = "198.51.100.1"


def test_pods_on_two_nodes_talk_without_nat_and_leave_the_cluster_masqueraded(sandbox, cni_bin, cnidriver,
                                                                                 tmp_path):
    from pycni.node.install import render_conflist

    underlay = sandbox.namespace("underlay")  # the L2 segment both nodes sit on, plus a router to "internet"
    underlay.run("ip", "link", "add", "seg", "type", "bridge")
    underlay.run("ip", "link", "set", "seg", "up")
    underlay.run("ip", "addr", "add", "192.0.2.1/24", "dev", "seg")
    internet = sandbox.namespace("internet")
    link_namespaces(underlay, internet, "out", "in", ["198.51.100.254/24"], [f"{INTERNET}/24"])
    underlay.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    internet.run("ip", "route", "add", "default", "via", "198.51.100.254")

    nodes, pods, results = {}, {}, {}
    with open(SHIPPED) as f:
        template = f.read()
    for name, (node_ip, pod_cidr) in NODES.items():
        node = nodes[name] = sandbox.namespace(f"node{name}")
        node.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"port-{name}", "netns", underlay.name)
        underlay.run("ip", "link", "set", f"port-{name}", "master", "seg", "up")
        node.run("ip", "addr", "add", f"{node_ip}/24", "dev", "eth0")
        node.run("ip", "link", "set", "eth0", "up")
        node.run("ip", "route", "add", "default", "via", "192.0.2.1")
        conflist = json.loads(render_conflist(template, [pod_cidr], [CLUSTER_CIDR]))
        conflist["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / f"ipam-{name}")
        path = tmp_path / f"{name}.conflist"
        path.write_text(json.dumps(conflist))
        chain = Chain(node, cnidriver, cni_bin, str(path), str(tmp_path / f"cache-{name}"))
        pods[name] = sandbox.pod(f"pod{name}")
        results[name] = chain.add(pods[name], f"pod-{name}")
    # the route controller: each node's pod CIDR via that node
    for name, node in nodes.items():
        for other, (other_ip, other_cidr) in NODES.items():
            if other != name:
                node.run("ip", "route", "add", other_cidr, "via", other_ip)
    ip_a = results["a"]["ips"][0]["address"].split("/")[0]
    ip_b = results["b"]["ips"][0]["address"].split("/")[0]
    assert ip_a.startswith("10.244.1.") and ip_b.startswith("10.244.2.")
    assert ping(pods["a"], ip_b) and ping(pods["b"], ip_a)
    with PeerServer(pods["b"], 8080):
        assert peer_seen_by(pods["a"], ip_b, 8080) == ip_a  # the Kubernetes model: no NAT between pods
    with PeerServer(internet, 443):
        assert peer_seen_by(pods["a"], INTERNET, 443) == NODES["a"][0]  # leaving the cluster: the node's address
        assert peer_seen_by(pods["b"], INTERNET, 443) == NODES["b"][0]
