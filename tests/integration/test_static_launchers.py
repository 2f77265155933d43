"""The image's static launchers (`pycni install --static`): no Python behind them, so every case the service
does not serve is a CNI error 11 the kubelet retries on, never a hang and never an ADD run twice; and a
launcher of another pycni release is served as long as it speaks the service's wire protocol."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.helpers import plugin_env, run_plugin, serving

LOOPBACK = json.dumps({"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"})


def build(bin_dir: str, socket_path: str, version: str = "", protocol: str = "") -> str:
    """Static launchers for `socket_path`, as another pycni release (`version`) or wire protocol would
    build them."""
    patch = (f"import pycni; pycni.__version__ = {version!r}; " if version else "") + \
        (f"import pycni.services.cni as c; c.PROTOCOL = {protocol!r}; " if protocol else "")
    subprocess.run([sys.executable, "-c", patch + "from pycni.node.install import install_launchers; "
                    f"install_launchers({bin_dir!r}, daemon_socket={socket_path!r}, static=True)"],
                   check=True, capture_output=True)
    return f"{bin_dir}/loopback"


@pytest.fixture
def service_dir():
    directory = tempfile.mkdtemp(prefix="svc-")  # short: a unix socket path fits in 108 bytes
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def service(node, service_dir):
    """`pycni daemon` in the node namespace, stopped by its PID."""
    socket_path = f"{service_dir}/pycni.sock"
    started = []

    def start():
        proc = node.popen(sys.executable, "-m", "pycni", "daemon", "--socket", socket_path,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        assert serving(socket_path), "pycni daemon did not start"
        return proc

    yield socket_path, start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def add_loopback(node, launcher, pod):
    return run_plugin(node, launcher, plugin_env("ADD", "c1", pod.path, "lo"), LOOPBACK)


def lo_up(pod) -> bool:
    return "UP" in pod.link_json("lo")[0]["flags"]


def test_a_launcher_of_another_release_is_served(sandbox, node, service, tmp_path):
    socket_path, start = service
    start()
    launcher = build(str(tmp_path / "bin"), socket_path, version="0.0.9")
    assert b"pycni-plugin" in open(launcher, "rb").read()
    pod = sandbox.pod()
    run = add_loopback(node, launcher, pod)
    assert run.returncode == 0, run.stdout
    assert json.loads(run.stdout)["interfaces"][0]["name"] == "lo" and lo_up(pod)


def test_another_wire_protocol_is_declined_with_error_11(sandbox, node, service, tmp_path):
    socket_path, start = service
    start()
    launcher = build(str(tmp_path / "bin"), socket_path, protocol="pycni/99")
    pod = sandbox.pod()
    run = add_loopback(node, launcher, pod)
    error = json.loads(run.stdout)
    assert run.returncode == 1 and error["code"] == 11 and error["cniVersion"] == "1.0.0", run.stdout
    assert "declined" in error["msg"] and "pycni/99" in error["details"]
    assert not lo_up(pod)


def test_no_service_error_11_after_the_wait_and_nothing_done(sandbox, node, service_dir, tmp_path):
    from pycni.services.cni import SERVICE_WAIT_SECONDS

    socket_path = f"{service_dir}/pycni.sock"
    launcher = build(str(tmp_path / "bin"), socket_path)
    pod = sandbox.pod()
    started = time.monotonic()
    run = add_loopback(node, launcher, pod)
    waited = time.monotonic() - started
    print(f"no service: error 11 after {waited:.2f} s (SERVICE_WAIT_SECONDS={SERVICE_WAIT_SECONDS})")
    error = json.loads(run.stdout)
    assert run.returncode == 1 and error["code"] == 11, run.stdout
    assert socket_path in error["details"] and "not running" in error["msg"]
    assert not lo_up(pod)


def test_a_service_that_comes_back_during_the_wait_serves_the_call(sandbox, node, service, tmp_path):
    socket_path, start = service
    launcher = build(str(tmp_path / "bin"), socket_path)
    pod = sandbox.pod()
    calling = threading.Thread(target=lambda: results.append(add_loopback(node, launcher, pod)))
    results: list = []
    calling.start()
    time.sleep(0.5)  # the launcher is waiting: its first connect failed
    start()
    calling.join(timeout=60)
    assert results and results[0].returncode == 0, results
    assert lo_up(pod)


def test_a_service_that_dies_after_taking_an_add_is_not_asked_again(sandbox, node, service_dir, tmp_path):
    socket_path = f"{service_dir}/pycni.sock"
    launcher = build(str(tmp_path / "bin"), socket_path)
    connections = []
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(socket_path)
    listener.listen(4)
    listener.settimeout(30)

    def take_and_die():
        conn, _ = listener.accept()
        connections.append(conn.recv(1 << 16))
        conn.close()  # as a service killed mid-call: the request taken, no answer

    serving = threading.Thread(target=take_and_die)
    serving.start()
    pod = sandbox.pod()
    run = add_loopback(node, launcher, pod)
    serving.join(timeout=30)
    error = json.loads(run.stdout)
    assert run.returncode == 1 and error["code"] == 11 and "went away" in error["msg"], run.stdout
    listener.settimeout(0.5)
    with pytest.raises(socket.timeout):
        listener.accept()  # no second connection: the ADD is never sent twice
    listener.close()
    assert len(connections) == 1 and b"CNI_COMMAND=ADD" in connections[0]
