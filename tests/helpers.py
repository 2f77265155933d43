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
