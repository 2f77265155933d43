"""`pycni dra`, pycni's own resources as the DRA driver `pycni.io`, in a node namespace whose NICs are real links
(an SR-IOV PF with VFs laid out in a sysfs tree, a plain interface, the node's uplink): its ResourceSlice pool on
a stand-in API server (HTTPS, the real JSON), a new generation when a link loses its carrier, and a claim
allocated by attribute prepared for a stand-in kubelet over the real gRPC sockets."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest
import yaml

grpc = pytest.importorskip("grpc")
pytest.importorskip("kubernetes")

from pycni.services.dra.names import device_name  # noqa: E402
from tests.apiserver import StandinAPI, node_object  # noqa: E402
from tests.devices import veth  # noqa: E402
from tests.dra import Kubelet, claim, result, valid_spec  # noqa: E402
from tests.helpers import eventually  # noqa: E402
from tests.image import manifest  # noqa: E402
from tests.integration.test_sriov import VFS, run, sriov_node  # noqa: E402, F401 - the fixture

pytestmark = pytest.mark.netns
DRIVER = "pycni.io"
VF = "intel.com/vf"
CONFIG = {"resourceList": [{"resourceName": "vf", "selectors": {"pfNames": ["ens1f0"], "drivers": ["iavf"]}}],
          "resources": [{"resourceName": "pycni.io/nic", "type": "netdev", "selector": {"ifNames": ["eth*"]}},
                        {"resourceName": "pycni.io/tun", "type": "tun", "count": 2}]}


@pytest.fixture
def driver(node, sriov_node, tmp_path):  # noqa: F811 - the fixture imported above
    """The driver, with a pod holding VF 1 through the device plugin (the stand-in kubelet's PodResources)."""
    from pycni.kubelet.standin import PodDevices, PodResourcesStub, serve_pod_resources

    veth(node, "eth1")
    pod_resources = PodResourcesStub([PodDevices("team", "dpdk-0", "app", VF, [VFS[1]])])
    pod_resources_socket = str(tmp_path / "pod-resources.sock")
    pod_resources_server = serve_pod_resources(pod_resources_socket, pod_resources)
    api = StandinAPI(node.name, "127.0.0.1", 16444, str(tmp_path))
    api.put(node_object("node-a", [], ["192.0.2.10"]))
    api.start()
    config = tmp_path / "resources.json"
    config.write_text(json.dumps(CONFIG))
    dirs = {name: tmp_path / name for name in ("plugins", "registry", "cdi")}
    account = tmp_path / "serviceaccount"
    in_a_pod = api.service_account(str(account))  # as the DaemonSet runs it: the pod's service account
    process = node.popen(sys.executable, "-m", "pycni", "dra", "--config", str(config), "--node-name", "node-a",
                         "--service-account", str(account),
                         "--plugin-dir", str(dirs["plugins"]), "--registry-dir", str(dirs["registry"]),
                         "--cdi-dir", str(dirs["cdi"]), "--sysfs-root", str(sriov_node.root),
                         "--dev-root", str(sriov_node.root.parent / "dev"),
                         "--pod-resources-socket", pod_resources_socket,
                         stdout=subprocess.DEVNULL, stderr=open(tmp_path / "dra.log", "ab"),
                         env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | in_a_pod)
    yield api, dirs, process, tmp_path, pod_resources
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)
    pod_resources_server.stop(grace=None)
    api.stop()


def readme_claim() -> list[dict]:
    text = (pathlib.Path(__file__).parent.parent.parent / "README.md").read_text()
    match = re.search(r"<!-- example: dra-claim -->\n```yaml\n(.*?)```", text, re.S)
    assert match, "no dra-claim example in the README"
    return [d for d in yaml.safe_load_all(match.group(1)) if d]


def selects(expression: str, attributes: dict) -> bool:
    """A CEL selector that is a conjunction of `device.attributes["pycni.io"].<name> == <literal>` (and
    `device.driver == ...`), evaluated on one device's attributes; anything else in it fails the test."""
    terms = [t.strip() for t in expression.split("&&")]
    for term in terms:
        match = re.fullmatch(r'device\.attributes\["pycni\.io"\]\.(\w+) == (.+)', term) or \
            re.fullmatch(r"device\.(driver) == (.+)", term)
        assert match, f"not a term this test can evaluate: {term}"
        name, literal = match.groups()
        have = DRIVER if name == "driver" and term.startswith("device.driver") else attributes.get(name)
        if have != json.loads(literal):
            return False
    return True


def device_class(name: str) -> str:
    """A shipped DeviceClass's CEL expression (its one selector), with the `healthy` term made an equality."""
    (found,) = [d for d in manifest() if d["kind"] == "DeviceClass" and d["metadata"]["name"] == name]
    (selector,) = found["spec"]["selectors"]
    return selector["cel"]["expression"].replace('device.attributes["pycni.io"].healthy',
                                                 'device.attributes["pycni.io"].healthy == true')


def by_name(devices: list[dict]) -> dict[str, dict]:
    return {d["name"]: {k: next(iter(v.values())) for k, v in d.get("attributes", {}).items()} for d in devices}


def test_the_nodes_devices_published_by_attribute_kept_current_and_prepared(node, driver, start,
                                                                           sriov_node):  # noqa: F811
    api, dirs, process, tmp_path, pod_resources = driver
    vf0, vf1 = device_name("vf", VFS[0]), device_name("vf", VFS[1])
    eth1, tun0 = "nic-eth1", "tun-tun-0"
    wanted = {vf0, eth1, tun0, "tun-tun-1"}  # VF 1 is a device plugin pod's: one owner per device
    assert eventually(lambda: set(by_name(api.pool(DRIVER, "node-a")[1])) == wanted, 30), \
        sorted(by_name(api.pool(DRIVER, "node-a")[1]))
    pod_resources.pods.clear()  # given back: published again
    wanted.add(vf1)
    assert eventually(lambda: set(by_name(api.pool(DRIVER, "node-a")[1])) == wanted, 15), \
        sorted(by_name(api.pool(DRIVER, "node-a")[1]))
    generation, devices = api.pool(DRIVER, "node-a")
    published = by_name(devices)
    # the uplink (eth0: the node's address and default route) and the vfio VFs are not there
    assert not [d for d in published.values() if d.get("ifName") == "eth0"]
    assert published[vf0] == {"resource": VF, "type": "netDevice", "id": VFS[0], "healthy": True, "numaNode": 1,
                              "driver": "iavf", "ifName": "ens1f0v0", "linkType": "ether", "carrier": True,
                              "pciAddress": VFS[0], "vendorID": "8086", "deviceID": "1889", "sriovVF": True,
                              "rdma": False, "pfName": "ens1f0"}
    assert published[eth1] == {"resource": "pycni.io/nic", "type": "netdev", "id": "eth1", "healthy": True,
                               "numaNode": -1, "driver": "veth", "ifName": "eth1", "linkType": "ether",
                               "carrier": True}
    assert published[tun0]["path"] == "/dev/net/tun" and published[tun0]["type"] == "tun"
    assert all(s["spec"]["pool"]["name"] == "node-a" for s in api.slices.values())
    # in a pod, of the kubernetes client only its configuration and REST layer are loaded: not its models
    assert "pydantic_core" not in pathlib.Path(f"/proc/{process.pid}/maps").read_text()

    # eth1 loses its carrier: the pool is published again, whole, as the next generation
    node.run("ip", "link", "set", "xeth1", "down")
    assert eventually(lambda: api.pool(DRIVER, "node-a")[0] > generation, 10)
    after = by_name(api.pool(DRIVER, "node-a")[1])
    assert (after[eth1]["carrier"], after[eth1]["healthy"]) == (False, False)
    assert {k: v for k, v in after.items() if k != eth1} == {k: v for k, v in published.items() if k != eth1}

    # the README's claim: its class and selector pick VF 0 and only it among the published devices (VF 1 is on
    # the same PF, NUMA node and driver too: the scheduler may pick either; this test allocates VF 0)
    template = readme_claim()[0]
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    wanted_class = device_class(request["exactly"]["deviceClassName"])
    (selector,) = request["exactly"]["selectors"]
    chosen = [name for name, attributes in after.items()
              if selects(wanted_class, attributes) and selects(selector["cel"]["expression"], attributes)]
    assert sorted(chosen) == sorted([vf0, vf1])
    # a claim the scheduler allocated VF 0 by that selector, prepared for the kubelet with CDI
    uid = "3f2a9c1e-8d4b-4a57-b1e6-2c9d0f7a5e13"
    api.put_claim(claim("vf", uid, [result("nic", DRIVER, vf0), result("other", "gpu.example.com", "gpu-0")]))
    api.put_claim(claim("elsewhere", "uid-2", [result("nic", DRIVER, vf1, pool="node-b")]))
    kubelet = Kubelet(dirs["registry"], DRIVER)
    info = kubelet.register()
    answers = kubelet.call(info.endpoint, "Prepare", [("vf", uid), ("elsewhere", "uid-2")])
    assert answers[uid].error == "", answers[uid].error
    assert [(d.device_name, list(d.cdi_device_ids)) for d in answers[uid].devices] == \
        [(vf0, [f"{DRIVER}/claim={uid}-{vf0}"])]
    assert "pool node-b, not this node's" in answers["uid-2"].error
    spec = valid_spec(dirs["cdi"] / f"pycni-dra-{DRIVER}-{uid}.json")
    info_env = json.dumps({VFS[0]: {"generic": {"deviceID": VFS[0]}}})
    assert spec["devices"] == [{"name": f"{uid}-{vf0}", "containerEdits": {  # what the device plugin gives
        "env": [f"PCIDEVICE_INTEL_COM_VF={VFS[0]}", f"PCIDEVICE_INTEL_COM_VF_INFO={info_env}"]}}]

    # `pycni status` shows what the driver prepared
    common = ["--conf-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--pod-resources-socket",
              str(tmp_path / "none.sock"), "--dra-checkpoint", str(dirs["plugins"] / "checkpoint.json")]
    shown = json.loads(node.run(sys.executable, "-m", "pycni", "status", "--json", *common).stdout)["draClaims"]
    assert shown == {"claims": [{"namespace": "default", "name": "vf", "uid": uid,
                                 "devices": [{"pool": "node-a", "device": vf0}]}]}
    assert f"DRA claim default/vf ({uid}) prepared: node-a/{vf0}" in \
        node.run(sys.executable, "-m", "pycni", "status", *common).stdout

    # the device plugin, on the same config, does not offer what the driver prepared: one owner per device
    plugin, endpoints = run(start, sriov_node, CONFIG, "--dra-checkpoint", str(dirs["plugins"] / "checkpoint.json"))
    assert plugin.watch(endpoints[VF]) == {VFS[0]: "Unhealthy", VFS[1]: "Healthy"}
    assert kubelet.call(info.endpoint, "Unprepare", [("vf", uid)])[uid].error == ""
    plugin.until(lambda devices: devices == {VFS[0]: "Healthy", VFS[1]: "Healthy"})
    assert not (dirs["cdi"] / f"pycni-dra-{DRIVER}-{uid}.json").exists()

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    log = (tmp_path / "dra.log").read_text()
    assert "Traceback" not in log, log


def test_a_bad_config_is_one_line_and_exit_2(node, tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"resources": [{"resourceName": "pycni.io/nic", "type": "netdev", "selector": {}}]}))
    done = node.run(sys.executable, "-m", "pycni", "dra", "--config", str(config), "--node-name", "n",
                    "--kubeconfig", str(config), check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pycni dra: ") and "selector" in lines[0], done.stderr
