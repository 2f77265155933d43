#!/usr/bin/env python3
"""`pycni device-plugin` measured against a stand-in kubelet (real protos, real unix sockets), in a throwaway
network namespace with real veth "NICs":

    sudo benchmarks/run.sh --device-plugin [--rounds 200]

Allocate latency one at a time (p50, p99) and 50 at once (p50, p95), for a netdev NIC and for an SR-IOV VF
bound to vfio-pci (a `resourceList` pool over a sysfs tree of a PF with 8 VFs: its answer carries the
/dev/vfio nodes and the `_INFO` variable, and it writes the device-info file); health-change-to-stream
latency (a NIC's link set down or up, and a PF's carrier lost or back for its VFs, until the kubelet's
ListAndWatch stream shows it); for a `devices` resource with CDI over a /dev of its own (mknod), Allocate
latency and hot-plug-to-stream latency (a node made or removed until the stream shows it); a SIGHUP
reload until the kubelet sees the added resource registered; the plugin's peak RSS serving all four
resources. Everything it makes is removed at the end.
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

from tests.sysfs_tree import DevTree, FakeSysfs  # noqa: E402

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
        dev = DevTree(pathlib.Path(work) / "dev")
        for i in range(8):
            dev.node(f"ttyUSB{i}")
        config = os.path.join(work, "devices.json")
        resources = {"resources": [{"resourceName": "pycni.io/nic", "type": "netdev",
                                    "selector": {"ifNames": ["ens*"]}},
                                   {"resourceName": "pycni.io/tun", "type": "tun", "count": 64},
                                   {"resourceName": "pycni.io/serial", "type": "devices", "cdi": True,
                                    "groups": [{"paths": [{"path": "/dev/ttyUSB*"}]}]}],
                     "resourceList": [{"resourceName": "dpdk", "resourcePrefix": "pycni.io",
                                       "selectors": {"drivers": ["vfio-pci"], "pfNames": ["pf0"]}}]}
        with open(config, "w") as f:
            json.dump(resources, f)
        kubelet = FakeKubelet(plugin_dir)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, args.python, "-m", "pycni", "device-plugin", "--config",
                                 config, "--plugin-dir", plugin_dir, "--sysfs-root", str(sysfs.root),
                                 "--dev-root", str(dev.root), "--cdi-dir", os.path.join(work, "cdi"),
                                 "--state-file", os.path.join(work, "state.json"),
                                 "--device-info-dir", os.path.join(work, "devinfo")], stderr=subprocess.DEVNULL)
        for _ in range(4):
            kubelet.next_registration()
        channel, stub = kubelet.plugin("pycni-pycni_io_nic.sock")
        vf_channel, vf_stub = kubelet.plugin("pycni-pycni_io_dpdk.sock")
        serial_channel, serial_stub = kubelet.plugin("pycni-pycni_io_serial.sock")
        updates: queue.Queue = queue.Queue()
        vf_updates: queue.Queue = queue.Queue()
        serial_updates: queue.Queue = queue.Queue()

        def read(source, into: queue.Queue) -> None:
            try:
                for response in source.ListAndWatch(api.Empty()):
                    into.put((time.perf_counter(), {d.ID: d.health for d in response.devices}))
            except Exception:  # noqa: BLE001 - the stream ends when the plugin stops
                pass

        for source, into in ((stub, updates), (vf_stub, vf_updates), (serial_stub, serial_updates)):
            threading.Thread(target=read, args=(source, into), daemon=True).start()
            into.get(timeout=10)

        def timed_allocate(source, device_id: str) -> float:
            request = api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=[device_id])])
            start = time.perf_counter()
            source.Allocate(request)
            return time.perf_counter() - start

        def allocate_vf(i: int) -> float:
            return timed_allocate(vf_stub, VFS[i % len(VFS)])

        def allocate(i: int) -> float:
            return timed_allocate(stub, f"ens{i % args.nics}")

        def allocate_serial(i: int) -> float:
            return timed_allocate(serial_stub, f"ttyUSB{i % 8}")

        for i in range(20):  # warm-up
            allocate(i)
        single = [allocate(i) for i in range(args.rounds)]
        for i in range(20):
            allocate_vf(i)
        single_vf = [allocate_vf(i) for i in range(args.rounds)]
        for i in range(20):
            allocate_serial(i)
        single_serial = [allocate_serial(i) for i in range(args.rounds)]
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

        def hot_plug_latency() -> list[float]:
            took = []
            for r in range(args.health_rounds):
                plugged = r % 2 == 0
                while not serial_updates.empty():
                    serial_updates.get()
                start = time.perf_counter()
                dev.node("ttyUSB99") if plugged else dev.remove("ttyUSB99")
                while True:
                    at, devices = serial_updates.get(timeout=10)
                    if ("ttyUSB99" in devices) == plugged:
                        took.append(at - start)
                        break
            return took

        def reload_latency() -> float:
            resources["resources"].append({"resourceName": "pycni.io/kvm", "type": "devices",
                                           "groups": [{"paths": [{"path": "/dev/kvm"}], "count": 4}]})
            with open(config + ".new", "w") as f:
                json.dump(resources, f)
            start = time.perf_counter()
            os.replace(config + ".new", config)  # as a ConfigMap update does
            request, _ = kubelet.next_registration()
            assert request.resource_name == "pycni.io/kvm"
            return time.perf_counter() - start

        hot_plug = hot_plug_latency()
        health = health_latency("ens0", "ens0", updates)
        pf_health = health_latency("xpf0", VFS[0], vf_updates)  # the PF loses its carrier: its VFs follow
        with open(f"/proc/{proc.pid}/status") as f:  # `ip netns exec` execs: the PID is the plugin's
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
        reloaded = reload_latency()
        channel.close()
        vf_channel.close()
        serial_channel.close()
        print(f"Allocate, one at a time ({len(single)}):  p50 {ms(statistics.median(single))}   "
              f"p99 {ms(percentile(single, 99))}")
        print(f"Allocate of a vfio VF, one at a time ({len(single_vf)}):  p50 {ms(statistics.median(single_vf))}   "
              f"p99 {ms(percentile(single_vf, 99))}")
        print(f"Allocate of a `devices` node with CDI, one at a time ({len(single_serial)}):  "
              f"p50 {ms(statistics.median(single_serial))}   p99 {ms(percentile(single_serial, 99))}")
        print(f"Allocate, 50 at once ({len(burst)}):       p50 {ms(statistics.median(burst))}   "
              f"p95 {ms(percentile(burst, 95))}")
        print(f"health change -> ListAndWatch ({len(health)}): p50 {ms(statistics.median(health))}   "
              f"max {ms(max(health))}")
        print(f"PF carrier -> its VFs in ListAndWatch ({len(pf_health)}): p50 {ms(statistics.median(pf_health))}   "
              f"max {ms(max(pf_health))}")
        print(f"hot-plug (mknod/unlink under /dev) -> ListAndWatch ({len(hot_plug)}): "
              f"p50 {ms(statistics.median(hot_plug))}   max {ms(max(hot_plug))}")
        print(f"config file replaced -> the added resource registered: {ms(reloaded)}")
        print(f"device plugin peak RSS (netdev, tun, devices with CDI and SR-IOV resources): {peak / 1024:.1f} MiB")
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
