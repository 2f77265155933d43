"""Running plugins the way a runtime does, inside throwaway network namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field

NETNS_DIR = "/run/netns"


def sh(*argv: str, check: bool = True, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout, input=input)


@dataclass
class PluginRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Namespace:
    name: str

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}"

    def run(self, *argv: str, check: bool = True, timeout: float = 60, input: str | None = None):
        return sh("ip", "netns", "exec", self.name, *argv, check=check, timeout=timeout, input=input)

    def popen(self, *argv: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kwargs)

    def link_json(self, name: str | None = None) -> list[dict]:
        argv = ["ip", "-j", "-d", "link", "show"] + ([name] if name else [])
        return json.loads(self.run(*argv).stdout or "[]")

    def settled_link_json(self, timeout: float = 10.0) -> list[dict]:
        """The links once those the service retired (down, alias `pycni: being deleted`) are gone: its DEL
        answers before the kernel unregisters a veth pair. Bounded: what is still retired then is returned."""
        import time

        from pycni.host.netlink import RETIRED_ALIAS

        deadline = time.monotonic() + timeout
        while True:
            links = self.link_json()
            if time.monotonic() > deadline or not any(link.get("ifalias") == RETIRED_ALIAS for link in links):
                return links
            time.sleep(0.02)

    def link_names(self) -> list[str]:
        """Sorted names of the settled links."""
        return sorted(link["ifname"] for link in self.settled_link_json())

    def addresses(self, name: str) -> list[str]:
        out = json.loads(self.run("ip", "-j", "addr", "show", "dev", name).stdout)
        return [f"{a['local']}/{a['prefixlen']}" for entry in out for a in entry.get("addr_info", [])]

    def sysctl(self, key: str) -> str:
        return self.run("sysctl", "-n", key).stdout.strip()


@dataclass
class Sandbox:
    """A node namespace with pod namespaces, all removed by close()."""

    bin_dir: str
    prefix: str = field(default_factory=lambda: "pycni-t-" + uuid.uuid4().hex[:8])
    namespaces: list[Namespace] = field(default_factory=list)

    def namespace(self, role: str, lo_up: bool = True) -> Namespace:
        ns = Namespace(f"{self.prefix}-{role}")
        sh("ip", "netns", "add", ns.name)
        self.namespaces.append(ns)
        if lo_up:
            ns.run("ip", "link", "set", "lo", "up")
        return ns

    def pod(self, role: str = "pod") -> Namespace:
        """A pod sandbox namespace, as a runtime makes it: nothing configured, lo down."""
        return self.namespace(f"{role}{len(self.namespaces)}", lo_up=False)

    def remove(self, ns: Namespace) -> None:
        """Delete one namespace now (a pod whose sandbox is gone before DEL)."""
        sh("ip", "netns", "del", ns.name)
        self.namespaces.remove(ns)

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns.name, check=False)
        self.namespaces.clear()


def plugin_env(command: str, container_id: str = "", netns: str = "", ifname: str = "", args: str = "",
               path: str = "") -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command}
    for key, value in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname),
                       ("CNI_ARGS", args), ("CNI_PATH", path)):
        if value:
            env[key] = value
    return env


def run_plugin(where: Namespace | None, executable: str, env: dict[str, str], stdin: str | bytes,
               timeout: float = 60) -> PluginRun:
    """Execute a plugin binary with the CNI environment, inside `where` (a node namespace)."""
    prefix = ["ip", "netns", "exec", where.name] if where else []
    argv = prefix + ["env", "-i"] + [f"{k}={v}" for k, v in env.items()] + [executable]
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
    return PluginRun(done.returncode, done.stdout.decode(), done.stderr.decode())


from pycni.node.probe import CLIENT as _CLIENT  # noqa: E402
from pycni.node.probe import SERVER as _SERVER  # noqa: E402


class PeerServer:
    """Answers every TCP connection or UDP datagram with the address it came from."""

    def __init__(self, ns: Namespace, port: int, proto: str = "tcp", lifetime: float = 60) -> None:
        import sys

        self.proc = ns.popen(sys.executable, "-c", _SERVER, proto, str(port), str(lifetime),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def peer_seen_by(ns: Namespace, host: str, port: int, proto: str = "tcp", source_port: int = 0) -> str | None:
    """Connect from `ns`; the address the server saw us as, or None if nothing answered."""
    import sys

    done = ns.run(sys.executable, "-c", _CLIENT, proto, host, str(port), str(source_port), check=False, timeout=20)
    return done.stdout.strip() if done.returncode == 0 else None


def ping(ns: Namespace, address: str, count: int = 1, size: int | None = None, dont_fragment: bool = False) -> bool:
    argv = ["ping", "-c", str(count), "-W", "2", "-i", "0.2"]
    if size is not None:
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    return ns.run(*argv, address, check=False, timeout=30).returncode == 0


def link_namespaces(a: Namespace, b: Namespace, a_if: str, b_if: str, a_addrs: list[str], b_addrs: list[str]) -> None:
    """A veth between two namespaces with addresses on both ends (IPv6 without DAD delay)."""
    a.run("ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    for ns, ifname, addrs in ((a, a_if, a_addrs), (b, b_if, b_addrs)):
        for addr in addrs:
            ns.run("ip", "addr", "add", addr, "dev", ifname, *(["nodad"] if ":" in addr else []))
        ns.run("ip", "link", "set", ifname, "up")


class Chain:
    """A conflist driven through libcni (the Go driver) inside a node namespace."""

    def __init__(self, node: Namespace, cnidriver: str, bin_dir: str, conf_path: str, cache_dir: str) -> None:
        self.node, self.cnidriver, self.bin_dir = node, cnidriver, bin_dir
        self.conf_path, self.cache_dir = conf_path, cache_dir

    def __call__(self, verb: str, pod: Namespace | None, container_id: str, caps: dict | None = None,
                 ifname: str = "eth0", netns: str | None = None, args: str = "") -> tuple[int, dict]:
        argv = [self.cnidriver, "-bin", self.bin_dir, "-cache", self.cache_dir, "-conf", self.conf_path,
                "-id", container_id, "-ifname", ifname]
        if args:
            argv += ["-args", args]
        path = netns if netns is not None else (pod.path if pod else "")
        if path:
            argv += ["-netns", path]
        if caps:
            argv += ["-caps", json.dumps(caps)]
        done = self.node.run(*argv, verb, check=False, timeout=120)
        return done.returncode, json.loads(done.stdout)

    def add(self, pod: Namespace, container_id: str, caps: dict | None = None, args: str = "") -> dict:
        code, out = self("add", pod, container_id, caps, args=args)
        assert code == 0, out
        return out


def eventually(check, timeout: float = 2.0) -> bool:
    """Whether `check()` holds within `timeout` seconds (for what the service finishes after answering)."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def serving(socket_path: str, timeout: float = 30) -> bool:
    """Whether something accepts connections on the unix socket within `timeout` seconds."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(socket_path)
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.05)


def reservation_files(directory: str) -> list[str]:
    """host-local's reservation files in `directory`: those named by an address (not lock,
    last_reserved_ip.N or a killed writer's temporary file)."""
    import ipaddress

    found = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            continue
        found.append(name)
    return found
