"""The pycni service's Prometheus endpoint and call log, scraped with a real HTTP client while pods are
added, fail and are deleted in a throwaway node namespace (the service runs inside it)."""

import json
import os
import sys
import time

import pytest

from pycni.node.install import render_conflist
from tests.helpers import reservation_files

pytest.importorskip("prometheus_client")

PORT = 9750
SHIPPED = os.path.join(os.path.dirname(__file__), "..", "..", "conf", "10-k8s-pod-network.conflist")
SCRAPE = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{PORT}/metrics').read().decode())"


@pytest.fixture
def service(node, tmp_path):
    """A pycni service inside the node namespace with metrics on, launchers that talk to it, a conflist."""
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    with open(SHIPPED) as f:
        conflist = json.loads(render_conflist(f.read(), ["10.245.0.0/24"]))
    conflist["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "ipam")
    (conf_dir / "k8s.conflist").write_text(json.dumps(conflist))
    socket_path = str(tmp_path / "run" / "pycni.sock")
    log_path = tmp_path / "service.log"
    proc = node.popen(sys.executable, "-m", "pycni", "daemon", "--socket", socket_path, "--metrics-address",
                      f"127.0.0.1:{PORT}", "--conf-dir", str(conf_dir), "--cache-dir", str(tmp_path / "cache"),
                      "--log-format", "json", stdout=open(os.devnull, "w"), stderr=open(log_path, "w"))
    for _ in range(200):
        if os.path.exists(socket_path):
            break
        time.sleep(0.05)
    bin_dir = str(tmp_path / "bin")
    node.run(sys.executable, "-m", "pycni", "install", "--bin-dir", bin_dir, "--daemon-socket", socket_path)
    try:
        yield {"bin": bin_dir, "conf": str(conf_dir), "cache": str(tmp_path / "cache"), "log": log_path,
               "ipam": str(tmp_path / "ipam" / conflist["name"])}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scrape(node) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = node.run(sys.executable, "-c", SCRAPE).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_counters_histograms_and_state_gauges_follow_real_pods(sandbox, node, service):
    def run(verb, pod, cid, *extra, check=True):
        done = node.run(sys.executable, "-m", "pycni", "run", verb, "--bin-dir", service["bin"], "--conf-dir",
                        service["conf"], "--cache-dir", service["cache"], "--netns", pod.path, "--container-id", cid,
                        *extra, check=False)
        assert not check or done.returncode == 0, done.stdout + done.stderr
        return done

    web, db = sandbox.pod(), sandbox.pod()
    run("add", web, "web", "--port", "8080:80/tcp", "--annotation", "kubernetes.io/ingress-bandwidth=10M")
    run("add", db, "db")
    failed = run("add", db, "db2", "--ip", "10.99.0.1", "--json", check=False)  # outside the pool
    assert failed.returncode != 0
    failed_code = json.loads(failed.stdout)["code"]
    m = scrape(node)
    assert value(m, "pycni_plugin_requests_total", plugin="bridge", command="ADD", code="0") == 2
    assert value(m, "pycni_plugin_requests_total", plugin="portmap", command="ADD", code="0") == 2
    assert value(m, "pycni_plugin_requests_total", plugin="bandwidth", command="ADD", code="0") == 2
    bridge_failures = {k: v for k, v in m.items()
                       if k[0] == "pycni_plugin_requests_total" and ("plugin", "bridge") in k[1]
                       and ("code", "0") not in k[1]}
    assert sum(bridge_failures.values()) == 1, bridge_failures  # the failed ADD, counted under its code
    assert value(m, "pycni_plugin_requests_total", plugin="bridge", command="ADD", code=str(failed_code)) == 1
    assert value(m, "pycni_plugin_request_duration_seconds_count", plugin="bridge", command="ADD") == 3
    assert value(m, "pycni_plugin_request_duration_seconds_sum", plugin="bridge", command="ADD") > 0
    used = value(m, "pycni_ipam_addresses", network="k8s-pod-network", range_set="10.245.0.1-10.245.0.254",
                 state="used")
    assert used == len(reservation_files(service["ipam"])) == 2  # the gauge is the store
    assert value(m, "pycni_ipam_addresses", network="k8s-pod-network", range_set="10.245.0.1-10.245.0.254",
                 state="free") == 251
    assert value(m, "pycni_hostport_mappings") == 1
    assert value(m, "pycni_shaped_pods") == 1
    # a "reboot" lost db's cached result: only GC can free its address, and the metrics say it did
    os.unlink(os.path.join(service["cache"], "results", "k8s-pod-network-db-eth0"))
    run("gc", web, "", "--valid", "web/eth0")
    m = scrape(node)
    assert value(m, "pycni_gc_released_addresses_total", network="k8s-pod-network") == 1
    assert value(m, "pycni_plugin_requests_total", plugin="bridge", command="GC", code="0") == 1
    run("del", web, "web")
    run("del", db, "db")
    m = scrape(node)
    assert value(m, "pycni_plugin_requests_total", plugin="bridge", command="DEL", code="0") == 2
    assert value(m, "pycni_ipam_addresses", network="k8s-pod-network", range_set="10.245.0.1-10.245.0.254",
                 state="used") == 0 == len(reservation_files(service["ipam"]))
    assert value(m, "pycni_hostport_mappings") == 0 and value(m, "pycni_shaped_pods") == 0

    lines = [json.loads(line) for line in service["log"].read_text().splitlines() if line.startswith("{")]
    adds = [entry for entry in lines if entry["plugin"] == "bridge" and entry["command"] == "ADD"]
    assert len(adds) == 3
    for entry in adds:
        assert {"time", "plugin", "command", "containerID", "ifname", "netns", "code", "durationMs"} <= set(entry)
    assert {e["containerID"] for e in adds} == {"web", "db", "db2"}
    bad = next(e for e in adds if e["containerID"] == "db2")
    assert bad["code"] != 0 and bad["error"]
    assert not any("ipam" in json.dumps(e) for e in lines)  # the config (which may hold secrets) is not logged


class BusyKernel:
    """Keeps the kernel busy the way a busy node does: namespaces full of devices made and removed, in a loop
    bounded in count and stopped by close(). Deleting a namespace with many devices holds the kernel's locks
    that a refresh's dumps wait on."""

    def __init__(self, sandbox, pairs: int = 150, rounds: int = 200) -> None:
        import threading

        self.sandbox, self.stop, self.rounds_done = sandbox, threading.Event(), 0
        self.batch = "".join(f"link add busy{i} type veth peer name peer{i}\n" for i in range(pairs))
        self.thread = threading.Thread(target=self._churn, args=(rounds,), daemon=True)
        self.thread.start()

    def _churn(self, rounds: int) -> None:
        import subprocess

        for number in range(rounds):
            if self.stop.is_set():
                return
            name = f"{self.sandbox.prefix}-busy{number % 2}"
            subprocess.run(["ip", "netns", "add", name], capture_output=True)
            made = subprocess.run(["ip", "-n", name, "-batch", "-"], input=self.batch, text=True, capture_output=True)
            assert made.returncode == 0, made.stderr
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            self.rounds_done += 1

    def close(self) -> None:
        import subprocess

        self.stop.set()
        self.thread.join(timeout=60)
        for number in (0, 1):
            subprocess.run(["ip", "netns", "del", f"{self.sandbox.prefix}-busy{number}"], capture_output=True)


@pytest.fixture
def busy_kernel(sandbox):
    busy = BusyKernel(sandbox)
    try:
        yield busy
    finally:
        busy.close()


def test_status_watch_repeats_until_interrupted(node, tmp_path, busy_kernel):
    import signal
    import subprocess
    import threading

    proc = node.popen(sys.executable, "-m", "pycni", "status", "--watch", "0.2", "--json", "--conf-dir", str(tmp_path),
                      "--cache-dir", str(tmp_path / "cache"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60  # on a busy kernel a refresh may take seconds: wait for two of them
    while "".join(lines).count('"networks"') < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "".join(lines).count('"networks"') >= 2, (lines, proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(0.3)  # Ctrl-C comes at any moment: likely within a refresh waiting on the busy kernel
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    reader.join(timeout=10)
    assert proc.returncode == 0
    print(f"busy kernel: {busy_kernel.rounds_done} namespaces of 300 devices made and removed meanwhile")


def test_status_watch_ends_on_sigterm_during_a_refresh(node, tmp_path, busy_kernel):
    import signal
    import subprocess

    proc = node.popen(sys.executable, "-m", "pycni", "status", "--watch", "0.2", "--conf-dir", str(tmp_path),
                      "--cache-dir", str(tmp_path / "cache"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "pycni status, every 0.2s" in out


def test_status_interrupted_during_the_kernel_probe_exits_at_once(node, tmp_path, busy_kernel):
    """Ctrl-C while the kernel probe (a forked child) runs: exit 0 at once, the child killed and reaped, no
    pipe of the caller's held open (the race that once made the test above wait past its 10 s)."""
    import signal
    import subprocess

    proc = node.popen(sys.executable, "-m", "pycni", "status", "--watch", "0.2", "--json", "--conf-dir", str(tmp_path),
                      "--cache-dir", str(tmp_path / "cache"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = f"/proc/{proc.pid}/task/{proc.pid}/children"  # `ip netns exec` execs: the PID is pycni's
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with open(children) as f:
            if f.read().split():  # the probe is running
                break
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err, err
