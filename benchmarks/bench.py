#!/usr/bin/env python3
"""pycni against another CNI bin dir (the reference Go plugins by default), side by side in one run.

    sudo benchmarks/run.sh [--pods 200] [--rounds 20] [--other /usr/lib/cni]

Each implementation gets a node network namespace of its own; operations alternate between the two
implementations round by round so that machine noise hits both alike. Reported: median wall time
(and min), the ratio pycni/other, and each plugin process's peak RSS. Nothing outside the namespaces
made here is touched, and they are removed at the end.
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
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))

from pycni.host.netns import entered  # noqa: E402
from pycni.node.install import render_conflist  # noqa: E402
from pycni.plugins import REGISTRY  # noqa: E402

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


class Impl:
    def __init__(self, label: str, bin_dir: str, work: str, subnet: str, tag: str) -> None:
        self.label, self.bin_dir = label, bin_dir
        self.node = f"pycni-bench-{tag}-{label}"
        self.work = os.path.join(work, label)
        os.makedirs(self.work)
        sh("ip", "netns", "add", self.node)
        self.node_fd = os.open(f"/run/netns/{self.node}", os.O_RDONLY)
        self.pods: list[str] = []
        self.tag = tag
        with open(os.path.join(REPO, "conf", "10-k8s-pod-network.conflist")) as f:
            conflist = json.loads(render_conflist(f.read(), [subnet]))
        conflist["plugins"][0]["ipam"]["dataDir"] = os.path.join(self.work, "ipam")
        self.conflist = conflist
        self.conf_path = os.path.join(self.work, "k8s.conflist")
        with open(self.conf_path, "w") as f:
            json.dump(conflist, f)
        with entered(self.node_fd):
            sh("ip", "link", "set", "lo", "up")

    def pod(self) -> str:
        name = f"pycni-bench-{self.tag}-{self.label}-p{len(self.pods)}"
        sh("ip", "netns", "add", name)
        self.pods.append(name)
        return f"/run/netns/{name}"

    def plugin_config(self, index: int, prev: dict | None = None, runtime: dict | None = None) -> bytes:
        config = {**self.conflist["plugins"][index], "cniVersion": self.conflist["cniVersion"],
                  "name": self.conflist["name"]}
        if prev:
            config["prevResult"] = prev
        if runtime:
            config["runtimeConfig"] = runtime
        return json.dumps(config).encode()

    def spare_nic(self) -> str:
        """A veth end on the node to hand out (its peer stays), as a device plugin would offer a NIC."""
        name = f"hd{len(self.pods)}"
        with entered(self.node_fd):
            sh("ip", "link", "add", name, "type", "veth", "peer", "name", name + "p")
        return name

    def host_device_config(self, device: str, prev: dict | None = None) -> bytes:
        config = {"cniVersion": "1.0.0", "name": "secondary", "type": "host-device", "device": device,
                  "dataDir": os.path.join(self.work, "host-device"),
                  "ipam": {"type": "host-local", "dataDir": os.path.join(self.work, "ipam2"),
                           "ranges": [[{"subnet": "192.168.0.0/16"}]]}}
        if prev:
            config["prevResult"] = prev
        return json.dumps(config).encode()

    def exec_plugin(self, plugin: str, command: str, stdin: bytes, cid: str, netns: str, ifname: str = "eth0"):
        """(seconds, peak RSS KiB, parsed stdout) of one plugin process in the node namespace."""
        env = {"PATH": PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
               "CNI_IFNAME": ifname, "CNI_PATH": self.bin_dir}
        with entered(self.node_fd):
            start = time.perf_counter()
            done = subprocess.run([os.path.join(self.bin_dir, plugin)], env=env, input=stdin, capture_output=True)
            elapsed = time.perf_counter() - start
            # peak RSS from GNU time, in a separate run: its own fork must not count in the timing
            if command == "ADD":
                rss = subprocess.run(["/usr/bin/time", "-f", "%M", os.path.join(self.bin_dir, plugin)], env=env,
                                     input=stdin, capture_output=True)
                peak = int(rss.stderr.decode().strip().splitlines()[-1])
            else:
                peak = 0
        if done.returncode != 0:
            raise RuntimeError(f"{self.label} {plugin} {command} failed: {done.stdout.decode()[:300]}")
        return elapsed, peak, (json.loads(done.stdout) if done.stdout.strip() else None)

    def chain(self, verb: str, cid: str, netns: str, caps: dict | None) -> float:
        argv = [DRIVER, "-bin", self.bin_dir, "-cache", os.path.join(self.work, "cache"), "-conf", self.conf_path,
                "-id", cid, "-netns", netns] + (["-caps", json.dumps(caps)] if caps else []) + [verb]
        with entered(self.node_fd):
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, env={"PATH": PATH})
            elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{self.label} chain {verb} failed: {done.stdout[:300]}")
        return elapsed

    def reserved(self) -> int:
        """Addresses host-local holds in this node's store."""
        store = os.path.join(self.work, "ipam", self.conflist["name"])
        return sum(1 for name in os.listdir(store) if name[0].isdigit() or ":" in name) if os.path.isdir(store) else 0

    def close(self) -> None:
        os.close(self.node_fd)
        for name in self.pods + [self.node]:
            sh("ip", "netns", "del", name, check=False)


def caps_for(i: int) -> dict:
    return {"portMappings": [{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 1_000_000,
                          "egressRate": 10_000_000, "egressBurst": 1_000_000}}


class Table:
    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.rows: list[tuple[str, dict[str, list[float]]]] = []

    def add(self, name: str, samples: dict[str, list[float]]) -> None:
        self.rows.append((name, samples))
        a, b = (statistics.median(samples[label]) for label in self.labels)
        print(f"{name:44s} " + "  ".join(
            f"{label} {statistics.median(samples[label]) * 1000:8.1f} ms (min {min(samples[label]) * 1000:6.1f})"
            for label in self.labels) + f"   ratio {a / b:5.2f}x", flush=True)


def single_plugins(impls: list[Impl], rounds: int, table: Table, rss: dict, suffix: str = "",
                   port_base: int = 0) -> None:
    samples = {name: {i.label: [] for i in impls} for name in (
        "loopback ADD", "host-local ADD", "host-local DEL", "bridge+host-local ADD", "bridge+host-local DEL",
        "portmap ADD (1 hostPort)", "portmap DEL", "bandwidth ADD (in+out)", "bandwidth DEL",
        "host-device+host-local ADD", "host-device+host-local DEL")}
    for r in range(rounds):
        for impl in impls:
            cid = f"single{r}{suffix.strip(' ()').replace(' ', '-')}"
            pod = impl.pod()
            t, m, _ = impl.exec_plugin("loopback", "ADD", b'{"cniVersion":"1.0.0","name":"lo","type":"loopback"}',
                                       cid, pod, "lo")
            samples["loopback ADD"][impl.label].append(t)
            rss.setdefault(("loopback", impl.label), []).append(m)
            ipam_only = impl.plugin_config(0)
            t, m, _ = impl.exec_plugin("host-local", "ADD", ipam_only, cid + "x", pod)
            samples["host-local ADD"][impl.label].append(t)
            rss.setdefault(("host-local", impl.label), []).append(m)
            t, _, _ = impl.exec_plugin("host-local", "DEL", ipam_only, cid + "x", pod)
            samples["host-local DEL"][impl.label].append(t)
            t, m, result = impl.exec_plugin("bridge", "ADD", ipam_only, cid, pod)
            samples["bridge+host-local ADD"][impl.label].append(t)
            rss.setdefault(("bridge", impl.label), []).append(m)
            pm = impl.plugin_config(1, result, {"portMappings": caps_for(port_base + r)["portMappings"]})
            t, m, result = impl.exec_plugin("portmap", "ADD", pm, cid, pod)
            samples["portmap ADD (1 hostPort)"][impl.label].append(t)
            rss.setdefault(("portmap", impl.label), []).append(m)
            bw = impl.plugin_config(2, result, {"bandwidth": caps_for(port_base + r)["bandwidth"]})
            t, m, result = impl.exec_plugin("bandwidth", "ADD", bw, cid, pod)
            samples["bandwidth ADD (in+out)"][impl.label].append(t)
            rss.setdefault(("bandwidth", impl.label), []).append(m)
            t, _, _ = impl.exec_plugin("bandwidth", "DEL", impl.plugin_config(2, result, {
                "bandwidth": caps_for(port_base + r)["bandwidth"]}), cid, pod)
            samples["bandwidth DEL"][impl.label].append(t)
            t, _, _ = impl.exec_plugin("portmap", "DEL", impl.plugin_config(1, result, {
                "portMappings": caps_for(port_base + r)["portMappings"]}), cid, pod)
            samples["portmap DEL"][impl.label].append(t)
            t, _, _ = impl.exec_plugin("bridge", "DEL", impl.plugin_config(0, result), cid, pod)
            samples["bridge+host-local DEL"][impl.label].append(t)
            device = impl.spare_nic()
            hd = impl.host_device_config(device)
            t, m, result = impl.exec_plugin("host-device", "ADD", hd, cid, pod, "net1")
            samples["host-device+host-local ADD"][impl.label].append(t)
            rss.setdefault(("host-device", impl.label), []).append(m)
            t, _, _ = impl.exec_plugin("host-device", "DEL", impl.host_device_config(device, result), cid, pod, "net1")
            samples["host-device+host-local DEL"][impl.label].append(t)
    for name, s in samples.items():
        table.add(name + suffix, s)


def chain_scenario(impls: list[Impl], rounds: int, table: Table, existing: int, label: str) -> None:
    adds = {i.label: [] for i in impls}
    dels = {i.label: [] for i in impls}
    for r in range(rounds):
        for impl in impls:
            pod = impl.pod()
            cid = f"{label.replace(' ', '-')}-{r}"
            adds[impl.label].append(impl.chain("add", cid, pod, caps_for(existing + r)))
            dels[impl.label].append(impl.chain("del", cid, pod, caps_for(existing + r)))
    table.add(f"k8s chain ADD via libcni ({label})", adds)
    table.add(f"k8s chain DEL via libcni ({label})", dels)


def populate(impls: list[Impl], count: int) -> None:
    for impl in impls:
        start = time.perf_counter()
        for i in range(count):
            impl.chain("add", f"filler{i}", impl.pod(), caps_for(i))
        print(f"  {impl.label}: {count} pods with a hostPort and a rate added in {time.perf_counter() - start:.0f} s",
              flush=True)


def parallel(impls: list[Impl], table: Table, width: int = 16, rounds: int = 3) -> None:
    """`width` chain ADDs started at once; failures reported, and whether the address store holds
    exactly one address per pod added (no address handed out twice, none leaked)."""
    samples = {i.label: [] for i in impls}
    for r in range(rounds):
        for impl in impls:
            pods = [impl.pod() for _ in range(width)]
            before = impl.reserved()
            start = time.perf_counter()
            with ThreadPoolExecutor(width) as pool:
                failures = [f for f in pool.map(lambda a, impl=impl: _try(impl, *a), [
                    (f"par{width}-{r}-{i}", p, 10 * width + r * width + i) for i, p in enumerate(pods)]) if f]
            samples[impl.label].append(time.perf_counter() - start)
            added = width - len(failures)
            if failures:
                print(f"  {impl.label}: {len(failures)} of {width} parallel ADDs failed: {failures[0]}")
            if impl.reserved() - before != added:
                print(f"  {impl.label}: {impl.reserved() - before} addresses reserved for {added} pods added")
    table.add(f"{width} chain ADDs at once (wall)", samples)


def check_and_status(impls: list[Impl], rounds: int, table: Table, prefix: str = "check") -> None:
    """CHECK of a pod's bridge (with host-local) and bandwidth, each given the chain's result as a runtime
    does (portmap is left out: the reference's portmap CHECK fails on a node without IPv6 NAT chains),
    and STATUS of each plugin of the chain in turn (as containerd 2.x asks on every CRI Status poll; only
    pycni answers STATUS: the reference 1.1.1 predates it, so its column shows VERSION calls instead, the
    cheapest call it has). Each pod is deleted again after its round, so that later rows start from an empty
    node."""
    checks = {i.label: [] for i in impls}
    statuses = {i.label: [] for i in impls}
    for r in range(rounds):
        for impl in impls:
            pod = impl.pod()
            cid = f"{prefix}{r}"
            caps = caps_for(40000 + r)
            _, _, result = impl.exec_plugin("bridge", "ADD", impl.plugin_config(0), cid, pod)
            _, _, result = impl.exec_plugin("portmap", "ADD", impl.plugin_config(1, result, {
                "portMappings": caps["portMappings"]}), cid, pod)
            _, _, result = impl.exec_plugin("bandwidth", "ADD", impl.plugin_config(2, result, {
                "bandwidth": caps["bandwidth"]}), cid, pod)
            checks[impl.label].append(
                impl.exec_plugin("bridge", "CHECK", impl.plugin_config(0, result), cid, pod)[0]
                + impl.exec_plugin("bandwidth", "CHECK", impl.plugin_config(2, result, {
                    "bandwidth": caps["bandwidth"]}), cid, pod)[0])
            total = 0.0
            for index, plugin in enumerate(p["type"] for p in impl.conflist["plugins"]):
                config = json.loads(impl.plugin_config(index))
                command = "VERSION" if impl.label == "other" else "STATUS"
                config["cniVersion"] = "1.1.0" if command == "STATUS" else config["cniVersion"]
                total += impl.exec_plugin(plugin, command, json.dumps(config).encode(), "", "", "")[0]
            statuses[impl.label].append(total)
            impl.exec_plugin("bandwidth", "DEL", impl.plugin_config(2, result, {"bandwidth": caps["bandwidth"]}), cid,
                             pod)
            impl.exec_plugin("portmap", "DEL", impl.plugin_config(1, result, {"portMappings": caps["portMappings"]}),
                             cid, pod)
            impl.exec_plugin("bridge", "DEL", impl.plugin_config(0, result), cid, pod)
    table.add("CHECK of bridge+host-local and bandwidth", checks)
    table.add("STATUS of each chain plugin (other: VERSION)", statuses)


def service_memory(proc) -> str:
    """The service's processes and their memory: RSS summed, and PSS (shared pages split among them)."""
    pids = [proc.pid]
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    rss = pss = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, value = line.split(":", 1)
                if key == "Rss":
                    rss += int(value.split()[0])
                elif key == "Pss":
                    pss += int(value.split()[0])
    return f"{len(pids)} processes, RSS {rss / 1024:.1f} MiB summed, PSS {pss / 1024:.1f} MiB"


def _try(impl: Impl, cid: str, pod: str, i: int) -> str:
    try:
        impl.chain("add", cid, pod, caps_for(30000 + i))  # hostPorts 50000 and up: no clash with other pods
        return ""
    except RuntimeError as e:
        return str(e)


DRIVER = ""
SERVICE_NAMESPACES: list[str] = []


def start_service(work: str, name: str = "pycni", *extra: str):
    """A pycni service for this run (stopped by its PID at the end) and launchers that ask it. The service
    itself lives in a throwaway network namespace of its own, so that a metrics listener it opens is not
    in the node's (it serves each call in the caller's namespace whatever its own)."""
    from pycni.services.cni import spawn

    socket_path = os.path.join(work, f"run-{name}", "pycni.sock")
    bin_dir = os.path.join(work, f"bin-{name}")
    home = f"pycni-bench-svc-{os.path.basename(work)}-{name}"
    sh("ip", "netns", "add", home)
    SERVICE_NAMESPACES.append(home)
    fd = os.open(f"/run/netns/{home}", os.O_RDONLY)
    try:
        with entered(fd):
            sh("ip", "link", "set", "lo", "up")
            proc = spawn(socket_path, "", *extra)
    finally:
        os.close(fd)
    sh(sys.executable, "-m", "pycni", "install", "--bin-dir", bin_dir, "--daemon-socket", socket_path)
    return proc, bin_dir


class ImageService:
    """The pycni service from the image, run as the DaemonSet's service container runs (privileged, the
    node's network: here a throwaway namespace of its own), stopped and removed at the end, behind the
    image's own static launchers (copied out as its init container does). Those call the socket the image
    was built for, /run/pycni/pycni.sock, so the container's socket is there for the run: the benchmark
    refuses to start where a pycni service already listens on it."""

    SOCKET = "/run/pycni/pycni.sock"

    def __init__(self, work: str, image: str) -> None:
        import socket

        with socket.socket(socket.AF_UNIX) as probe:
            if probe.connect_ex(self.SOCKET) == 0:
                raise RuntimeError(f"a pycni service already listens on {self.SOCKET}: not benchmarking over it")
        self.podman = os.path.join(REPO, "scripts", "podman.sh")
        run_dir = os.path.dirname(self.SOCKET)
        self.made_run_dir = not os.path.isdir(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        self.run_dir_mode = os.stat(run_dir).st_mode & 0o7777  # the service makes it root-only
        home = f"pycni-bench-svc-{os.path.basename(work)}-image"
        sh("ip", "netns", "add", home)
        SERVICE_NAMESPACES.append(home)
        self.name = f"pycni-bench-{uuid.uuid4().hex[:8]}"
        sh(self.podman, "run", "--detach", "--name", self.name, "--privileged", "--network", f"ns:/run/netns/{home}",
           "--volume", f"{run_dir}:{run_dir}", image, "pycni", "daemon", "--socket", self.SOCKET)
        for _ in range(300):
            with socket.socket(socket.AF_UNIX) as probe:
                if probe.connect_ex(self.SOCKET) == 0:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the service container did not start: {sh(self.podman, 'logs', self.name).stderr}")
        self.pid = int(sh(self.podman, "inspect", "--format", "{{.State.Pid}}", self.name).stdout)
        self.bin_dir = os.path.join(work, "bin-image")
        os.makedirs(self.bin_dir)
        sh(self.podman, "run", "--rm", "--network", "none", "--volume", f"{self.bin_dir}:/host/opt/cni/bin", image,
           "pycni", "install", "--from", "/opt/pycni/launchers", "--bin-dir", "/host/opt/cni/bin")

    def terminate(self) -> None:
        sh(self.podman, "rm", "--force", "--time", "5", self.name, check=False)
        os.unlink(self.SOCKET)  # ours: nothing listened there before the run
        if self.made_run_dir:
            os.rmdir(os.path.dirname(self.SOCKET))
        else:
            os.chmod(os.path.dirname(self.SOCKET), self.run_dir_mode)

    def wait(self, timeout: float) -> None:
        pass


def image_for_benchmark(tag: str) -> str:
    """The image built from this checkout, offline, into .bench-env's own podman storage."""
    started = time.perf_counter()
    sh(os.path.join(REPO, "scripts", "build-image.sh"), "--offline", "--tag", tag, "--python", sys.executable)
    print(f"image {tag} built in {time.perf_counter() - started:.0f} s")
    return tag


def main() -> int:
    global DRIVER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pycni", default=os.path.join(REPO, ".bench-env", "bin"), help="pycni's bin dir")
    parser.add_argument("--other", default="/usr/lib/cni", help="the bin dir to compare with")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pods", type=int, default=200, help="pods already on the node for the scale test")
    parser.add_argument("--driver", default=os.path.join(REPO, "tests", "libcni", "cnidriver"))
    parser.add_argument("--skip", default="", help="comma-separated: single,chain,check,scale,parallel")
    parser.add_argument("--mode", choices=["standalone", "daemon", "both", "image"], default="standalone",
                        help="daemon: pycni's plugins are clients of a pycni service started for the run; "
                             "both: that, and the chain, CHECK and STATUS without the service (--pycni's "
                             "launchers) against the same reference, in the same run; image: the service "
                             "container of the image (built with scripts/build-image.sh --offline) behind "
                             "static launchers, as the DaemonSet installs pycni")
    parser.add_argument("--image", default="", help="with --mode image: this image instead of building one")
    parser.add_argument("--other-service", default="", metavar="ARGS",
                        help="compare with a second pycni service started with these `pycni daemon` arguments "
                             "instead of --other, e.g. \"--metrics-address 127.0.0.2:9750\" (metrics on vs off)")
    args = parser.parse_args()
    DRIVER = args.driver
    skip = set(filter(None, args.skip.split(",")))
    tag = uuid.uuid4().hex[:4]
    work = tempfile.mkdtemp(prefix="pycni-bench-")
    impls: list[Impl] = []
    extra_impls: list[Impl] = []
    service = other_service = None
    try:
        pycni_bin = args.pycni
        if args.mode in ("daemon", "both"):
            service, pycni_bin = start_service(work)
        elif args.mode == "image":
            os.environ.setdefault("PYCNI_PODMAN_ROOT", os.path.join(REPO, ".bench-env", "podman"))
            service = ImageService(work, args.image or image_for_benchmark("localhost/pycni:bench"))
            pycni_bin = service.bin_dir
        if args.other_service:
            other_service, args.other = start_service(work, "other", *args.other_service.split())
        impls = [Impl("pycni", pycni_bin, work, "10.200.0.0/16", tag), Impl("other", args.other, work,
                                                                             "10.201.0.0/16", tag)]
        table = Table([i.label for i in impls])
        rss: dict = {}
        print(f"pycni ({'standalone' if service is None else args.mode}): {pycni_bin}   other: {args.other}   "
              f"rounds: {args.rounds}   (medians; ratio = pycni/other)")
        if "single" not in skip:
            single_plugins(impls, args.rounds, table, rss)
        if "chain" not in skip:
            chain_scenario(impls, args.rounds, table, 0, "empty node")
        if "check" not in skip:
            check_and_status(impls, args.rounds, table)
        if args.mode == "both":
            without = Impl("standalone", args.pycni, work, "10.202.0.0/16", tag)
            extra_impls.append(without)
            print(f"\npycni without the service: {args.pycni}   (ratio = standalone/other)")
            pair = [without, impls[1]]
            standalone_table = Table([i.label for i in pair])
            if "chain" not in skip:
                chain_scenario(pair, args.rounds, standalone_table, 0, "empty node")
            if "check" not in skip:
                check_and_status(pair, args.rounds, standalone_table, "check-standalone")
            print()
        if "parallel" not in skip:
            parallel(impls, table)
            parallel(impls, table, width=64)
        if "scale" not in skip and args.pods:
            populate(impls, args.pods)
            if service is not None:
                print(f"  the pycni service with {args.pods} pods on the node: {service_memory(service)}")
            chain_scenario(impls, args.rounds, table, args.pods + 1000, f"{args.pods} pods on the node")
            if "single" not in skip:
                single_plugins(impls, max(5, args.rounds // 2), table, {}, f" ({args.pods} pods)", args.pods + 5000)
        if rss:
            print("\npeak RSS per plugin process (median, MiB):")
            for plugin in REGISTRY:
                a, b = (statistics.median(rss[(plugin, i.label)]) / 1024 for i in impls)
                print(f"  {plugin:10s} pycni {a:6.1f}   other {b:6.1f}   ratio {a / b:4.2f}x")
    finally:
        for impl in impls + extra_impls:
            impl.close()
        for proc in (service, other_service):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
        for home in SERVICE_NAMESPACES:
            sh("ip", "netns", "del", home, check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
