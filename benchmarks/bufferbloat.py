#!/usr/bin/env python3
"""Latency under load of a shaped pod: pycni's bandwidth plugin against another bin dir (the reference
Go plugins by default), side by side in one run.

    sudo benchmarks/run.sh --bufferbloat [--runs 3] [--rates 8M,100M] [--other /usr/lib/cni]

Each implementation gets a node namespace and one pod added through libcni with the shipped k8s chain
(bridge + host-local + portmap + bandwidth), shaped at RATE each way with a 1 Mbit burst. For each rate,
direction (egress: the pod uploads; ingress: `iperf3 -R`) and load (one TCP flow, four TCP flows, UDP at
twice the rate), the pod pings the node's bridge address while iperf3 runs: reported are the idle RTT,
the added RTT under load (median of 20 pings, then the median over runs), the delivered rate as a
fraction of the limit, and pings lost. Beside the pings, the pod makes 1400-byte requests over TCP to a
server on the node that answers each with 1400 bytes (an RPC, too large for the interactive class): the
added round trip of those is what an application in a loaded pod sees. Implementations alternate
measurement by measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
from bench import REPO, Impl, sh  # noqa: E402

BURST_BITS = 1_000_000
PINGS = 20
RPC_BYTES = 1400
RPC_PORT = 5398

# the node's side of the request/response probe: each request of RPC_BYTES answered with as many
RPC_SERVER = f"""
import socket, sys
server = socket.create_server((sys.argv[1], {RPC_PORT}))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while True:
            got = b""
            while len(got) < {RPC_BYTES}:
                chunk = conn.recv({RPC_BYTES} - len(got))
                if not chunk:
                    break
                got += chunk
            if len(got) < {RPC_BYTES}:
                break
            conn.sendall(b"r" * {RPC_BYTES})
"""
# the pod's side: `count` requests 0.2 s apart, each on a connection of its own (a port of its own, so a
# flow queue of its own: one request in sixteen shares a queue with a given bulk flow, and the percentiles
# show it); their round trips in ms from request to whole answer, as JSON
RPC_CLIENT = f"""
import json, socket, sys, time
rtts = []
for _ in range(int(sys.argv[2])):
    with socket.create_connection((sys.argv[1], {RPC_PORT}), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        conn.sendall(b"q" * {RPC_BYTES})
        got = 0
        while got < {RPC_BYTES}:
            got += len(conn.recv({RPC_BYTES} - got))
        rtts.append((time.perf_counter() - started) * 1000)
    time.sleep(0.2)
print(json.dumps(rtts))
"""


def parse_rate(text: str) -> int:
    units = {"k": 1_000, "M": 1_000_000, "G": 1_000_000_000}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


class ShapedPod:
    def __init__(self, impl: Impl, rate: int, subnet_gateway: str) -> None:
        self.impl, self.gateway = impl, subnet_gateway
        self.netns = impl.pod()
        self.name = os.path.basename(self.netns)
        caps = {"bandwidth": {"ingressRate": rate, "ingressBurst": BURST_BITS,
                              "egressRate": rate, "egressBurst": BURST_BITS}}
        self.cid = uuid.uuid4().hex
        impl.chain("add", self.cid, self.netns, caps)

    def rpc(self, count: int) -> subprocess.Popen:
        """`count` request/response round trips, started now; `finish_rpc` collects them."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, "-c", RPC_CLIENT, self.gateway,
                                 str(count)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    @staticmethod
    def finish_rpc(client: subprocess.Popen) -> list[float]:
        """The round trips (ms) the client measured."""
        out, _ = client.communicate(timeout=60)
        return json.loads(out) if client.returncode == 0 else []

    def ping(self, count: int) -> tuple[list[float], int]:
        out = sh("ip", "netns", "exec", self.name, "ping", "-c", str(count), "-i", "0.2", "-W", "2", self.gateway,
                 check=False).stdout
        rtts = [float(x) for x in re.findall(r"time=([\d.]+)", out)]
        return rtts, count - len(rtts)

    def loaded(self, reverse: bool, flows: int, udp_bits: int = 0) -> tuple[float, int, float, list[float]]:
        """(median ping RTT ms while loaded, pings lost, delivered bits/s, request/response round trips ms)."""
        server = subprocess.Popen(["ip", "netns", "exec", self.impl.node, "iperf3", "-s", "-1", "-B", self.gateway,
                                   "-p", "5399"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(50):
                if "LISTEN" in sh("ip", "netns", "exec", self.impl.node, "ss", "-ltn", "sport = :5399").stdout:
                    break
                time.sleep(0.1)
            seconds = PINGS * 0.2 + 3
            argv = ["ip", "netns", "exec", self.name, "iperf3", "-c", self.gateway, "-p", "5399", "-t", str(seconds),
                    "-P", str(flows), "-J"] + (["-R"] if reverse else []) + (["-u", "-b", str(udp_bits)] if udp_bits
                                                                              else [])
            client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(1.5)  # past slow start: the queue is as full as the shaper lets it get
            rpc = self.rpc(PINGS)
            rtts, lost = self.ping(PINGS)
            rpc_ms = self.finish_rpc(rpc)
            out, _ = client.communicate(timeout=seconds + 30)
        finally:
            server.kill()
            server.wait(timeout=10)
        end = json.loads(out)["end"]
        if udp_bits:
            delivered = end["sum"]["bits_per_second"] * (1 - end["sum"]["lost_percent"] / 100)
        else:
            delivered = end["sum_received"]["bits_per_second"]
        return (statistics.median(rtts) if rtts else float("nan")), lost, delivered, rpc_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pycni", default=os.path.join(REPO, ".bench-env", "bin"), help="pycni's bin dir")
    parser.add_argument("--other", default="/usr/lib/cni", help="the bin dir to compare with")
    parser.add_argument("--driver", default=os.path.join(REPO, "tests", "libcni", "cnidriver"))
    parser.add_argument("--rates", default="8M,100M", help="comma-separated limits, bits/s (k, M, G suffixes)")
    parser.add_argument("--runs", type=int, default=3, help="measurements of each case per implementation")
    args = parser.parse_args()
    bench.DRIVER = args.driver
    work = tempfile.mkdtemp(prefix="pycni-bloat-")
    tag = uuid.uuid4().hex[:6]
    impls = [Impl("pycni", args.pycni, work, "10.231.0.0/24", tag), Impl("other", args.other, work, "10.232.0.0/24",
                                                                         tag)]
    gateways = {"pycni": "10.231.0.1", "other": "10.232.0.1"}
    loads = [("egress", False, 1, 0), ("egress", False, 4, 0), ("egress", False, 1, 2),
             ("ingress", True, 1, 0), ("ingress", True, 4, 0), ("ingress", True, 1, 2)]
    print(f"pycni: {args.pycni}   other: {args.other}   runs: {args.runs}   pings per run: {PINGS}   "
          f"(medians; added = loaded RTT - idle RTT)")
    servers: list[subprocess.Popen] = []  # the request/response servers, one per node
    try:
        for rate_text in args.rates.split(","):
            rate = parse_rate(rate_text)
            pods = {impl.label: ShapedPod(impl, rate, gateways[impl.label]) for impl in impls}
            if not servers:  # the node's bridge address exists once its first pod is added
                for impl in impls:
                    server = subprocess.Popen(["ip", "netns", "exec", impl.node, sys.executable, "-c", RPC_SERVER,
                                               gateways[impl.label]], stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True)
                    servers.append(server)
                    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            idle = {label: statistics.median(pod.ping(PINGS)[0]) for label, pod in pods.items()}
            idle_rpc = {label: statistics.median(pod.finish_rpc(pod.rpc(PINGS))) for label, pod in pods.items()}
            print(f"\n{rate / 1e6:g} Mbit/s each way, burst {BURST_BITS / 1e6:g} Mbit; idle RTT "
                  + ", ".join(f"{label} {ms:.3f} ms" for label, ms in idle.items()) + f"; idle {RPC_BYTES}-byte "
                  "request/response " + ", ".join(f"{label} {ms:.3f} ms" for label, ms in idle_rpc.items()))
            for direction, reverse, flows, udp_factor in loads:
                samples: dict[str, list[tuple[float, int, float, list[float]]]] = {label: [] for label in pods}
                for _ in range(args.runs):
                    for label, pod in pods.items():
                        samples[label].append(pod.loaded(reverse, flows, udp_factor * rate))
                load = f"UDP at {udp_factor}x" if udp_factor else f"{flows} TCP flow{'s' if flows > 1 else ''}"
                cells = []
                for label, runs in samples.items():
                    added = statistics.median(r[0] for r in runs) - idle[label]
                    delivered = statistics.median(r[2] for r in runs) / rate
                    lost = sum(r[1] for r in runs)
                    rpcs = sorted(rtt for r in runs for rtt in r[3])
                    rpc_added = statistics.median(rpcs) - idle_rpc[label] if rpcs else float("nan")
                    rpc_p90 = rpcs[int(len(rpcs) * 0.9)] - idle_rpc[label] if rpcs else float("nan")
                    cells.append(f"{label} ping {added:+7.2f} ms  rpc {rpc_added:+7.2f} (p90 {rpc_p90:+7.2f}) ms  "
                                 f"{delivered:4.2f}x rate  {lost:2d} lost")
                print(f"  {direction:7s} {load:12s} " + "   ".join(cells))
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)
        for impl in impls:
            impl.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
