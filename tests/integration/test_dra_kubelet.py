"""The README's DRA driver (`pycni.dra`), run as a process in a node namespace, against a stand-in kubelet
that speaks the plugin registration and DRA gRPC APIs over the real unix sockets, and a stand-in API server
(HTTPS, bearer token) holding ResourceClaims as the scheduler allocates them."""

from __future__ import annotations

import json
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("kubernetes")

from pycni.kubelet import dra_v1beta1_pb2, dra_v1beta1_pb2_grpc  # noqa: E402
from tests.apiserver import StandinAPI, node_object  # noqa: E402
from tests.dra import Kubelet, claim, result, valid_spec  # noqa: E402
from tests.helpers import eventually  # noqa: E402

pytestmark = pytest.mark.netns
ROOT = pathlib.Path(__file__).parent.parent.parent
DRIVER = "fuse.example.com"
UID = "7c1f3a52-2d0e-4c8b-9a53-0f5e8b1d2c47"

HARNESS = """
import runpy, sys
from pycni import dra
example = runpy.run_path(sys.argv[1], run_name="example")
plugins, registry, cdi, kubeconfig = sys.argv[2:]
dra.run(example["Fuse"](), kubeconfig=kubeconfig, node="node-a",
        paths=dra.PluginPaths(plugin_dir=plugins, registry_dir=registry, cdi_dir=cdi))
"""


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- example: dra-driver -->\n```python\n(.*?)```", text, re.S)
    assert match, "no dra-driver example in the README"
    return match.group(1)


@pytest.fixture
def cluster(node, tmp_path):
    api = StandinAPI(node.name, "127.0.0.1", 16443, str(tmp_path))
    api.put(node_object("node-a", [], ["192.0.2.10"]))
    kubeconfig = api.kubeconfig(str(tmp_path / "kubeconfig"))
    api.start()
    example = tmp_path / "fuse_driver.py"
    example.write_text(readme_example())
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    dirs = {name: tmp_path / name for name in ("plugins", "registry", "cdi")}
    processes = []

    def start():
        process = node.popen(sys.executable, str(harness), str(example), *map(str, dirs.values()), kubeconfig,
                             stdout=subprocess.DEVNULL, stderr=open(tmp_path / "driver.log", "ab"))
        processes.append(process)
        return process

    yield api, start, dirs, tmp_path
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    api.stop()


def stop(process) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=20)


def test_the_readme_driver_prepares_claims_through_restarts(cluster):
    api, start, dirs, tmp_path = cluster
    api.put_claim(claim("fuse", UID, [result("fuse", DRIVER, "fuse-0"), result("gpu", "gpu.example.com", "gpu-0")]))
    api.put_claim(claim("pending", "pending-uid", None))
    api.put_claim(claim("replaced", "new-uid", [result("fuse", DRIVER, "fuse-1")]))
    kubelet = Kubelet(dirs["registry"], DRIVER)
    driver = start()
    info = kubelet.register()
    assert (info.type, info.name, list(info.supported_versions)) == ("DRAPlugin", DRIVER,
                                                                      ["v1.DRAPlugin", "v1beta1.DRAPlugin"])
    endpoint = info.endpoint
    assert endpoint == str(dirs["plugins"] / "dra.sock")

    # the node's pool: one slice, generation 1, owned by the Node, the attributes typed as the API writes them
    assert eventually(lambda: api.pool(DRIVER, "node-a")[0] == 1, 20)
    generation, devices = api.pool(DRIVER, "node-a")
    assert devices[1] == {"name": "fuse-1", "attributes": {"kernelModule": {"string": "fuse"}, "slot": {"int": 1}}}
    assert [d["name"] for d in devices] == ["fuse-0", "fuse-1", "fuse-2", "fuse-3"]
    (published,) = api.slices.values()
    assert published["metadata"]["name"] == f"node-a-{DRIVER}-0"
    assert published["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Node", "name": "node-a",
                                                         "uid": "uid-node-a", "controller": True}]
    assert published["spec"]["pool"] == {"name": "node-a", "generation": 1, "resourceSliceCount": 1}

    answers = kubelet.call(endpoint, "Prepare", [("fuse", UID), ("pending", "pending-uid"),
                                                 ("replaced", "old-uid"), ("missing", "missing-uid")])
    assert set(answers) == {UID, "pending-uid", "old-uid", "missing-uid"}  # every claim asked for is answered
    fuse = answers[UID]
    assert fuse.error == ""
    assert [(d.pool_name, d.device_name, list(d.request_names), list(d.cdi_device_ids)) for d in fuse.devices] == \
        [("node-a", "fuse-0", ["fuse"], [f"{DRIVER}/claim={UID}-fuse-0"])]  # only this driver's device
    assert "not allocated" in answers["pending-uid"].error
    assert "another claim" in answers["old-uid"].error  # deleted and re-created under the same name
    assert "404" in answers["missing-uid"].error

    spec_file = dirs["cdi"] / f"pycni-dra-{DRIVER}-{UID}.json"
    spec = valid_spec(spec_file)
    assert spec["kind"] == f"{DRIVER}/claim"
    assert spec["devices"] == [{"name": f"{UID}-fuse-0", "containerEdits": {
        "env": ["FUSE_CLAIM=fuse"], "deviceNodes": [{"path": "/dev/fuse", "hostPath": "/dev/fuse",
                                                      "permissions": "rw"}]}}]

    # the same call again, in the API's other version: the same answer (from the checkpoint)
    again = kubelet.call(endpoint, "Prepare", [("fuse", UID)], api=(dra_v1beta1_pb2, dra_v1beta1_pb2_grpc))
    assert [list(d.cdi_device_ids) for d in again[UID].devices] == [[f"{DRIVER}/claim={UID}-fuse-0"]]

    # the driver restarts, and the claim's allocation can no longer be read: prepared claims are answered from
    # the node's checkpoint, and unprepared from it
    assert stop(driver) == 0
    assert not (dirs["registry"] / f"{DRIVER}-reg.sock").exists() and not pathlib.Path(endpoint).exists()
    api.claims.clear()
    writes, requests = len(api.slice_writes), len(api.requests)
    driver = start()
    kubelet.register()
    # a restarted driver reads its pool back: it is right, so nothing is written
    assert eventually(lambda: any(path.startswith("/apis/resource.k8s.io/v1/resourceslices?")
                                  for _, path in api.requests[requests:]), 20)
    time.sleep(0.5)
    assert len(api.slice_writes) == writes and api.pool(DRIVER, "node-a")[0] == 1
    after = kubelet.call(endpoint, "Prepare", [("fuse", UID)])
    assert after[UID].error == "" and [d.device_name for d in after[UID].devices] == ["fuse-0"]
    assert kubelet.call(endpoint, "Unprepare", [("fuse", UID)])[UID].error == ""
    assert not spec_file.exists()
    assert json.loads((dirs["plugins"] / "checkpoint.json").read_text())["claims"] == {}
    # unprepare is idempotent: a claim unknown here is done already
    assert kubelet.call(endpoint, "Unprepare", [("fuse", UID), ("never", "never-uid")])[UID].error == ""
    assert stop(driver) == 0
    log = (tmp_path / "driver.log").read_text()
    assert "Traceback" not in log, log
