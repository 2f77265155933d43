#!/usr/bin/env python3
"""Where one more pod's chain ADD (or DEL) spends its time on a node that already has pods: the shipped k8s
chain (the rendered conflist: bridge with host-local, portmap, bandwidth) run in-process, as the service's
workers run it (warm imports, no process start, no libcni), in a throwaway node namespace, each pod with a
hostPort and a rate. Per plugin, and the time spent waiting for the kernel on netlink and in libnftables:

    sudo benchmarks/run.sh --breakdown [--pods 500] [--measure 20] [--verb ADD|DEL]

Everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

# pycni as installed in .bench-env (run.sh installs it), the same installation as the launchers in CNI_PATH:
# then bridge runs its host-local in-process, as the service does
from pycni import plugins
from pycni.host import netns, nft, rtnl
from pycni.node.install import render_conflist
from pycni.protocol import skel
from pycni.services.cni import server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Timed:
    """Adds the time spent in a method to a total while the benchmark measures."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.on = False

    def wrap(self, owner: Any, method: str, what: str) -> None:
        original: Callable[..., Any] = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if self.on:
                    self.totals[what] = self.totals.get(what, 0.0) + time.perf_counter() - started

        setattr(owner, method, timed)


def capabilities(i: int) -> dict[str, Any]:
    return {"portMappings": [{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 1_000_000, "egressRate": 10_000_000,
                          "egressBurst": 1_000_000}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=500, help="pods on the node before measuring")
    parser.add_argument("--measure", type=int, default=20, help="pods added (or deleted) one at a time, measured")
    parser.add_argument("--verb", choices=("ADD", "DEL"), default="ADD")
    parser.add_argument("--bin-dir", default=os.path.join(REPO, ".bench-env", "bin"), help="CNI_PATH")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    node = f"pycni-breakdown-{tag}"
    work = tempfile.mkdtemp(prefix="pycni-breakdown-")
    with open(os.path.join(REPO, "conf", "10-k8s-pod-network.conflist")) as f:
        conflist = json.loads(render_conflist(f.read(), ["10.200.0.0/16"]))
    conflist["plugins"][0]["ipam"]["dataDir"] = os.path.join(work, "ipam")
    pods: list[str] = []
    timed = Timed()
    timed.wrap(rtnl.Channel, "exchange", "netlink")
    binding = nft._binding()  # libnftables' Python binding, found as pycni finds it
    timed.wrap(binding.Nftables, "json_cmd", "nftables")
    timed.wrap(binding.Nftables, "cmd", "nftables")

    def chain(verb: str, i: int, fd: int, path: str, added: dict[str, Any] | None = None) -> tuple[dict, dict]:
        env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": f"c{i}", "CNI_NETNS": path, "CNI_IFNAME": "eth0",
               "CNI_PATH": args.bin_dir}
        previous, seconds = added, {}
        order = conflist["plugins"] if verb == "ADD" else list(reversed(conflist["plugins"]))
        for plugin in order:
            config = {**plugin, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}
            wanted = {k: v for k, v in capabilities(i).items() if plugin.get("capabilities", {}).get(k)}
            if wanted:
                config["runtimeConfig"] = wanted
            if previous:
                config["prevResult"] = previous
            started = time.perf_counter()
            code, out = skel.run(plugins.load(plugin["type"]), env, json.dumps(config).encode(), netns_fd=fd)
            seconds[plugin["type"]] = time.perf_counter() - started
            if code:
                raise SystemExit(f"{plugin['type']} {verb}: {out!r}")
            if verb == "ADD":
                previous = json.loads(out)
        return seconds, previous or {}

    def pod(i: int) -> tuple[int, str]:
        name = f"{node}-p{i}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        pods.append(name)
        return os.open(f"/run/netns/{name}", os.O_RDONLY), f"/run/netns/{name}"

    subprocess.run(["ip", "netns", "add", node], check=True)
    try:
        server.preload()
        netns.setns(os.open(f"/run/netns/{node}", os.O_RDONLY))  # this process is the node's service now
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        started = time.monotonic()
        for i in range(args.pods):
            fd, path = pod(i)
            chain("ADD", i, fd, path)
            os.close(fd)
        print(f"{args.pods} pods added in {time.monotonic() - started:.0f} s; measuring {args.measure} {args.verb}s")
        per_plugin: dict[str, list[float]] = {}
        kernel: dict[str, list[float]] = {"netlink": [], "nftables": []}
        totals = []
        for i in range(args.pods, args.pods + args.measure):
            fd, path = pod(i)
            added = chain("ADD", i, fd, path)[1] if args.verb == "DEL" else None
            timed.totals, timed.on = {}, True
            seconds, _ = chain(args.verb, i, fd, path, added)
            timed.on = False
            os.close(fd)
            for name, value in seconds.items():
                per_plugin.setdefault(name, []).append(value)
            for what in kernel:
                kernel[what].append(timed.totals.get(what, 0.0))
            totals.append(sum(seconds.values()))
        print(f"one more pod's chain {args.verb} at {args.pods} pods, in-process, medians of {args.measure}:")
        print(f"  the chain                     {statistics.median(totals) * 1000:7.1f} ms")
        for name, values in per_plugin.items():
            print(f"  {name:<29} {statistics.median(values) * 1000:7.1f} ms")
        print(f"  of which netlink (kernel)     {statistics.median(kernel['netlink']) * 1000:7.1f} ms")
        print(f"  of which libnftables          {statistics.median(kernel['nftables']) * 1000:7.1f} ms")
        return 0
    finally:
        for name in pods:
            subprocess.run(["ip", "netns", "del", name], check=False)
        subprocess.run(["ip", "netns", "del", node], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
