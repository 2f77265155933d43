"""The image and the DaemonSet's containers, for real: the image built with podman, the init container
placing static launchers on a stand-in host, the service container serving a libcni chain driven from a
node that holds no Python at all, and the gc and device-plugin containers doing their jobs."""

from __future__ import annotations

import ipaddress
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from pycni.plugins import REGISTRY
from tests.cluster import wait_for
from tests.helpers import PeerServer, eventually, link_namespaces, peer_seen_by, ping, reservation_files, serving
from tests.image import Container, config_map, containers, elf_links_dynamically, host_paths, podman
from tests.sysfs_tree import DevTree

pytestmark = [pytest.mark.image, pytest.mark.skipif(
    bool(os.environ.get("PYCNI_TEST_DAEMON_SOCKET")),
    reason="runs once, in the standalone pass: the image's containers bring their own service")]

NODE_NAME = "node-a"
# the shipped ConfigMap's cluster CIDR, and a node given its first /24 (what the node CIDR allocator hands the
# first node of a cluster): the rendered conflist's subnet lies inside its nonMasqueradeCIDRs
CLUSTER_CIDR = config_map()["cluster-cidr"]
POD_CIDRS = [str(next(ipaddress.ip_network(CLUSTER_CIDR).subnets(new_prefix=24))), "fd00:42::/64"]
FIRST_POD_IPS = [str(next(ipaddress.ip_network(cidr).hosts()) + 1) for cidr in POD_CIDRS]  # after the gateway
ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

API_SERVER = """
import http.server, json, ssl, sys
token, cert, key, node, cidrs = sys.argv[1:6]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer " + token:
            self.send_response(401); self.end_headers(); return
        if self.path != "/api/v1/nodes/" + node:
            self.send_response(404); self.end_headers(); return
        body = json.dumps({"kind": "Node", "spec": {"podCIDR": cidrs.split(",")[0],
                                                    "podCIDRs": cidrs.split(",")}}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class StandInApiServer:
    """The Kubernetes API server's GET of a node, over TLS, with a service account's token and CA."""

    def __init__(self, node, directory) -> None:
        self.account = directory / "serviceaccount"
        self.account.mkdir()
        (self.account / "token").write_text("test-token\n")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(directory / "key.pem"), "-out", str(self.account / "ca.crt")],
                       check=True, capture_output=True)
        self.proc = node.popen(sys.executable, "-c", API_SERVER, "test-token", str(self.account / "ca.crt"),
                               str(directory / "key.pem"), NODE_NAME, ",".join(POD_CIDRS),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


class StandInHost:
    """A node's filesystem as the DaemonSet sees it: a directory per hostPath the manifest names, and what
    a runtime's node has besides (/proc, /sys, the pods' /run/netns), but no Python, no libraries."""

    def __init__(self, root) -> None:
        self.root = root
        for path in [*host_paths().values(), "/proc", "/sys", "/bin"]:
            os.makedirs(self.path(path), exist_ok=True)

    def path(self, inside: str) -> str:
        return os.path.join(str(self.root), inside.lstrip("/"))

    def mounts_of(self, container: dict) -> dict[str, str]:
        """The container's hostPath volumes as podman volumes onto this stand-in host."""
        paths = host_paths()
        mounts = {}
        for mount in container.get("volumeMounts", []):
            if mount["name"] in paths:
                options = ["ro"] if mount.get("readOnly") else []
                options += ["rslave"] if mount.get("mountPropagation") == "HostToContainer" else []
                target = mount["mountPath"] + (":" + ",".join(options) if options else "")
                # the pods' namespaces are the machine's own /run/netns (where `ip netns add` puts them)
                source = paths[mount["name"]] if paths[mount["name"]] == "/run/netns" else self.path(
                    paths[mount["name"]])
                mounts[source] = target
        return mounts


class PythonFreeNode:
    """Runs a command the way a runtime on this host would: chrooted into the stand-in host, in a mount
    namespace of its own that has the node namespace's /proc and /sys and the pods' /run/netns."""

    def __init__(self, node, host: StandInHost) -> None:
        self.node, self.host = node, host

    def run(self, *argv: str, check: bool = True, timeout: float = 60):
        root = str(self.host.root)
        script = (f"mount -t proc proc {root}/proc && mount --rbind /sys {root}/sys && "
                  f"mount --rbind /run/netns {root}/run/netns && exec chroot {root} \"$@\"")
        return self.node.run("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv,
                             check=check, timeout=timeout)


def manifest_command(name: str, env: dict[str, str]) -> list[str]:
    """A container's command with $(VAR) expanded from its environment, as the kubelet does."""
    command = containers()[name]["command"]
    for key, value in env.items():
        command = [part.replace(f"$({key})", value) for part in command]
    return command


def run_init_container(image, node, host: StandInHost, tmp_path) -> None:
    api = StandInApiServer(node, tmp_path)
    try:
        init = containers()["install"]
        assert "securityContext" not in init  # it only writes files: not privileged
        env = {"NODE_NAME": NODE_NAME, "CLUSTER_CIDR": CLUSTER_CIDR}
        mounts = {**host.mounts_of(init), str(api.account): f"{ACCOUNT}:ro"}
        container = Container(image, node, manifest_command("install", env), mounts, privileged=False,
                              env={**env, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                                   "KUBERNETES_SERVICE_PORT": str(api.port)})
        try:
            code = container.wait()
            assert code == 0, container.logs()
        finally:
            container.remove()
    finally:
        api.close()


@pytest.fixture
def host(tmp_path):
    return StandInHost(tmp_path / "host")


def test_the_image_holds_everything_and_no_build_tools(image):
    from pycni import __version__

    script = ("for tool in gcc cc pip pip3; do command -v $tool >/dev/null && echo has $tool; done; "
              "for path in /wheels /src /etc/pip.conf /mnt/*; do [ -e $path ] && echo has $path; done; "
              "python3 -c 'import grpc, pyroute2, click, jsonschema, prometheus_client, sys; "
              "sys.path.append(\"/usr/lib/python3/dist-packages\"); import nftables' && "
              "pycni --version && conntrack --version >/dev/null && echo ok")
    done = podman("run", "--rm", "--network", "none", image, "sh", "-c", script)
    assert done.stdout.strip().splitlines() == [f"pycni, version {__version__}", "ok"], done.stdout
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"image size: {size / 1e6:.0f} MB")


def test_init_container_places_static_launchers_atomically(image, sandbox, node, host, tmp_path):
    bin_dir = host.path("/opt/cni/bin")
    with open(os.path.join(bin_dir, "other-plugin"), "w") as f:
        f.write("#!/bin/sh\necho another add-on's plugin\n")
    with open(os.path.join(bin_dir, "bridge"), "w") as f:
        f.write("#!/bin/sh\necho an older bridge\n")
    older = open(os.path.join(bin_dir, "bridge"), "rb")  # a runtime that exec'd the old one meanwhile
    started = time.monotonic()
    run_init_container(image, node, host, tmp_path)
    print(f"init container: {time.monotonic() - started:.1f} s")
    assert older.read() == b"#!/bin/sh\necho an older bridge\n"  # renamed over, never rewritten in place
    older.close()
    assert sorted(os.listdir(bin_dir)) == sorted([*REGISTRY, "other-plugin"])
    for plugin_type in REGISTRY:
        path = os.path.join(bin_dir, plugin_type)
        assert os.stat(path).st_mode & 0o777 == 0o755
        assert not elf_links_dynamically(path), f"{path} needs a dynamic loader"
    conflist = json.loads(open(host.path("/etc/cni/net.d/10-k8s-pod-network.conflist")).read())
    bridge = conflist["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": cidr}] for cidr in POD_CIDRS]  # from the API server
    assert bridge["nonMasqueradeCIDRs"] == [CLUSTER_CIDR]
    # a second run (a DaemonSet update) replaces the same files and adds nothing
    inode = os.stat(os.path.join(bin_dir, "bridge")).st_ino
    (tmp_path / "again").mkdir()
    run_init_container(image, node, host, tmp_path / "again")
    assert os.stat(os.path.join(bin_dir, "bridge")).st_ino != inode
    assert sorted(os.listdir(bin_dir)) == sorted([*REGISTRY, "other-plugin"])


class Deployment:
    """A node after the DaemonSet started: the init container's files, and the service container that
    start_service() (re)starts as the kubelet does."""

    def __init__(self, image, node, host: StandInHost) -> None:
        self.image, self.node, self.host = image, node, host
        self.services: list[Container] = []

    def start_service(self) -> Container:
        container = Container(self.image, self.node, manifest_command("service", {}),
                              self.host.mounts_of(containers()["service"]))
        self.services.append(container)
        assert serving(self.host.path("/run/pycni/pycni.sock")), f"the service container did not serve: " \
            f"{container.logs()}"
        return container

    def remove(self) -> None:
        for container in self.services:
            container.remove()


@pytest.fixture
def deployed(image, sandbox, node, host, tmp_path):
    run_init_container(image, node, host, tmp_path)
    shutil.copy(os.path.join(os.path.dirname(__file__), "..", "libcni", "cnidriver"), host.path("/bin/cnidriver"))
    deployment = Deployment(image, node, host)
    try:
        deployment.start_service()
        yield deployment
    finally:
        deployment.remove()


def drive(runtime: PythonFreeNode, verb: str, pod, container_id: str, caps: dict | None = None):
    argv = ["/bin/cnidriver", "-bin", "/opt/cni/bin", "-cache", "/var/lib/cni", "-conf",
            "/etc/cni/net.d/10-k8s-pod-network.conflist", "-id", container_id, "-ifname", "eth0",
            "-netns", pod.path]
    if caps:
        argv += ["-caps", json.dumps(caps)]
    done = runtime.run(*argv, verb, check=False, timeout=120)
    return done.returncode, json.loads(done.stdout)


def test_a_chain_through_the_service_container_from_a_node_with_no_python(deployed, sandbox, node, host):
    for _, _, files in os.walk(str(host.root)):
        assert not any(name.startswith("python") or name.endswith(".so") for name in files)
    runtime = PythonFreeNode(node, host)
    client = sandbox.namespace("client")
    link_namespaces(node, client, "uplink", "eth0", ["192.168.77.1/24"], ["192.168.77.2/24"])
    pod = sandbox.pod()
    caps = {"portMappings": [{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 400_000, "egressRate": 8_000_000,
                          "egressBurst": 400_000}}
    started = time.monotonic()
    code, result = drive(runtime, "add", pod, "pod-a", caps)
    print(f"chain ADD through the service container: {(time.monotonic() - started) * 1000:.0f} ms")
    assert code == 0, result
    address = result["ips"][0]["address"].split("/")[0]
    assert address == FIRST_POD_IPS[0]
    assert ping(node, address)
    with PeerServer(pod, 8080):
        assert peer_seen_by(client, "192.168.77.1", 30080) is not None  # the hostPort, through nftables
    host_veth = next(i["name"] for i in result["interfaces"] if "sandbox" not in i and i["name"] != "cni0")
    assert "tbf" in node.run("tc", "qdisc", "show", "dev", host_veth).stdout
    assert reservation_files(host.path("/var/lib/cni/networks/k8s-pod-network")) == FIRST_POD_IPS
    # the pod's exemption from masquerade is the cluster CIDR alone (its subnet lies inside it)
    exempt = node.run("nft", "list", "set", "inet", "pycni_masq", "exempt4").stdout
    assert f"{address} . {CLUSTER_CIDR}" in " ".join(exempt.split()) and "/24" not in exempt
    code, out = drive(runtime, "check", pod, "pod-a", caps)
    assert code == 0, out
    code, out = drive(runtime, "del", pod, "pod-a", caps)
    assert code == 0, out
    # unplugged at the answer (down), unregistered by the service right after
    assert all("UP" not in link["flags"] for link in pod.link_json() if link["ifname"] == "eth0")
    assert eventually(lambda: [link["ifname"] for link in pod.link_json()] == ["lo"], 10)
    assert reservation_files(host.path("/var/lib/cni/networks/k8s-pod-network")) == []


def test_no_service_answers_error_11_then_the_next_add_succeeds(deployed, sandbox, node, host):
    from pycni.services.cni import SERVICE_WAIT_SECONDS

    runtime = PythonFreeNode(node, host)
    pod = sandbox.pod()
    for container in deployed.services:
        container.kill()
    started = time.monotonic()
    code, out = drive(runtime, "add", pod, "pod-b")
    waited = time.monotonic() - started
    print(f"ADD with the service down answered in {waited:.1f} s (the launcher waits {SERVICE_WAIT_SECONDS} s)")
    assert code == 1 and out["code"] == 11, out
    assert "/run/pycni/pycni.sock" in out["details"] and "service" in out["error"]
    assert [link["ifname"] for link in pod.link_json()] == ["lo"]  # nothing was done
    deployed.start_service()  # the kubelet restarts the container
    code, result = drive(runtime, "add", pod, "pod-b")
    assert code == 0, result
    assert drive(runtime, "del", pod, "pod-b")[0] == 0


def test_the_gc_container_reclaims_a_pod_whose_netns_is_gone(deployed, image, sandbox, node, host):
    runtime = PythonFreeNode(node, host)
    kept, gone = sandbox.pod(), sandbox.pod()
    assert drive(runtime, "add", kept, "kept")[0] == 0
    assert drive(runtime, "add", gone, "gone")[0] == 0
    networks = host.path("/var/lib/cni/networks/k8s-pod-network")
    assert len(reservation_files(networks)) == 4
    sandbox.remove(gone)  # the runtime lost the pod without a DEL
    gc = containers()["gc"]
    assert gc["command"][:3] == ["pycni", "gc", "--every"]
    container = Container(image, node, gc["command"][:2], host.mounts_of(gc))  # one pass, not every 600 s
    try:
        assert container.wait() == 0, container.logs() + deployed.services[-1].logs()
    finally:
        container.remove()
    assert reservation_files(networks) == FIRST_POD_IPS  # the kept pod's
    assert os.listdir(host.path("/var/lib/cni/results")) == ["k8s-pod-network-kept-eth0"]
    assert drive(runtime, "del", kept, "kept")[0] == 0


def test_the_device_plugin_container_registers_with_the_kubelet(image, sandbox, node, tmp_path):
    from pycni.kubelet import deviceplugin_pb2 as api
    from pycni.kubelet.standin import FakeKubelet

    plugin_dir = tempfile.mkdtemp(prefix="dp-")  # short: socket paths must fit in 108 bytes
    kubelet = FakeKubelet(plugin_dir)
    config = tmp_path / "config"
    config.mkdir()
    (config / "devices.json").write_text(json.dumps({"resources": [
        {"resourceName": "pycni.io/tun", "type": "tun", "count": 3}]}))
    pod_resources = tmp_path / "pod-resources"
    pod_resources.mkdir()
    DevTree(tmp_path / "dev").node("net/tun")  # the node's /dev, as the container sees it at /host/dev
    spec = containers()["device-plugin"]
    mounts = {plugin_dir: "/var/lib/kubelet/device-plugins", str(pod_resources): "/var/lib/kubelet/pod-resources",
              str(tmp_path / "dra"): "/var/lib/kubelet/plugins/pycni.io:ro",
              str(tmp_path / "devinfo"): "/var/run/k8s.cni.cncf.io/devinfo/dp", str(tmp_path / "run"): "/run/pycni",
              str(config): "/etc/pycni:ro", str(tmp_path / "dev"): "/host/dev:ro",
              str(tmp_path / "cdi"): "/var/run/cdi"}
    for source in mounts:
        os.makedirs(source, exist_ok=True)
    assert {m["mountPath"] for m in spec["volumeMounts"]} == {t.split(":")[0] for t in mounts.values()}
    container = Container(image, node, spec["command"], mounts)
    try:
        request, _ = kubelet.next_registration(timeout=60)
        assert request.resource_name == "pycni.io/tun" and request.version == "v1beta1"
        channel, stub = kubelet.plugin(request.endpoint)
        with channel:
            listed = next(iter(stub.ListAndWatch(api.Empty(), timeout=10)))
            assert {d.ID: d.health for d in listed.devices} == {f"tun-{i}": "Healthy" for i in range(3)}
            allocated = stub.Allocate(api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=["tun-1"])]), timeout=10)
            assert [d.host_path for d in allocated.container_responses[0].devices] == ["/dev/net/tun"]
        seconds, code = container.stop(grace=30)
        print(f"device-plugin: stopped {seconds:.2f} s after SIGTERM, exit {code}")
        assert code in (0, 143), container.logs()  # 137: killed at the end of the grace period
    finally:
        container.remove()
        kubelet.stop()
        shutil.rmtree(plugin_dir, ignore_errors=True)


def test_the_dra_container_publishes_the_shipped_configmaps_devices_and_prepares_a_claim(image, node, tmp_path):
    """The DaemonSet's `dra` container as shipped (command, environment, mounts) with the shipped ConfigMap's
    devices.json: in-cluster configuration from a mounted service account, a stand-in API server in the node
    namespace, a stand-in kubelet on the registration and DRA sockets."""
    from tests.apiserver import TOKEN, StandinAPI, node_object
    from tests.dra import Kubelet, claim, result, valid_spec

    spec = containers()["dra"]
    short = tempfile.mkdtemp(prefix="dra-")  # the kubelet's paths are short: socket paths must fit in 108 bytes
    config, account = tmp_path / "config", tmp_path / "account"
    for directory in (config, account):
        directory.mkdir()
    (config / "devices.json").write_text(config_map()["devices.json"])
    api = StandinAPI(node.name, "127.0.0.1", 6443, str(tmp_path))
    api.put(node_object(NODE_NAME, [], ["192.0.2.10"]))
    api.start()
    (account / "token").write_text(TOKEN)
    shutil.copy(api.ca, account / "ca.crt")
    DevTree(tmp_path / "dev").node("net/tun")
    mounts = {f"{short}/plugin": "/var/lib/kubelet/plugins/pycni.io",
              f"{short}/registry": "/var/lib/kubelet/plugins_registry",
              str(tmp_path / "pod-resources"): "/var/lib/kubelet/pod-resources", str(config): "/etc/pycni:ro",
              str(tmp_path / "dev"): "/host/dev:ro", str(tmp_path / "cdi"): "/var/run/cdi"}
    for source in mounts:
        os.makedirs(source, exist_ok=True)
    assert {m["mountPath"] for m in spec["volumeMounts"]} == {t.split(":")[0] for t in mounts.values()}
    env = {"NODE_NAME": NODE_NAME, "NODE_IP": "192.0.2.10"}
    container = Container(image, node, manifest_command("dra", env), {**mounts, str(account): f"{ACCOUNT}:ro"},
                          env={**env, "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"})
    try:
        assert wait_for(lambda: len(api.pool("pycni.io", NODE_NAME)[1]) == 64, 60), container.logs()
        devices = {d["name"]: d["attributes"] for d in api.pool("pycni.io", NODE_NAME)[1]}
        assert devices["tun-tun-0"] == {"resource": {"string": "pycni.io/tun"}, "type": {"string": "tun"},
                                        "id": {"string": "tun-0"}, "healthy": {"bool": True},
                                        "numaNode": {"int": -1}, "path": {"string": "/dev/net/tun"}}
        uid = "5b0e2f4c-6a1d-4c3e-9f8a-7d2b1e0c9a64"
        api.put_claim(claim("vpn", uid, [result("tun", "pycni.io", "tun-tun-3", pool=NODE_NAME)]))
        kubelet = Kubelet(pathlib.Path(short) / "registry", "pycni.io")
        info = kubelet.register(timeout=60)
        assert info.endpoint == "/var/lib/kubelet/plugins/pycni.io/dra.sock"  # the same path on the node
        answer = kubelet.call(f"{short}/plugin/dra.sock", "Prepare", [("vpn", uid)])[uid]
        assert answer.error == "" and [list(d.cdi_device_ids) for d in answer.devices] == \
            [[f"pycni.io/claim={uid}-tun-tun-3"]]
        spec_file = valid_spec(tmp_path / "cdi" / f"pycni-dra-pycni.io-{uid}.json")
        assert spec_file["devices"][0]["containerEdits"]["deviceNodes"] == [
            {"path": "/dev/net/tun", "hostPath": "/dev/net/tun", "permissions": "rwm"}]
        seconds, code = container.stop(grace=30)
        print(f"dra: stopped {seconds:.2f} s after SIGTERM, exit {code}")
        assert code in (0, 143), container.logs()
        assert "Traceback" not in container.logs(), container.logs()
    finally:
        container.remove()
        api.stop()
        shutil.rmtree(short, ignore_errors=True)


def test_a_rolling_update_fails_no_pod_start(deployed, sandbox, node, host):
    """The DaemonSet surges: the new pod's service starts beside the old one, takes the socket's path over and
    turns Ready (its readiness probe's file), then the kubelet stops the old pod. Pods are started in a loop the
    whole time, as a busy node's runtime would: every ADD succeeds, none waits out the launcher's 5 s."""
    import threading

    runtime = PythonFreeNode(node, host)
    socket_path = host.path("/run/pycni/pycni.sock")
    old = deployed.services[-1]
    results: list[tuple[str, object, int, dict, float]] = []
    stop = threading.Event()

    def start_pods() -> None:
        while not stop.is_set() and len(results) < 300:  # bounded in count, and stopped below
            pod, name = sandbox.pod(), f"update-{len(results)}"
            started = time.monotonic()
            code, out = drive(runtime, "add", pod, name)
            results.append((name, pod, code, out, time.monotonic() - started))

    def pods_started_after(count: int) -> None:
        deadline = time.monotonic() + 120
        while len(results) < count and loop.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    loop = threading.Thread(target=start_pods)
    loop.start()
    try:
        pods_started_after(3)
        inode = os.stat(socket_path).st_ino
        new = deployed.start_service()  # the surge pod
        probe = containers()["service"]["readinessProbe"]["exec"]["command"]
        deadline = time.monotonic() + 60
        while new.exec(*probe).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert new.exec(*probe).returncode == 0, new.logs()
        assert os.stat(socket_path).st_ino != inode  # the path is the new service's
        before = len(results)
        seconds, code = old.stop(grace=30)  # the kubelet stops the old pod once the new one is Ready
        print(f"old service stopped in {seconds:.2f} s (exit {code}) with {len(results) - before} pods started "
              f"meanwhile")
        assert code in (0, 143), old.logs()  # it ended on SIGTERM, not killed at the end of the grace period
        pods_started_after(len(results) + 3)  # and pods go on starting against the new service alone
    finally:
        stop.set()
        loop.join(timeout=300)
    failed = [(name, out) for name, _, code, out, _ in results if code != 0]
    assert not failed, failed  # none failed, none with error 11
    print(f"{len(results)} pods started during the update, slowest ADD "
          f"{max(seconds for *_, seconds in results) * 1000:.0f} ms")
    for name, pod, *_ in results:
        code, out = drive(runtime, "del", pod, name)
        assert code == 0, out


@pytest.mark.parametrize("name", ["service", "gc"])
def test_every_container_stops_on_sigterm_at_once(image, sandbox, node, host, name):
    """A pod's deletion or rollout waits for its slowest container: each ends on SIGTERM itself (a shell as PID 1
    would ignore it and be killed at the end of the grace period). The device plugin's: in its own test."""
    container = Container(image, node, containers()[name]["command"], host.mounts_of(containers()[name]))
    try:
        deadline = time.monotonic() + 60
        ready = {"service": "serving on", "gc": "hostPort entries removed"}[name]
        while ready not in container.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready in container.logs(), container.logs()
        seconds, code = container.stop(grace=30)
        print(f"{name}: stopped {seconds:.2f} s after SIGTERM, exit {code}")
        assert code in (0, 143), container.logs()  # 137: killed at the end of the grace period
    finally:
        container.remove()


def test_the_routes_container_routes_the_other_nodes_with_the_pods_service_account(image, sandbox, cni_bin,
                                                                                    cnidriver, tmp_path, host):
    """The DaemonSet's `routes` container, as shipped (its command, environment, capabilities and host
    paths), on node a of a cluster of namespaces: in-cluster configuration from a mounted service account,
    the stand-in API server behind the node's underlay, the conflist the init container renders."""
    from tests.apiserver import TOKEN
    from tests.cluster import API_HOST, API_PORT, CLUSTER_CIDRS, Cluster

    spec = containers()["routes"]
    assert "privileged" not in spec.get("securityContext", {})
    capabilities = tuple(spec["securityContext"]["capabilities"]["add"])
    cluster = Cluster(sandbox, cni_bin, cnidriver, tmp_path)
    try:
        for name in "bc":
            cluster.start_agent(name)
        a = cluster.nodes["a"]
        account = tmp_path / "account"
        account.mkdir()
        (account / "token").write_text(TOKEN)
        shutil.copy(cluster.api.ca, account / "ca.crt")
        conf_dir = host.path(host_paths()["cni-conf"])
        os.makedirs(conf_dir, exist_ok=True)
        shutil.copy(a.conflist, os.path.join(conf_dir, "10-k8s-pod-network.conflist"))
        env = {"NODE_NAME": "a", "CLUSTER_CIDR": config_map()["cluster-cidr"]}
        assert env["CLUSTER_CIDR"] == CLUSTER_CIDRS[0]  # the shipped ConfigMap's, IPv4 only
        container = Container(image, a.ns, manifest_command("routes", env),
                              {**host.mounts_of(spec), str(account): f"{ACCOUNT}:ro"}, privileged=False,
                              env={**env, "KUBERNETES_SERVICE_HOST": API_HOST,
                                   "KUBERNETES_SERVICE_PORT": str(API_PORT)}, capabilities=capabilities)
        try:
            def routed() -> bool:
                routes = {r["dst"]: r for r in a.routes()}
                return routes.get("10.244.2.0/24", {}).get("dev") == "eth0" and \
                    routes.get("10.244.3.0/24", {}).get("dev") == "pycni.vxlan" and len(a.fdb()) == 1
            assert wait_for(routed, 60), container.logs()
            assert cluster.api.nodes["a"]["metadata"]["annotations"]["pycni.io/vtep-mac"]
            with open(os.path.join(conf_dir, "10-k8s-pod-network.conflist")) as f:
                assert json.load(f)["plugins"][0]["mtu"] == 1450
            state_dir = host.path(host_paths()["run-pycni"])
            assert os.path.exists(os.path.join(state_dir, "routes.json"))
            assert os.path.exists(os.path.join(host.path(host_paths()["pycni-state"]), "routes-nodes.json"))
            assert cluster.synced(names="bc")
            seconds, code = container.stop(grace=30)
            print(f"routes: stopped {seconds:.2f} s after SIGTERM, exit {code}")
            assert code in (0, 143), container.logs()
            assert routed(), "the routes stay when the agent stops"
        finally:
            container.remove()
    finally:
        cluster.close()
