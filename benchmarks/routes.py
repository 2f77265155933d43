"""The routes agent at scale and on the wire (`benchmarks/run.sh --routes`):

- a stand-in API server with 1,000 nodes (half neighbours on the uplink's subnet, half behind a router:
  VXLAN), the agent on one of them: its first full sync (from its first list to every entry in place, and
  from its process start), its RSS once synced;
- a node's update to its route in place (the address of one neighbour changed on the API; the route seen
  by `ip monitor`), median of N, and how many kernel entries each update touched;
- pod-to-pod TCP throughput across nodes with iperf3 (namespaces of the tests' three-node cluster), direct
  and over VXLAN, against node-to-node on the same underlay.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))
sys.path.insert(0, REPO)

from tests.apiserver import StandinAPI, node_object  # noqa: E402
from tests.cluster import Cluster  # noqa: E402
from tests.helpers import Sandbox, eventually  # noqa: E402


def peers(count: int) -> list[dict]:
    """`count` other nodes: even ones neighbours on 10.200.0.0/16, odd ones behind the router."""
    nodes = []
    for i in range(count):
        pod_cidr = f"10.{128 + i // 256}.{i % 256}.0/24"
        address = f"10.200.{i // 250}.{i % 250 + 2}" if i % 2 == 0 else f"100.64.{i // 250}.{i % 250 + 2}"
        nodes.append(node_object(f"node-{i:04d}", [pod_cidr], [address], {"pycni.io/vtep-mac": _mac(i)}))
    return nodes


def _mac(i: int) -> str:
    return f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"


def scale(count: int, updates: int, tmp: Path) -> dict:
    tmp.mkdir(parents=True)
    box = Sandbox("")
    agent = None
    try:
        lan = box.namespace("lan")
        node = box.namespace("node")
        lan.run("ip", "link", "add", "seg", "type", "bridge")
        lan.run("ip", "link", "set", "seg", "up")
        lan.run("ip", "addr", "add", "10.200.255.1/16", "dev", "seg")
        node.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "port", "netns", lan.name)
        lan.run("ip", "link", "set", "port", "master", "seg", "up")
        node.run("ip", "addr", "add", "10.200.255.2/16", "dev", "eth0")
        node.run("ip", "link", "set", "eth0", "up")
        node.run("ip", "route", "add", "default", "via", "10.200.255.1")
        api = StandinAPI(lan.name, "10.200.255.1", 6443, str(tmp))
        api.put(node_object("self", ["10.127.0.0/24"], ["10.200.255.2"]))
        for obj in peers(count - 1):
            api.put(obj)
        api.start()
        in_a_pod = api.service_account(str(tmp / "serviceaccount"))  # as the DaemonSet runs it
        log = tmp / "agent.log"
        started = time.monotonic()
        with open(log, "w") as out:
            agent = node.popen(sys.executable, "-m", "pycni", "routes", "--node-name", "self", "--service-account",
                               str(tmp / "serviceaccount"), "--state-file", str(tmp / "routes.json"),
                               "--cache-file", "", "--resync", "600", stdout=out, stderr=subprocess.STDOUT,
                               env={**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, **in_a_pod})
        wanted = count - 1

        def synced() -> bool:
            out = node.run("ip", "route", "show", "proto", "114").stdout
            return out.count("\n") >= wanted

        assert eventually(synced, 120), log.read_text()[-2000:]
        since_start = time.monotonic() - started
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{agent.pid}/status").read_text()).group(1))
        assert eventually(lambda: _sync_seconds(log.read_text()) is not None, 10), log.read_text()[-2000:]
        sync = _sync_seconds(log.read_text())
        monitor = node.popen("ip", "monitor", "route", "neigh", stdout=subprocess.PIPE, text=True)
        lines: list[tuple[float, str]] = []
        threading.Thread(target=lambda: [lines.append((time.monotonic(), line)) for line in monitor.stdout],
                         daemon=True).start()
        time.sleep(0.5)
        latencies, touched = [], []
        for n in range(updates):
            i = 2 * (n % (wanted // 2))
            obj = json.loads(json.dumps(api.nodes[f"node-{i:04d}"]))
            new_address = f"10.200.{250 + n // 250}.{n % 250 + 2}"
            obj["status"]["addresses"][0]["address"] = new_address
            seen_before = len(lines)
            put_at = time.monotonic()
            api.put(obj)
            assert eventually(lambda a=new_address, s=seen_before: any(a in line for _, line in lines[s:]), 10)
            arrived = next(t for t, line in lines[seen_before:] if new_address in line)
            latencies.append(arrived - put_at)
            time.sleep(0.2)  # let any further entry of this update show
            touched.append(sum("proto kernel" not in line for _, line in lines[seen_before:]))  # not the kernel's own
        monitor.terminate()
        api.stop()
        return {"nodes": count, "first_sync_from_list_s": sync,
                "synced_after_process_start_s": round(since_start, 3), "rss_mib": round(rss_kib / 1024, 1),
                "update_to_route_ms_median": round(statistics.median(latencies) * 1000, 1),
                "update_to_route_ms_max": round(max(latencies) * 1000, 1),
                "entries_touched_per_update": sorted(set(touched))}
    finally:
        if agent is not None:
            agent.kill()
            agent.wait()
        box.close()


def _sync_seconds(log: str) -> float | None:
    match = re.search(r"synced (\d+) entries in ([\d.]+) s after the first list", log)
    return float(match.group(2)) if match else None


def throughput(bin_dir: str, seconds: int, rounds: int, tmp: Path) -> dict:
    """iperf3 between pods across nodes, and between the nodes themselves, on the tests' cluster: the
    median of `rounds` interleaved runs of each."""
    driver = os.path.join(REPO, "tests", "libcni", "cnidriver")
    tmp.mkdir(parents=True)
    box = Sandbox(bin_dir)
    cluster = Cluster(box, bin_dir, driver, tmp)
    try:
        for name in cluster.nodes:
            cluster.start_agent(name)
        assert cluster.synced(60)
        pods = {name: cluster.attach(name, "p") for name in "abc"}

        def rate(server_ns, client_ns, address: str) -> float:
            server = server_ns.popen("iperf3", "-s", "-1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            out = client_ns.run("iperf3", "-c", address, "-t", str(seconds), "-J", timeout=seconds + 30).stdout
            server.wait(timeout=30)
            return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9

        a, b, c = (cluster.nodes[n] for n in "abc")
        pairs = {"node_to_node_direct": (b.ns, a.ns, "192.0.2.12"),
                 "pod_to_pod_direct": (b.pods["p"][0], a.pods["p"][0], pods["b"][0]),
                 "node_to_node_routed": (c.ns, a.ns, "203.0.113.13"),
                 "pod_to_pod_vxlan": (c.pods["p"][0], a.pods["p"][0], pods["c"][0])}
        runs: dict[str, list[float]] = {name: [] for name in pairs}
        for _ in range(rounds):  # interleaved, so a slow moment of the machine falls on both sides of a ratio
            for name, pair in pairs.items():
                runs[name].append(rate(*pair))
        medians = {name: statistics.median(values) for name, values in runs.items()}
        return {**{f"{name}_gbps": round(value, 2) for name, value in medians.items()},
                "direct_ratio": round(medians["pod_to_pod_direct"] / medians["node_to_node_direct"], 2),
                "vxlan_ratio": round(medians["pod_to_pod_vxlan"] / medians["node_to_node_routed"], 2),
                "runs_gbps": {name: [round(v, 2) for v in values] for name, values in runs.items()}}
    finally:
        cluster.close()
        box.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=os.path.join(REPO, ".bench-env", "bin"))
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--iperf-seconds", type=int, default=5)
    parser.add_argument("--iperf-rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"scale": scale(args.nodes, args.updates, Path(tmp) / "scale"),
                   "throughput": throughput(args.bin_dir, args.iperf_seconds, args.iperf_rounds,
                                                Path(tmp) / "wire")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
