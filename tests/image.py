"""The pycni image under test: built once per session with scripts/build-image.sh --offline into a podman
storage of the test environment's own, and its containers run the way the DaemonSet runs them, in a
test's node namespace with stand-in host directories."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import uuid

import pytest
import yaml  # scripts/test.sh installs PyYAML

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PODMAN = os.path.join(REPO, "scripts", "podman.sh")
TAG = "localhost/pycni:test"
MANIFEST = os.path.join(REPO, "deploy", "pycni-daemonset.yaml")


def podman_env() -> dict[str, str]:
    return {**os.environ, "PYCNI_PODMAN_ROOT": os.path.join(REPO, ".test-env", "podman")}


def podman(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([PODMAN, *argv], env=podman_env(), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(argv)}: {done.stderr.strip()[-2000:]}")
    return done


def manifest() -> list[dict]:
    """The objects of the shipped manifest."""
    with open(MANIFEST) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def daemonsets() -> dict[str, dict]:
    """The manifest's DaemonSets, by name."""
    return {d["metadata"]["name"]: d for d in manifest() if d["kind"] == "DaemonSet"}


def pod_spec(daemonset: str = "pycni") -> dict:
    """A DaemonSet's pod spec, as the manifest has it."""
    return daemonsets()[daemonset]["spec"]["template"]["spec"]


def config_map() -> dict[str, str]:
    """The shipped ConfigMap's data."""
    return next(d for d in manifest() if d["kind"] == "ConfigMap")["data"]


def containers() -> dict[str, dict]:
    """The init containers and containers of every DaemonSet, by name."""
    return {c["name"]: c for name in daemonsets() for c in pod_spec(name).get("initContainers", [])
            + pod_spec(name)["containers"]}


def host_paths() -> dict[str, str]:
    """The DaemonSets' hostPath volumes: name -> path on the node."""
    return {v["name"]: v["hostPath"]["path"] for name in daemonsets() for v in pod_spec(name)["volumes"]
            if "hostPath" in v}


@pytest.fixture(scope="session")
def image() -> str:
    """The image, built from this checkout with no network (scripts/build-image.sh --offline)."""
    started = time.monotonic()
    done = subprocess.run([os.path.join(REPO, "scripts", "build-image.sh"), "--offline", "--tag", TAG,
                           "--python", sys.executable], env=podman_env(), capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"image built in {time.monotonic() - started:.0f} s: {done.stdout.strip().splitlines()[-1]}")
    return TAG


def elf_links_dynamically(path: str) -> bool:
    """Whether an ELF executable asks for an interpreter or shared libraries (PT_INTERP or PT_DYNAMIC)."""
    with open(path, "rb") as f:
        head = f.read(64)
        assert head[:4] == b"\x7fELF" and head[4] == 2, f"{path}: not a 64-bit ELF file"
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    kinds = {struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)}
    return bool(kinds & {2, 3})  # PT_DYNAMIC, PT_INTERP


class Container:
    """A container of the image run the way the DaemonSet runs one: in the node's network namespace
    (hostNetwork), with `mounts` (host directory -> container path) standing in for its hostPaths."""

    def __init__(self, image: str, node, command: list[str], mounts: dict[str, str], privileged: bool = True,
                 env: dict[str, str] | None = None, capabilities: tuple[str, ...] = ()) -> None:
        self.name = f"pycni-test-{uuid.uuid4().hex[:8]}"
        argv = ["run", "--detach", "--name", self.name, "--network", f"ns:{node.path}"]
        argv += ["--privileged"] if privileged else []
        for capability in capabilities:
            argv += ["--cap-add", capability]
        for source, target in mounts.items():
            argv += ["--volume", f"{source}:{target}"]
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        podman(*argv, image, *command)

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def kill(self) -> None:
        podman("kill", self.name, check=False)

    def wait(self, timeout: float = 120) -> int:
        return int(podman("wait", self.name, timeout=timeout).stdout.strip().splitlines()[-1])

    def stop(self, grace: int = 10) -> tuple[float, int]:
        """Stop it as the kubelet does (SIGTERM, SIGKILL after `grace` seconds): (seconds taken, exit code;
        137 when SIGTERM did not end it)."""
        started = time.monotonic()
        podman("stop", "--time", str(grace), self.name, timeout=grace + 60)
        taken = time.monotonic() - started
        return taken, int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def exec(self, *argv: str) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *argv, check=False)

    def remove(self) -> None:
        podman("rm", "--force", "--time", "5", self.name, check=False)
