#!/usr/bin/env python3
"""`pycni device-plugin` measured against a stand-in kubelet (real protos, real unix sockets), in a throwaway
network namespace with real veth "NICs":

    sudo benchmarks/run.sh --device-plugin [--rounds 200]

Allocate latency one at a time (p50, p99) and 50 at once (p50, p95); health-change-to-stream latency
(a link set down or up, until the kubelet's ListAndWatch stream shows it); the plugin's peak RSS serving
both resources (netdev and tun). Everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "src"))

from pycni.kubelet import deviceplugin_pb2 as api  # noqa: E402
from pycni.kubelet.standin import FakeKubelet  # noqa: E402


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="Allocate calls one at a time")
    parser.add_argument("--health-rounds", type=int, default=20)
    parser.add_argument("--nics", type=int, default=8)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    ns = f"pycni-devbench-{uuid.uuid4().hex[:6]}"
    work = tempfile.mkdtemp(prefix="pycni-devbench-")
    plugin_dir = os.path.join(work, "device-plugins")
    os.makedirs(plugin_dir)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    kubelet = proc = None
    try:
        def sh(*argv: str) -> None:
            subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)

        for i in range(args.nics):
            sh("ip", "link", "add", f"ens{i}", "type", "veth", "peer", "name", f"xens{i}")
            sh("ip", "link", "set", f"xens{i}", "up")
            sh("ip", "link", "set", f"ens{i}", "up")
        config = os.path.join(work, "devices.json")
        with open(config, "w") as f:
            json.dump({"resources": [{"resourceName": "pycni.io/nic", "type": "netdev",
                                      "selector": {"ifNames": ["ens*"]}},
                                     {"resourceName": "pycni.io/tun", "type": "tun", "count": 64}]}, f)
        kubelet = FakeKubelet(plugin_dir)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, args.python, "-m", "pycni", "device-plugin", "--config",
                                 config, "--plugin-dir", plugin_dir], stderr=subprocess.DEVNULL)
        for _ in range(2):
            kubelet.next_registration()
        channel, stub = kubelet.plugin("pycni-pycni_io_nic.sock")
        updates: queue.Queue = queue.Queue()

        def read() -> None:
            try:
                for response in stub.ListAndWatch(api.Empty()):
                    updates.put((time.perf_counter(), {d.ID: d.health for d in response.devices}))
            except Exception:  # noqa: BLE001 - the stream ends when the plugin stops
                pass

        threading.Thread(target=read, daemon=True).start()
        updates.get(timeout=10)

        def allocate(i: int) -> float:
            request = api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=[f"ens{i % args.nics}"])])
            start = time.perf_counter()
            stub.Allocate(request)
            return time.perf_counter() - start

        for i in range(20):  # warm-up
            allocate(i)
        single = [allocate(i) for i in range(args.rounds)]
        burst: list[float] = []
        with ThreadPoolExecutor(50) as pool:
            for _ in range(max(1, args.rounds // 50)):
                burst.extend(pool.map(allocate, range(50)))
        health = []
        for r in range(args.health_rounds):
            state = "down" if r % 2 == 0 else "up"
            wanted = "Unhealthy" if state == "down" else "Healthy"
            while not updates.empty():
                updates.get()
            start = time.perf_counter()
            sh("ip", "link", "set", "ens0", state)
            while True:
                at, devices = updates.get(timeout=10)
                if devices.get("ens0") == wanted:
                    health.append(at - start)
                    break
        with open(f"/proc/{proc.pid}/status") as f:  # `ip netns exec` execs: the PID is the plugin's
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
        channel.close()
        print(f"Allocate, one at a time ({len(single)}):  p50 {ms(statistics.median(single))}   "
              f"p99 {ms(percentile(single, 99))}")
        print(f"Allocate, 50 at once ({len(burst)}):       p50 {ms(statistics.median(burst))}   "
              f"p95 {ms(percentile(burst, 95))}")
        print(f"health change -> ListAndWatch ({len(health)}): p50 {ms(statistics.median(health))}   "
              f"max {ms(max(health))}")
        print(f"device plugin peak RSS (netdev + tun resources): {peak / 1024:.1f} MiB")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        if kubelet is not None:
            kubelet.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["rm", "-rf", work], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
