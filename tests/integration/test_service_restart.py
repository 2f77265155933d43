"""The pycni service killed in the middle of a burst of ADDs: every pod is added once, or fails cleanly
and its DEL (what a runtime does after a failed ADD) leaves nothing behind; and the service serves
again afterwards. Run in both suite modes: the service here is this test's own."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import pytest

from pycni.node.install import install_launchers, launcher_text
from pycni.plugins import package_root
from tests.helpers import eventually, plugin_env, reservation_files, run_plugin

PODS = 32


def workers_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def running(pid):
    """Alive and not a zombie waiting for whoever inherited it to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_service(socket_path, log_path):
    from pycni.services.cni import spawn

    proc = spawn(socket_path, "", "--workers", "2", log_path=log_path)
    for _ in range(100):
        if len(workers_of(proc.pid)) == 2:
            break
        time.sleep(0.05)
    return proc


@pytest.fixture(params=["python", "compiled"])
def setup(sandbox, node, tmp_path, request):
    """The launchers of both kinds: the Python one, and the compiled one where a C compiler is found."""
    socket_path = str(tmp_path / "run" / "pycni.sock")
    bin_dir = tmp_path / "bin"
    if request.param == "compiled":
        if not shutil.which("cc"):
            pytest.skip("no C compiler")
        install_launchers(str(bin_dir), daemon_socket=socket_path)
        assert open(bin_dir / "bridge", "rb").read(4) == b"\x7fELF"
    else:
        bin_dir.mkdir()
        for plugin_type in ("bridge", "host-local"):
            path = bin_dir / plugin_type
            path.write_text(launcher_text(plugin_type, sys.executable, package_root(), socket_path))
            path.chmod(0o755)
    services = []
    yield socket_path, str(bin_dir), services
    for proc in services:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def conf(tmp_path):
    return {"cniVersion": "1.0.0", "name": "burst", "type": "bridge", "bridge": "cni0", "isGateway": True,
            "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                     "ranges": [[{"subnet": "10.78.0.0/24"}]]}}


def add_pod(node, bin_dir, config, pod, cid):
    env = plugin_env("ADD", cid, pod.path, "eth0", path=bin_dir)
    return pod, cid, run_plugin(node, f"{bin_dir}/bridge", env, json.dumps(config))


def burst_with_a_kill(sandbox, node, bin_dir, config, kill):
    """PODS ADDs at once; `kill()` runs once a few of them are under way. Returns [(pod, cid, run)]."""
    pods = [(sandbox.pod(), f"burst{i:02d}") for i in range(PODS)]
    with ThreadPoolExecutor(max_workers=PODS) as pool:
        futures = [pool.submit(add_pod, node, bin_dir, config, pod, cid) for pod, cid in pods]
        wait(futures, return_when=FIRST_COMPLETED)  # the service has answered one: the others are under way
        pending = sum(not f.done() for f in futures)
        kill()
        assert pending > 0, "the kill came after the burst, not in the middle of it"
        return [f.result() for f in futures]


def settle(node, bin_dir, config, tmp_path, results):
    """What a runtime does: DEL every failed ADD. Then each pod is either added once or left with nothing."""
    added = {}
    for pod, cid, run in results:
        assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr
        if run.ok:
            added[cid] = (pod, run.json["ips"][0]["address"])
            continue
        assert run.json["code"] in (11,), run.stdout  # the service went away during this ADD
        env = plugin_env("DEL", cid, pod.path, "eth0", path=bin_dir)
        assert run_plugin(node, f"{bin_dir}/bridge", env, json.dumps(config)).ok
        assert "UP" not in "".join(str(link["flags"]) for link in pod.link_json() if link["ifname"] == "eth0")
        assert eventually(lambda pod=pod: "eth0" not in [link["ifname"] for link in pod.link_json()], 10)
    store = os.path.join(str(tmp_path / "ipam"), "burst")
    owners = {}
    for name in reservation_files(store):
        with open(os.path.join(store, name)) as f:
            owners[name] = f.read().split()[0]
    assert sorted(owners.values()) == sorted(added), "a reservation for each added pod, and only those"
    addresses = [address for _, address in added.values()]
    assert len(set(addresses)) == len(addresses)
    for cid, (pod, address) in added.items():
        assert address in pod.addresses("eth0"), cid
    host_veths = [link for link in node.link_json() if link.get("linkinfo", {}).get("info_kind") == "veth"]
    assert len(host_veths) == len(added), "no veth left by a failed ADD"
    return added


def served_by_the_service(node, bin_dir, config, sandbox, log_path):
    """An ADD after it all succeeds, and the service's log says the service did it (not the slow path)."""
    pod = sandbox.pod()
    run = run_plugin(node, f"{bin_dir}/bridge", plugin_env("ADD", "after", pod.path, "eth0", path=bin_dir),
                     json.dumps(config))
    assert run.ok, run.stdout
    for _ in range(100):  # the service logs a call just after answering it
        if "containerID=after" in open(log_path).read():
            return True
        time.sleep(0.02)
    return False


def test_a_worker_killed_mid_burst(sandbox, node, tmp_path, setup):
    socket_path, bin_dir, services = setup
    service = start_service(socket_path, str(tmp_path / "service.log"))
    services.append(service)
    victim = workers_of(service.pid)[0]
    results = burst_with_a_kill(sandbox, node, bin_dir, conf(tmp_path), lambda: os.kill(victim, signal.SIGKILL))
    added = settle(node, bin_dir, conf(tmp_path), tmp_path, results)
    print(f"\n{len(added)} of {PODS} added, {PODS - len(added)} failed cleanly")
    for _ in range(100):  # the service replaced its worker
        if len(workers_of(service.pid)) == 2 and victim not in workers_of(service.pid):
            break
        time.sleep(0.05)
    assert victim not in workers_of(service.pid) and len(workers_of(service.pid)) == 2
    assert served_by_the_service(node, bin_dir, conf(tmp_path), sandbox, tmp_path / "service.log")
    assert f"pycni worker {victim} ended (signal 9)" in open(tmp_path / "service.log").read()


def test_the_service_killed_mid_burst_and_started_again(sandbox, node, tmp_path, setup):
    socket_path, bin_dir, services = setup
    service = start_service(socket_path, str(tmp_path / "service.log"))
    services.append(service)
    workers = workers_of(service.pid)
    results = burst_with_a_kill(sandbox, node, bin_dir, conf(tmp_path), lambda: os.kill(service.pid, signal.SIGKILL))
    service.wait(timeout=10)
    added = settle(node, bin_dir, conf(tmp_path), tmp_path, results)
    print(f"\n{len(added)} of {PODS} added, {PODS - len(added)} failed cleanly")
    for _ in range(200):  # the workers finish what they took, then follow their service
        if not any(running(pid) for pid in workers):
            break
        time.sleep(0.05)
    assert not any(running(pid) for pid in workers)
    services.append(start_service(socket_path, str(tmp_path / "service2.log")))  # as systemd restarts it
    assert served_by_the_service(node, bin_dir, conf(tmp_path), sandbox, tmp_path / "service2.log")


def test_a_restart_under_socket_activation_fails_nothing_and_falls_back_for_nothing(sandbox, node, tmp_path, setup):
    """systemd's part played by the test: it holds the listening socket (pycni.socket) and hands it to each
    `pycni daemon` it starts (LISTEN_FDS, fd 3). A restart in the middle of a burst (SIGTERM: the old
    service finishes what it took; the new one takes the rest from the same socket's backlog) fails no
    ADD, and every ADD is served by a service, none by the slow path."""
    import socket as sockets

    socket_path, bin_dir, services = setup
    os.makedirs(os.path.dirname(socket_path), mode=0o700)
    listener = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(1024)

    def activate(log_name):
        log = open(tmp_path / log_name, "wb")
        proc = subprocess.Popen(
            ["bash", "-c", 'exec 3<&"$0"; LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', str(listener.fileno()),
             sys.executable, "-m", "pycni", "daemon", "--socket", socket_path, "--workers", "2"],
            pass_fds=(listener.fileno(),), stdout=subprocess.DEVNULL, stderr=log)
        services.append(proc)
        for _ in range(200):
            if b"serving on" in open(tmp_path / log_name, "rb").read():
                return proc
            time.sleep(0.05)
        raise AssertionError(open(tmp_path / log_name, "rb").read())

    try:
        first = activate("first.log")
        late = [(sandbox.pod(), f"late{i}") for i in range(8)]
        late_results = []

        def restart():
            first.send_signal(signal.SIGTERM)
            time.sleep(0.05)  # the old service has stopped taking calls: these wait in the socket's backlog
            with ThreadPoolExecutor(max_workers=len(late)) as pool:
                futures = [pool.submit(add_pod, node, bin_dir, conf(tmp_path), pod, cid) for pod, cid in late]
                activate("second.log")
                late_results.extend(f.result() for f in futures)

        results = burst_with_a_kill(sandbox, node, bin_dir, conf(tmp_path), restart) + late_results
        first.wait(timeout=60)
        assert all(run.ok for _, _, run in results), [run.stdout for _, _, run in results if not run.ok]
        settle(node, bin_dir, conf(tmp_path), tmp_path, results)
        served = [sum(1 for line in open(tmp_path / name) if "plugin=bridge command=ADD" in line and " code=0 " in line)
                  for name in ("first.log", "second.log")]
        print(f"\nADDs served by the old service {served[0]}, by the new one {served[1]}")
        assert sum(served) == PODS + len(late) and served[1] >= len(late)
    finally:
        listener.close()


def test_links_of_a_service_killed_before_its_deferred_deletions_are_reclaimed_by_gc(sandbox, node, tmp_path,
                                                                                      cnidriver):
    """bandwidth's and bridge's DELs answer first and the service unregisters the idle ifb and the retired veth
    pair after; a service killed with SIGKILL (an OOM kill) in between leaves them behind. Each pod is unplugged
    all the same (its veth down). `pycni gc` finds what is left from the kernel's state (an ifb of the network's
    naming, a bridge port marked retired, whose attachment is gone) and deletes it."""
    from concurrent.futures import ThreadPoolExecutor

    from pycni.host.netlink import RETIRED_ALIAS
    from tests.helpers import Chain

    socket_path = str(tmp_path / "run" / "pycni.sock")
    bin_dir = str(tmp_path / "bin")
    install_launchers(bin_dir, daemon_socket=socket_path, compiled=bool(shutil.which("cc")))
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    conflist = {"cniVersion": "1.0.0", "name": "shaped", "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True,
         "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "ranges": [[{"subnet": "10.79.0.0/24"}]]}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}
    (conf_dir / "shaped.conflist").write_text(json.dumps(conflist))
    chain = Chain(node, cnidriver, bin_dir, str(conf_dir / "shaped.conflist"), str(tmp_path / "cache"))
    shaped = {"bandwidth": {"egressRate": 8_000_000, "egressBurst": 400_000}}
    service = start_service(socket_path, str(tmp_path / "service.log"))

    def retired_veths():
        return [link["ifname"] for link in node.link_json()
                if link.get("ifalias") == RETIRED_ALIAS and link["ifname"].startswith("veth")]

    def ifbs():
        return [link["ifname"] for link in node.link_json() if link["ifname"].startswith("bw")]

    try:
        pods = [(sandbox.pod(), f"shaped-{n}") for n in range(PODS)]
        results = {cid: chain.add(pod, cid, shaped) for pod, cid in pods}
        netns_of = {cid: pod.path for pod, cid in pods}

        def chain_del(cid):  # the chain's plugins in reverse, as libcni does
            answers = []
            for plugin, runtime in ((conflist["plugins"][1], shaped), (conflist["plugins"][0], {})):
                config = {**plugin, "name": "shaped", "cniVersion": "1.0.0", "runtimeConfig": runtime,
                          "prevResult": results[cid]}
                env = plugin_env("DEL", cid, netns_of[cid], "eth0", path=bin_dir)
                answers.append(run_plugin(node, f"{bin_dir}/{plugin['type']}", env, json.dumps(config)))
            return answers

        with ThreadPoolExecutor(PODS) as pool:
            answers = [a for pair in pool.map(chain_del, [cid for _, cid in pods]) for a in pair]
        service.kill()  # as soon as every DEL has its answer: the deletions queued behind them never run
        service.wait(timeout=10)
        assert all(answer.ok for answer in answers), [a.stdout for a in answers if not a.ok]
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(timeout=10)
    left_ifbs, left_veths = ifbs(), retired_veths()
    print(f"left by the killed service: {len(left_ifbs)} of {PODS} ifbs, {len(left_veths)} of {PODS} veth pairs")
    assert left_ifbs and left_veths, "every deferred deletion ran before the kill: nothing to reclaim"
    for pod, _ in pods:  # unplugged at the DEL's answer, deleted or not
        assert all("UP" not in link["flags"] for link in pod.link_json() if link["ifname"] == "eth0")
    # the runtime lists no attachment of this network any more (its sandboxes are not removed yet: the veths
    # are still there to be found)
    gc = node.run(sys.executable, "-m", "pycni", "gc", "--json", "--conf-dir", str(conf_dir), "--bin-dir", bin_dir,
                  "--cache-dir", str(tmp_path / "cache"), "--valid", "another-pod/eth0", check=False, timeout=120)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert ifbs() == [] and retired_veths() == []
    assert all(link["ifname"] != "eth0" for pod, _ in pods for link in pod.link_json())
