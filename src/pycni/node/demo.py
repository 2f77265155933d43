"""The demo: a node in a network namespace, two pods attached through `pycni run` with the shipped
conflist, traffic that proves it works, then everything removed. The machine's own network is never
touched: every link, address, bridge, nftables table and qdisc lives in namespaces made here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from pycni.node.install import render_conflist
from pycni.node.probe import CLIENT, SERVER

POD_CIDR = "10.244.0.0/24"
NODE_UPLINK, OUTSIDE = "192.0.2.1", "192.0.2.2"
LIMIT = "10M"


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def _run(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")
    return done


class Demo:
    def __init__(self, bin_dir: str, conflist_path: str) -> None:
        self.bin_dir = bin_dir
        self.conflist_path = conflist_path
        self.prefix = "pycni-demo-" + uuid.uuid4().hex[:6]
        self.work = tempfile.mkdtemp(prefix="pycni-demo-")
        self.namespaces: list[str] = []
        self.conf = os.path.join(self.work, "10-k8s-pod-network.conflist")
        with open(conflist_path, encoding="utf-8") as f:
            conflist = json.loads(render_conflist(f.read(), [POD_CIDR]))
        for plugin in conflist["plugins"]:
            if "ipam" in plugin:
                plugin["ipam"]["dataDir"] = os.path.join(self.work, "ipam")
        with open(self.conf, "w", encoding="utf-8") as f:
            json.dump(conflist, f, indent=2)
        self.network = conflist["name"]

    def namespace(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        return name

    def in_ns(self, ns: str, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)

    def pycni(self, *argv: str) -> subprocess.CompletedProcess:
        return self.in_ns(self.node, sys.executable, "-m", "pycni", *argv)

    def run_verb(self, verb: str, pod: str, container_id: str, *extra: str) -> str:
        return self.pycni("run", verb, "--conf", self.conf, "--bin-dir", self.bin_dir, "--cache-dir",
                          os.path.join(self.work, "cache"), "--netns", f"/run/netns/{pod}", "--container-id",
                          container_id, *extra).stdout

    def server(self, ns: str, port: int) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, "tcp", str(port), "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if proc.stdout:
            proc.stdout.readline()  # the server says it listens
        return proc

    def seen_from(self, ns: str, host: str, port: int) -> str:
        done = self.in_ns(ns, sys.executable, "-c", CLIENT, "tcp", host, str(port), "0", check=False, timeout=20)
        return done.stdout.strip() if done.returncode == 0 else "no answer"

    def rate_into(self, pod: str, port: int) -> float:
        server = subprocess.Popen(["ip", "netns", "exec", self.node, "iperf3", "-s", "-1", "-B", "10.244.0.1", "-p",
                                   str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(50):
                if f":{port}" in self.in_ns(self.node, "ss", "-ltn").stdout:
                    break
                time.sleep(0.1)
            out = self.in_ns(pod, "iperf3", "-c", "10.244.0.1", "-p", str(port), "-t", "3", "-O", "1", "-R", "-J")
            return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        finally:
            server.kill()
            server.wait(timeout=10)

    def main(self) -> None:
        _say("1. a node (network namespace) with an uplink to an outside host")
        self.node, self.outside = self.namespace("node"), self.namespace("outside")
        self.in_ns(self.node, "ip", "link", "set", "lo", "up")
        self.in_ns(self.node, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "wan", "netns",
                   self.outside)
        self.in_ns(self.node, "ip", "addr", "add", f"{NODE_UPLINK}/24", "dev", "uplink")
        self.in_ns(self.node, "ip", "link", "set", "uplink", "up")
        self.in_ns(self.outside, "ip", "addr", "add", f"{OUTSIDE}/24", "dev", "wan")
        self.in_ns(self.outside, "ip", "link", "set", "wan", "up")
        print(f"node {self.node}: uplink {NODE_UPLINK}; outside host {self.outside}: {OUTSIDE}")
        print(f"conflist: {self.network} = " + " -> ".join(
            p["type"] for p in json.load(open(self.conf, encoding="utf-8"))["plugins"]))

        _say(f"2. pod web: hostPort 8080->80, {LIMIT}bit/s each way (the kubernetes.io bandwidth annotations)")
        self.web, self.client = self.namespace("web"), self.namespace("client")
        print(self.run_verb("add", self.web, "web", "--port", "8080:80/tcp",
                            "--annotation", f"kubernetes.io/ingress-bandwidth={LIMIT}",
                            "--annotation", f"kubernetes.io/egress-bandwidth={LIMIT}").rstrip())
        _say("3. pod client: no hostPort, no limit")
        print(self.run_verb("add", self.client, "client").rstrip())
        web_ip = self._pod_ip(self.web)
        client_ip = self._pod_ip(self.client)

        _say("4. traffic")
        ping = self.in_ns(self.client, "ping", "-c", "3", "-i", "0.2", "-W", "2", web_ip, check=False)
        print(f"client -> web ({web_ip}) ping: {ping.stdout.strip().splitlines()[-2] if ping.stdout else 'failed'}")
        server = self.server(self.web, 80)
        try:
            print(f"client -> web:80 over TCP, web saw the client as {self.seen_from(self.client, web_ip, 80)} "
                  f"(pod IP {client_ip}: no NAT between pods)")
            print(f"outside -> node {NODE_UPLINK}:8080 (hostPort), answered by web, which saw "
                  f"{self.seen_from(self.outside, NODE_UPLINK, 8080)} (the outside host's own address)")
        finally:
            server.kill()
            server.wait(timeout=10)
        shaped, unshaped = self.rate_into(self.web, 5211), self.rate_into(self.client, 5212)
        print(f"node -> web over TCP (iperf3): {shaped:.1f} Mbit/s (limit {LIMIT}bit/s); "
              f"node -> client: {unshaped:.0f} Mbit/s (no limit)")

        _say("5. pycni status on the node")
        print(self.pycni("status", "--conf-dir", self.work, "--cache-dir", os.path.join(self.work, "cache")
                         ).stdout.rstrip())

        _say("6. pods removed: DEL through the chain in reverse")
        print(self.run_verb("del", self.web, "web").rstrip())
        print(self.run_verb("del", self.client, "client").rstrip())
        links = [link["ifname"] for link in json.loads(self.in_ns(self.node, "ip", "-j", "link").stdout)]
        tables = self.in_ns(self.node, "nft", "list", "tables").stdout.split()
        print(f"node links left: {', '.join(links)} (the bridge stays, as with the reference plugin); "
              f"pycni nft tables (now without pod entries): {', '.join(t for t in tables if t.startswith('pycni'))}")
        self.devices(self.conflist_path)

    def devices(self, conflist_path: str) -> None:
        """The device plugin offers two spare NICs and /dev/net/tun; the demo plays the kubelet."""
        import signal

        from pycni.kubelet import deviceplugin_pb2 as api
        from pycni.kubelet.standin import FakeKubelet

        _say("7. devices for pods: `pycni device-plugin` offers two spare NICs (pycni.io/nic) and /dev/net/tun")
        for i in (1, 2):
            self.in_ns(self.node, "ip", "link", "add", f"ens{i}", "type", "veth", "peer", "name", f"lan{i}")
            self.in_ns(self.node, "ip", "link", "set", f"lan{i}", "up")
            self.in_ns(self.node, "ip", "link", "set", f"ens{i}", "up")
        self.in_ns(self.node, "ip", "addr", "add", "192.168.100.1/24", "dev", "lan1")
        plugin_dir = os.path.join(self.work, "device-plugins")
        os.makedirs(plugin_dir)
        config = os.path.join(self.work, "devices.json")
        with open(config, "w", encoding="utf-8") as f:
            json.dump({"resources": [{"resourceName": "pycni.io/nic", "type": "netdev",
                                      "selector": {"ifNames": ["ens*"]}},
                                     {"resourceName": "pycni.io/tun", "type": "tun", "count": 4}]}, f)
        kubelet = FakeKubelet(plugin_dir)
        plugin = subprocess.Popen(["ip", "netns", "exec", self.node, sys.executable, "-m", "pycni", "device-plugin",
                                   "--config", config, "--plugin-dir", plugin_dir, "--pod-resources-socket",
                                   os.path.join(self.work, "no-kubelet.sock"), "--state-file",
                                   os.path.join(self.work, "device-plugin.json")], stderr=subprocess.DEVNULL)
        try:
            endpoints = {}
            for _ in range(2):
                request, _options = kubelet.next_registration()
                endpoints[request.resource_name] = request.endpoint
                print(f"registered with the kubelet: {request.resource_name} at {request.endpoint}")
            channel, nic = kubelet.plugin(endpoints["pycni.io/nic"])
            listed = next(iter(nic.ListAndWatch(api.Empty())))
            print("pycni.io/nic devices: " + ", ".join(f"{d.ID} {d.health}" for d in listed.devices))
            chosen = next(d.ID for d in listed.devices if d.health == "Healthy" and d.ID == "ens1")
            given = nic.Allocate(api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=[chosen])])).container_responses[0]
            print(f"kubelet -> Allocate({chosen}): env {dict(given.envs)}, annotation {dict(given.annotations)}")
            pod = self.namespace("nicpod")
            secondary = self._secondary_conflist(conflist_path)
            common = ["--conf", secondary, "--bin-dir", self.bin_dir, "--cache-dir", os.path.join(self.work, "cache"),
                      "--netns", f"/run/netns/{pod}", "--container-id", "nicpod", "--ifname", "net1"]
            print(self.pycni("run", "add", *common, "--device-id", given.annotations["pycni.io/nic"]).stdout.rstrip())
            ping = self.in_ns(self.node, "ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.100.10", check=False)
            print("node -> nicpod over its own NIC (ens1, now net1 in the pod): "
                  f"{ping.stdout.strip().splitlines()[-2] if ping.stdout else 'failed'}")
            print(self.pycni("run", "del", *common).stdout.rstrip())
            back = self.in_ns(self.node, "ip", "-br", "link", "show", "ens1").stdout.split()
            print(f"after DEL, on the node again: {back[0]} {back[1]} (name and state as before)")
            tun_channel, tun = kubelet.plugin(endpoints["pycni.io/tun"])
            spec = tun.Allocate(api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=["tun-0"])])).container_responses[0].devices[0]
            print(f"kubelet -> Allocate(tun-0) on pycni.io/tun: device node {spec.host_path} -> {spec.container_path} "
                  f"({spec.permissions})")
            channel.close()
            tun_channel.close()
        finally:
            plugin.send_signal(signal.SIGTERM)
            code = plugin.wait(timeout=10)
            kubelet.stop()
        print(f"device plugin stopped (SIGTERM): exit {code}, sockets left: "
              f"{sorted(n for n in os.listdir(plugin_dir) if n != 'kubelet.sock') or 'none'}")

    def _secondary_conflist(self, primary_path: str) -> str:
        shipped = os.path.join(os.path.dirname(primary_path), "20-host-device-secondary.conflist")
        with open(shipped, encoding="utf-8") as f:
            conflist = json.load(f)
        conflist["plugins"][0]["dataDir"] = os.path.join(self.work, "host-device")
        conflist["plugins"][0]["ipam"]["dataDir"] = os.path.join(self.work, "ipam")
        path = os.path.join(self.work, "20-host-device-secondary.conflist")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(conflist, f)
        return path

    def _pod_ip(self, pod: str) -> str:
        out = json.loads(self.in_ns(pod, "ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)
        return out[0]["addr_info"][0]["local"]

    def close(self) -> None:
        for name in reversed(self.namespaces):
            _run("ip", "netns", "del", name, check=False)
        shutil.rmtree(self.work, ignore_errors=True)


def run_demo(bin_dir: str, conflist_path: str) -> int:
    if os.geteuid() != 0:
        print("the demo needs root: it creates network namespaces", file=sys.stderr)
        return 2
    demo = Demo(bin_dir, conflist_path)
    try:
        demo.main()
    except Exception as e:  # noqa: BLE001
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    finally:
        demo.close()
        _say("8. cleaned up: every namespace the demo made is gone")
    return 0
