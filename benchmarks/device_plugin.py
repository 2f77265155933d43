#!/usr/bin/env python3
"""`pycni device-plugin` measured against a stand-in kubelet (real protos, real unix sockets), in a throwaway
network namespace with real veth "NICs":

    sudo benchmarks/run.sh --device-plugin [--rounds 200]

Allocate latency one at a time (p50, p99) and 50 at once (p50, p95), for a netdev NIC and for an SR-IOV VF
bound to vfio-pci (a `resourceList` pool over a sysfs tree of a PF with 8 VFs: its answer carries the
/dev/vfio nodes and the `_INFO` variable, and it writes the device-info file); health-change-to-stream
latency (a NIC's link set down or up, and a PF's carrier lost or back for its VFs, until the kubelet's
ListAndWatch stream shows it); the plugin's peak RSS serving all three resources. Everything it makes is
removed at the end.
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

from tests.sysfs_tree import FakeSysfs  # noqa: E402

from pycni.kubelet import deviceplugin_pb2 as api  # noqa: E402
from pycni.kubelet.standin import FakeKubelet  # noqa: E402

PF = "0000:03:00.0"
VFS = [f"0000:03:01.{i}" for i in range(8)]


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
        sh("ip", "link", "add", "pf0", "type", "veth", "peer", "name", "xpf0")
        sh("ip", "link", "set", "xpf0", "up")
        sh("ip", "link", "set", "pf0", "up")
        import pathlib

        sysfs = FakeSysfs(pathlib.Path(work) / "sys")
        sysfs.pci(PF, driver="ice", netdevs=["pf0"])
        for i, address in enumerate(VFS):
            sysfs.pci(address, device="1889", driver="vfio-pci", pf=PF, iommu_group=str(100 + i))
        config = os.path.join(work, "devices.json")
        with open(config, "w") as f:
            json.dump({"resources": [{"resourceName": "pycni.io/nic", "type": "netdev",
                                      "selector": {"ifNames": ["ens*"]}},
                                     {"resourceName": "pycni.io/tun", "type": "tun", "count": 64}],
                       "resourceList": [{"resourceName": "dpdk", "resourcePrefix": "pycni.io",
                                         "selectors": {"drivers": ["vfio-pci"], "pfNames": ["pf0"]}}]}, f)
        kubelet = FakeKubelet(plugin_dir)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, args.python, "-m", "pycni", "device-plugin", "--config",
                                 config, "--plugin-dir", plugin_dir, "--sysfs-root", str(sysfs.root),
                                 "--state-file", os.path.join(work, "state.json"),
                                 "--device-info-dir", os.path.join(work, "devinfo")], stderr=subprocess.DEVNULL)
        for _ in range(3):
            kubelet.next_registration()
        channel, stub = kubelet.plugin("pycni-pycni_io_nic.sock")
        vf_channel, vf_stub = kubelet.plugin("pycni-pycni_io_dpdk.sock")
        updates: queue.Queue = queue.Queue()
        vf_updates: queue.Queue = queue.Queue()

        def read(source, into: queue.Queue) -> None:
            try:
                for response in source.ListAndWatch(api.Empty()):
                    into.put((time.perf_counter(), {d.ID: d.health for d in response.devices}))
            except Exception:  # noqa: BLE001 - the stream ends when the plugin stops
                pass

        for source, into in ((stub, updates), (vf_stub, vf_updates)):
            threading.Thread(target=read, args=(source, into), daemon=True).start()
            into.get(timeout=10)

        def allocate_vf(i: int) -> float:
            request = api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=[VFS[i % len(VFS)]])])
            start = time.perf_counter()
            vf_stub.Allocate(request)
            return time.perf_counter() - start

        def allocate(i: int) -> float:
            request = api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=[f"ens{i % args.nics}"])])
            start = time.perf_counter()
            stub.Allocate(request)
            return time.perf_counter() - start

        for i in range(20):  # warm-up
            allocate(i)
        single = [allocate(i) for i in range(args.rounds)]
        for i in range(20):
            allocate_vf(i)
        single_vf = [allocate_vf(i) for i in range(args.rounds)]
        burst: list[float] = []
        with ThreadPoolExecutor(50) as pool:
            for _ in range(max(1, args.rounds // 50)):
                burst.extend(pool.map(allocate, range(50)))

        def health_latency(link: str, device: str, into: queue.Queue) -> list[float]:
            took = []
            for r in range(args.health_rounds):
                state = "down" if r % 2 == 0 else "up"
                wanted = "Unhealthy" if state == "down" else "Healthy"
                while not into.empty():
                    into.get()
                start = time.perf_counter()
                sh("ip", "link", "set", link, state)
                while True:
                    at, devices = into.get(timeout=10)
                    if devices.get(device) == wanted:
                        took.append(at - start)
                        break
            return took

        health = health_latency("ens0", "ens0", updates)
        pf_health = health_latency("xpf0", VFS[0], vf_updates)  # the PF loses its carrier: its VFs follow
        with open(f"/proc/{proc.pid}/status") as f:  # `ip netns exec` execs: the PID is the plugin's
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
        channel.close()
        vf_channel.close()
        print(f"Allocate, one at a time ({len(single)}):  p50 {ms(statistics.median(single))}   "
              f"p99 {ms(percentile(single, 99))}")
        print(f"Allocate of a vfio VF, one at a time ({len(single_vf)}):  p50 {ms(statistics.median(single_vf))}   "
              f"p99 {ms(percentile(single_vf, 99))}")
        print(f"Allocate, 50 at once ({len(burst)}):       p50 {ms(statistics.median(burst))}   "
              f"p95 {ms(percentile(burst, 95))}")
        print(f"health change -> ListAndWatch ({len(health)}): p50 {ms(statistics.median(health))}   "
              f"max {ms(max(health))}")
        print(f"PF carrier -> its VFs in ListAndWatch ({len(pf_health)}): p50 {ms(statistics.median(pf_health))}   "
              f"max {ms(max(pf_health))}")
        print(f"device plugin peak RSS (netdev, tun and SR-IOV resources): {peak / 1024:.1f} MiB")
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
