"""Daemon mode: the launcher as a thin client of the pycni service, its fallback, and the import budget."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from pycni.node.install import launcher_text
from pycni.plugins import package_root
from tests.helpers import plugin_env, run_plugin

HEAVY = ("pyroute2", "nftables", "click", "jsonschema")


@pytest.fixture
def service(tmp_path):
    """A pycni service of this test's own, stopped by its PID."""
    from pycni.services.cni import spawn

    socket_path = str(tmp_path / "run" / "pycni.sock")
    proc = spawn(socket_path)
    yield socket_path
    proc.terminate()
    proc.wait(timeout=10)


def write_launcher(path, plugin_type, socket_path, version=None, protocol=None):
    """A Python launcher; as another pycni release (`version`) or wire protocol (`protocol`) would write it."""
    text = launcher_text(plugin_type, sys.executable, package_root(), socket_path)
    if version:
        text = text.replace("'0.1.0'", repr(version))
    if protocol:
        text = text.replace("from pycni.services.cni.client import serve",
                            f"import pycni.services.cni\npycni.services.cni.PROTOCOL = {protocol!r}\n"
                            "from pycni.services.cni.client import serve")
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def imports_of(node, launcher, env, stdin):
    """Modules the plugin process itself imported, from `python -X importtime`."""
    argv = ["ip", "netns", "exec", node.name, "env", "-i"] + [f"{k}={v}" for k, v in env.items()] + [
        sys.executable, "-X", "importtime", "-IS", launcher]
    done = subprocess.run(argv, input=stdin.encode(), capture_output=True, timeout=60)
    return done, {line.split("|")[-1].strip() for line in done.stderr.decode().splitlines() if "|" in line}


def packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def lo_up(pod):
    return "UP" in pod.link_json("lo")[0]["flags"]


def test_the_service_does_the_work_and_the_client_stays_light(sandbox, node, tmp_path, service):
    launcher = write_launcher(tmp_path / "loopback", "loopback", service)
    pod = sandbox.pod()
    config = json.dumps({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"})
    done, modules = imports_of(node, launcher, plugin_env("ADD", "c1", pod.path, "lo"), config)
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["interfaces"][0]["sandbox"] == pod.path
    assert lo_up(pod)
    assert not packages(modules) & {"pyroute2", "nftables", "click", "jsonschema", "json", "re", "subprocess"}, modules
    assert "pycni.host.ifreq" not in modules


def test_fallback_when_the_service_is_absent(sandbox, node, tmp_path):
    launcher = write_launcher(tmp_path / "loopback", "loopback", str(tmp_path / "nobody-listens.sock"))
    pod = sandbox.pod()
    run = run_plugin(node, launcher, plugin_env("ADD", "c1", pod.path, "lo"),
                     json.dumps({"cniVersion": "1.0.0", "name": "lo"}))
    assert run.ok, run.stdout
    assert lo_up(pod)


@pytest.mark.parametrize("release, protocol, served", [
    ("9.9.9", None, True),  # another pycni release, the same wire protocol: the service does the work
    (None, "pycni/99", False),  # another wire protocol: declined, the launcher runs the plugin itself
])
def test_launchers_of_another_release_or_wire_protocol(sandbox, node, tmp_path, service, release, protocol, served):
    launcher = write_launcher(tmp_path / "loopback", "loopback", service, version=release, protocol=protocol)
    pod = sandbox.pod()
    env = plugin_env("ADD", "c1", pod.path, "lo")
    done, modules = imports_of(node, launcher, env, json.dumps({"cniVersion": "1.0.0", "name": "lo"}))
    assert done.returncode == 0 and lo_up(pod)
    assert ("pycni.host.ifreq" in modules) is not served  # loopback's interface ioctls, in this process or not


def test_errors_come_back_through_the_service(node, tmp_path, service):
    launcher = write_launcher(tmp_path / "host-local", "host-local", service)
    run = run_plugin(node, launcher, plugin_env("ADD", "c1", "/run/netns/x", "eth0"), "{broken")
    assert run.returncode == 1 and run.json["code"] == 6
    version = run_plugin(node, launcher, plugin_env("VERSION"), "")
    assert version.ok and version.json["supportedVersions"][-1] == "1.1.0"


@pytest.mark.parametrize("plugin,command,stdin", [
    ("bridge", "VERSION", ""),
    ("portmap", "ADD", "{not json"),
    ("bandwidth", "ADD", json.dumps({"cniVersion": "0.2.0", "name": "n"})),
    ("bridge", "ADD", json.dumps({"cniVersion": "1.0.0", "name": "n", "mtu": "big"})),
])
def test_version_and_config_errors_never_import_heavy_modules(node, tmp_path, plugin, command, stdin):
    launcher = write_launcher(tmp_path / plugin, plugin, "")
    done, modules = imports_of(node, launcher, plugin_env(command, "c1", "/run/netns/x", "eth0"), stdin)
    assert done.stdout
    assert not packages(modules) & set(HEAVY), packages(modules) & set(HEAVY)


def test_host_local_never_imports_netlink_or_nftables(node, tmp_path):
    launcher = write_launcher(tmp_path / "host-local", "host-local", "")
    config = json.dumps({"cniVersion": "1.0.0", "name": "n", "ipam": {
        "type": "host-local", "dataDir": str(tmp_path / "d"), "ranges": [[{"subnet": "10.9.0.0/24"}]]}})
    done, modules = imports_of(node, launcher, plugin_env("ADD", "c1", "/run/netns/x", "eth0"), config)
    assert done.returncode == 0, done.stdout
    assert not packages(modules) & set(HEAVY), packages(modules) & set(HEAVY)


def test_bridge_and_bandwidth_without_the_service_load_no_netlink_library(sandbox, node, tmp_path):
    """The slow path stays short: a bridge (with pycni's host-local in-process) and a bandwidth ADD and DEL,
    run standalone, never import pyroute2, asyncio or OpenSSL (hashlib's); the pod is really attached."""
    for plugin in ("bridge", "host-local", "bandwidth"):
        write_launcher(tmp_path / plugin, plugin, "")
    pod = sandbox.pod()
    bridge = {"cniVersion": "1.0.0", "name": "n", "type": "bridge", "bridge": "cni-i", "isGateway": True, "ipam": {
        "type": "host-local", "dataDir": str(tmp_path / "d"), "ranges": [[{"subnet": "10.9.1.0/24"}]]}}
    shaping = {"cniVersion": "1.0.0", "name": "n", "type": "bandwidth", "ingressRate": 8_000_000,
               "ingressBurst": 100_000, "egressRate": 8_000_000, "egressBurst": 100_000}
    env = plugin_env("ADD", "c1", pod.path, "eth0", path=str(tmp_path))
    done, bridge_modules = imports_of(node, str(tmp_path / "bridge"), env, json.dumps(bridge))
    assert done.returncode == 0, done.stdout
    result = json.loads(done.stdout)
    done, bandwidth_modules = imports_of(node, str(tmp_path / "bandwidth"), env,
                                         json.dumps({**shaping, "prevResult": result}))
    assert done.returncode == 0, done.stdout
    assert "qdisc htb 1: root" in node.run("tc", "qdisc", "show", "dev", result["interfaces"][1]["name"]).stdout
    assert result["ips"][0]["address"] in pod.addresses("eth0")
    env["CNI_COMMAND"] = "DEL"
    for launcher, config in (("bandwidth", {**shaping, "prevResult": result}), ("bridge", bridge)):
        done, modules = imports_of(node, str(tmp_path / launcher), env, json.dumps(config))
        assert done.returncode == 0, done.stdout
        assert not packages(modules) & {"pyroute2", "asyncio", "_hashlib"}, modules
    assert not packages(bridge_modules | bandwidth_modules) & {"pyroute2", "asyncio", "_hashlib"}
    assert "pycni.plugins.host_local.allocator" in bridge_modules, "pycni's own host-local runs in-process"
    assert not [name for name in node.link_names() if name.startswith(("veth", "bw"))]


@pytest.mark.parametrize("served", [True, False], ids=["service", "no-service"])
def test_an_environment_that_is_not_utf8_gets_an_answer_not_a_traceback(sandbox, node, tmp_path, served):
    from pycni.services.cni import spawn

    socket_path = str(tmp_path / "run" / "pycni.sock")
    proc = spawn(socket_path) if served else None
    try:
        launcher = write_launcher(tmp_path / "loopback", "loopback", socket_path)
        version = run_plugin(node, launcher, {**plugin_env("VERSION"), "FOO": "\udcff"}, "")
        assert version.ok and version.json["supportedVersions"][-1] == "1.1.0", version.stdout + version.stderr
        pod = sandbox.pod()
        config = json.dumps({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"})
        bad_args = run_plugin(node, launcher, plugin_env("ADD", "c1", pod.path, "lo", args="K8S_POD_NAME=\udcff"),
                              config)
        assert "Traceback" not in bad_args.stdout + bad_args.stderr
        assert bad_args.ok, bad_args.stdout  # loopback ignores CNI_ARGS, as the reference does
        assert lo_up(pod)
        bad_command = run_plugin(node, launcher, plugin_env("\udcff", "c1", pod.path, "lo"), config)
        assert bad_command.returncode != 0 and bad_command.json["code"] == 4, bad_command.stdout
        assert "Traceback" not in bad_command.stderr
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


def test_the_service_sees_the_files_its_caller_sees(sandbox, node, tmp_path, service):
    """A runtime in a mount namespace of its own (as where the runtime runs in a container): its CNI_PATH
    is a tmpfs that only it sees. bridge, served by the service, must still find host-local there."""
    staging, private = tmp_path / "staging", tmp_path / "private-bin"
    staging.mkdir()
    private.mkdir()
    for plugin_type in ("bridge", "host-local"):
        write_launcher(staging / plugin_type, plugin_type, service)
    pod = sandbox.pod()
    config = json.dumps({"cniVersion": "1.0.0", "name": "mnt", "type": "bridge", "bridge": "mntbr0",
                         "isGateway": True, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/24"}]],
                                                     "dataDir": str(tmp_path / "ipam")}})
    env = plugin_env("ADD", "c1", pod.path, "eth0", path=str(private))
    script = (f"mount -t tmpfs tmpfs {private} && cp {staging}/* {private}/ && "
              f"exec env -i {' '.join(f'{k}={v}' for k, v in env.items())} "
              f"{sys.executable} -X importtime -IS {private}/bridge")
    done = subprocess.run(["ip", "netns", "exec", node.name, "unshare", "-m", "--propagation", "private", "sh", "-c",
                           script], input=config.encode(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["ips"][0]["address"] == "10.77.0.2/24"
    modules = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.decode().splitlines() if "|" in line}
    assert "pyroute2" not in modules  # the service did the work, not a fallback in the launcher
    assert not os.listdir(private)  # the launchers were only ever in the caller's mount namespace
    assert "10.77.0.2/24" in pod.addresses("eth0")


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler: pycni installs Python launchers")
def test_the_compiled_launcher_is_served_falls_back_and_reads_any_environment(sandbox, node, tmp_path):
    from pycni.node.install import install_launchers
    from pycni.plugins import read_launcher_marker
    from pycni.services.cni import spawn

    socket_path, log_path = str(tmp_path / "run" / "pycni.sock"), str(tmp_path / "service.log")
    bin_dir = str(tmp_path / "bin")
    install_launchers(bin_dir, daemon_socket=socket_path)
    launcher = os.path.join(bin_dir, "loopback")
    assert open(launcher, "rb").read(4) == b"\x7fELF" and read_launcher_marker(launcher)[0] == "loopback"
    config = json.dumps({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"})
    alone = sandbox.pod()
    run = run_plugin(node, launcher, plugin_env("ADD", "c0", alone.path, "lo"), config)
    assert run.ok and lo_up(alone), run.stdout  # no service: the Python launcher got stdin back and did it
    proc = spawn(socket_path, log_path=log_path)
    try:
        pod = sandbox.pod()
        env = {**plugin_env("ADD", "c1", pod.path, "lo", args="K8S_POD_NAME=\udcff"), "FOO": "\udcff"}
        run = run_plugin(node, launcher, env, config)
        assert run.ok and lo_up(pod), run.stdout + run.stderr
        assert json.loads(run.stdout)["interfaces"][0]["sandbox"] == pod.path
        served = [line for line in open(log_path) if "plugin=loopback command=ADD" in line]
        assert len(served) == 1 and "containerID=c1" in served[0]  # the service did it, not the fallback
        version = run_plugin(node, launcher, plugin_env("VERSION"), "")
        assert version.ok and version.json["supportedVersions"][-1] == "1.1.0"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
