#!/usr/bin/env python3
"""`pycni dra` (pycni's resources as the DRA driver pycni.io) measured in a throwaway network namespace with
real veth "NICs", against a stand-in API server (HTTPS, the real ResourceSlice and ResourceClaim JSON) and a
stand-in kubelet (plugin registration and the DRA gRPC API over real unix sockets):

    sudo benchmarks/run.sh --dra [--nics 100] [--rounds 200] [--carrier-rounds 20]

- NodePrepareResources for one claim of one NIC, as the kubelet calls it (the claim read from the API server,
  its CDI spec and the checkpoint written): median and p95; NodeUnprepareResources likewise;
- a NIC's carrier lost (its veth peer set down) until the new ResourceSlice generation is written on the
  API server (the stand-in's own time of the write): median and max; and back;
- the driver's RSS (and peak) with every NIC published.
Everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "src"))

from tests.apiserver import StandinAPI, node_object  # noqa: E402
from tests.dra import Kubelet, claim, result  # noqa: E402

DRIVER = "pycni.io"
NODE = "node-a"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


def status_kib(pid: int, field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nics", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=200, help="claims prepared and unprepared, one at a time")
    parser.add_argument("--carrier-rounds", type=int, default=20)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--malloc-arenas", type=int, default=0, help="MALLOC_ARENA_MAX for the driver (0: unset)")
    args = parser.parse_args()
    ns = f"pycni-drabench-{uuid.uuid4().hex[:6]}"
    work = tempfile.mkdtemp(prefix="pycni-drabench-")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    api = proc = None
    try:
        def sh(*argv: str) -> None:
            subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)

        sh("ip", "link", "set", "lo", "up")
        batch = "".join(f"link add nic{i} type veth peer name xnic{i}\nlink set xnic{i} up\nlink set nic{i} up\n"
                        for i in range(args.nics))
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch.encode(), check=True)
        api = StandinAPI(ns, "127.0.0.1", 16450, work)
        api.put(node_object(NODE, [], ["192.0.2.10"]))
        api.start()
        config = os.path.join(work, "devices.json")
        Path(config).write_text('{"resources": [{"resourceName": "pycni.io/nic", "type": "netdev", '
                                '"selector": {"ifNames": ["nic*"]}}]}')
        dirs = {name: os.path.join(work, name) for name in ("plugins", "registry", "cdi")}
        account = os.path.join(work, "serviceaccount")
        in_a_pod = api.service_account(account)  # as the DaemonSet runs it
        proc = subprocess.Popen(["ip", "netns", "exec", ns, args.python, "-m", "pycni", "dra", "--config", config,
                                 "--node-name", NODE, "--service-account", account,
                                 "--plugin-dir", dirs["plugins"], "--registry-dir", dirs["registry"],
                                 "--cdi-dir", dirs["cdi"], "--pod-resources-socket", ""],
                                stderr=open(os.path.join(work, "dra.log"), "w"),
                                env={**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, **in_a_pod,
                                     **({"MALLOC_ARENA_MAX": str(args.malloc_arenas)} if args.malloc_arenas else {})})
        started = time.monotonic()
        while len(api.pool(DRIVER, NODE)[1]) != args.nics:
            if time.monotonic() - started > 60 or proc.poll() is not None:
                raise SystemExit(f"the driver published no pool of {args.nics} NICs:\n"
                                 + Path(work, "dra.log").read_text())
            time.sleep(0.01)
        print(f"{args.nics} NICs published {time.monotonic() - started:.2f} s after the driver's start; RSS "
              f"{status_kib(proc.pid, 'VmRSS') / 1024:.1f} MiB")
        kubelet = Kubelet(Path(dirs["registry"]), DRIVER)
        endpoint = kubelet.register().endpoint

        prepare, unprepare = [], []
        for i in range(args.rounds):
            uid = str(uuid.uuid4())
            api.put_claim(claim(f"c{i}", uid, [result("nic", DRIVER, f"nic-nic{i % args.nics}", pool=NODE)]))
            t0 = time.perf_counter()
            answer = kubelet.call(endpoint, "Prepare", [(f"c{i}", uid)])[uid]
            t1 = time.perf_counter()
            assert answer.error == "" and len(answer.devices) == 1, answer
            gone = kubelet.call(endpoint, "Unprepare", [(f"c{i}", uid)])[uid]
            t2 = time.perf_counter()
            assert gone.error == "", gone
            prepare.append(t1 - t0)
            unprepare.append(t2 - t1)
        print(f"NodePrepareResources, one NIC claim ({args.rounds}): median {ms(statistics.median(prepare))}, "
              f"p95 {ms(percentile(prepare, 95))}")
        print(f"NodeUnprepareResources ({args.rounds}):               median {ms(statistics.median(unprepare))}, "
              f"p95 {ms(percentile(unprepare, 95))}")

        lost, back = [], []
        for i in range(args.carrier_rounds):
            name = f"nic-nic{i % args.nics}"
            for state, carrier, samples in (("down", False, lost), ("up", True, back)):
                t0 = time.monotonic()
                sh("ip", "link", "set", f"xnic{i % args.nics}", state)
                deadline = t0 + 10
                written = None
                while written is None and time.monotonic() < deadline:
                    with api.lock:
                        for at, verb, _, body in api.slice_writes:
                            if at >= t0 and verb != "delete" and any(
                                    d["name"] == name and d["attributes"]["carrier"]["bool"] is carrier
                                    for d in body["spec"]["devices"]):
                                written = at
                                break
                    time.sleep(0.002)
                if written is None:
                    raise SystemExit(f"no new ResourceSlice generation for {name} carrier {state} within 10 s")
                samples.append(written - t0)
        print(f"carrier lost -> new ResourceSlice generation ({args.carrier_rounds}): median "
              f"{ms(statistics.median(lost))}, max {ms(max(lost))}")
        print(f"carrier back -> new ResourceSlice generation ({args.carrier_rounds}): median "
              f"{ms(statistics.median(back))}, max {ms(max(back))}")
        print(f"the driver with {args.nics} NICs: RSS {status_kib(proc.pid, 'VmRSS') / 1024:.1f} MiB, "
              f"peak {status_kib(proc.pid, 'VmHWM') / 1024:.1f} MiB")
        print(f"pool generation at the end: {api.pool(DRIVER, NODE)[0]}")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if api is not None:
            api.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
