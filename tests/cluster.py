"""A cluster of network namespaces for the routes agent: nodes `a` and `b` on one L2 segment (a bridge in
the `lan` namespace, which also routes), node `c` behind that router on another subnet, dual-stack; the
stand-in API server listening in `lan`; on each node `pycni routes` with a kubeconfig, and pods attached by
libcni with the shipped conflist rendered as the DaemonSet's init container renders it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from tests.apiserver import StandinAPI, node_object
from tests.helpers import Chain, Namespace, Sandbox, eventually

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "conf", "10-k8s-pod-network.conflist")
CLUSTER_CIDRS = ["10.244.0.0/16", "fd00:10:244::/56"]
API_HOST, API_PORT = "192.0.2.1", 6443


@dataclass(frozen=True)
class NodeSpec:
    name: str
    addresses: tuple[str, ...]  # CIDR notation, on its eth0
    gateways: tuple[str, ...]
    pod_cidrs: tuple[str, ...]

    @property
    def ips(self) -> list[str]:
        return [a.split("/")[0] for a in self.addresses]


NODES = (
    NodeSpec("a", ("192.0.2.11/24", "2001:db8:2::11/64"), ("192.0.2.1", "2001:db8:2::1"),
             ("10.244.1.0/24", "fd00:10:244:1::/64")),
    NodeSpec("b", ("192.0.2.12/24", "2001:db8:2::12/64"), ("192.0.2.1", "2001:db8:2::1"),
             ("10.244.2.0/24", "fd00:10:244:2::/64")),
    NodeSpec("c", ("203.0.113.13/24", "2001:db8:3::13/64"), ("203.0.113.1", "2001:db8:3::1"),
             ("10.244.3.0/24", "fd00:10:244:3::/64")),
)


@dataclass
class Node:
    spec: NodeSpec
    ns: Namespace
    directory: str
    chain: Chain
    agent: subprocess.Popen | None = None
    log: str = ""
    pods: dict = field(default_factory=dict)  # name -> (namespace, [ips])

    @property
    def state_file(self) -> str:
        return os.path.join(self.directory, "routes.json")

    @property
    def conflist(self) -> str:
        return os.path.join(self.directory, "net.d", "10-k8s-pod-network.conflist")

    def state(self) -> dict:
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def routes(self, family: str = "-4") -> list[dict]:
        return json.loads(self.ns.run("ip", "-j", family, "route", "show", "proto", "114").stdout or "[]")

    def neighbours(self) -> list[dict]:
        return json.loads(self.ns.run("ip", "-j", "neigh", "show", "dev", "pycni.vxlan", "nud", "permanent").stdout
                          or "[]")

    def fdb(self) -> list[dict]:
        out = json.loads(self.ns.run("bridge", "-j", "fdb", "show", "dev", "pycni.vxlan").stdout or "[]")
        return [e for e in out if e.get("mac") != "00:00:00:00:00:00"]

    def metric(self, name: str, port: int = 9180) -> float:
        """A sample's value from the agent's /metrics (in the node's namespace)."""
        body = self.ns.run(sys.executable, "-c", f"import urllib.request;print(urllib.request.urlopen("
                           f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())").stdout
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(name) and not line.startswith("#"))


class Cluster:
    def __init__(self, sandbox: Sandbox, bin_dir: str, cnidriver: str, tmp_path, specs=NODES) -> None:
        from pycni.node.install import render_conflist

        self.sandbox, self.tmp = sandbox, tmp_path
        self.lan = lan = sandbox.namespace("lan")
        lan.run("ip", "link", "add", "seg", "type", "bridge")
        lan.run("ip", "link", "set", "seg", "up")
        for address in ("192.0.2.1/24", "2001:db8:2::1/64"):
            lan.run("ip", "addr", "add", address, "dev", "seg", *(["nodad"] if ":" in address else []))
        lan.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        lan.run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        self.api = StandinAPI(lan.name, API_HOST, API_PORT, str(tmp_path))
        self.kubeconfig = self.api.kubeconfig(str(tmp_path / "kubeconfig"))
        self.api.start()
        with open(SHIPPED) as f:
            template = f.read()
        self.nodes: dict[str, Node] = {}
        for spec in specs:
            ns = sandbox.namespace(f"node{spec.name}")
            ns.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"port-{spec.name}", "netns",
                   lan.name)
            if spec.addresses[0].startswith("192.0.2."):
                lan.run("ip", "link", "set", f"port-{spec.name}", "master", "seg", "up")
            else:  # behind the router: a subnet of its own
                lan.run("ip", "link", "set", f"port-{spec.name}", "up")
                for gateway, address in zip(spec.gateways, spec.addresses, strict=True):
                    prefix = address.split("/")[1]
                    lan.run("ip", "addr", "add", f"{gateway}/{prefix}", "dev", f"port-{spec.name}",
                            *(["nodad"] if ":" in gateway else []))
            for address in spec.addresses:
                ns.run("ip", "addr", "add", address, "dev", "eth0", *(["nodad"] if ":" in address else []))
            ns.run("ip", "link", "set", "eth0", "up")
            for gateway in spec.gateways:
                ns.run("ip", *(["-6"] if ":" in gateway else []), "route", "add", "default", "via", gateway)
            directory = tmp_path / f"node-{spec.name}"
            (directory / "net.d").mkdir(parents=True)
            conflist = json.loads(render_conflist(template, list(spec.pod_cidrs), CLUSTER_CIDRS))
            conflist["plugins"][0]["ipam"]["dataDir"] = str(directory / "ipam")
            (directory / "net.d" / "10-k8s-pod-network.conflist").write_text(json.dumps(conflist, indent=2))
            chain = Chain(ns, cnidriver, bin_dir, str(directory / "net.d" / "10-k8s-pod-network.conflist"),
                          str(directory / "cache"))
            self.nodes[spec.name] = Node(spec, ns, str(directory), chain)
            self.api.put(node_object(spec.name, list(spec.pod_cidrs), spec.ips))

    def start_agent(self, name: str, *extra: str) -> Node:
        node = self.nodes[name]
        node.log = os.path.join(node.directory, "agent.log")
        with open(node.log, "a") as log:
            node.agent = node.ns.popen(sys.executable, "-m", "pycni", "routes", "--node-name", name, "--kubeconfig",
                                       self.kubeconfig, "--cluster-cidr", ",".join(CLUSTER_CIDRS),
                                       "--conflist", node.conflist, "--state-file", node.state_file,
                                       "--cache-file", os.path.join(node.directory, "nodes-cache.json"),
                                       "--resync", "600", "--metrics-address", "127.0.0.1:9180", *extra,
                                       stdout=log, stderr=subprocess.STDOUT)
        return node

    def stop_agent(self, name: str, sig: int = signal.SIGTERM) -> int:
        node = self.nodes[name]
        assert node.agent is not None
        node.agent.send_signal(sig)
        code = node.agent.wait(timeout=20)
        node.agent = None
        return code

    def synced(self, timeout: float = 30.0, names=None) -> bool:
        """Every running agent has every other node's every pod CIDR in place ('ok')."""
        def done() -> bool:
            for name in names or self.nodes:
                node = self.nodes[name]
                state = node.state()
                if node.agent is None or state.get("pid") != node.agent.pid:
                    return False  # the state of the agent running now, not of one before it
                others = {n: self.api.nodes[n] for n in self.api.nodes if n != name}
                peers = {p["node"]: p for p in state.get("peers", [])}
                if set(peers) != set(others):
                    return False
                for other, obj in others.items():
                    paths = peers[other]["paths"]
                    if [p["cidr"] for p in paths] != obj["spec"]["podCIDRs"] or \
                            any(p["state"] != "ok" for p in paths):
                        return False
            return True
        return eventually(done, timeout)

    def agent_log(self, name: str) -> str:
        with open(self.nodes[name].log) as f:
            return f.read()

    def attach(self, name: str, pod: str) -> list[str]:
        node = self.nodes[name]
        ns = self.sandbox.pod(f"{name}{pod}")
        result = node.chain.add(ns, f"{name}-{pod}")
        ips = [ip["address"].split("/")[0] for ip in result["ips"]]
        node.pods[pod] = (ns, ips)
        return ips

    def close(self) -> None:
        for node in self.nodes.values():
            if node.agent is not None:
                node.agent.kill()
                node.agent.wait(timeout=10)
        self.api.stop()


def wait_for(check, timeout: float = 10.0) -> float | None:
    """Seconds until `check()` held, or None (what a repair took, said in the failure message)."""
    started = time.monotonic()
    return time.monotonic() - started if eventually(check, timeout) else None
