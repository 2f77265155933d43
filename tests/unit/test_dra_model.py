"""The DRA driver's pure parts, without root, gRPC or an API server: which of a claim's allocated devices are
this driver's, and the checkpoint of prepared claims read back as written."""

from __future__ import annotations

import json

import pytest

from pycni.services.devices.model import Allocation, DeviceNode, Mount
from pycni.services.dra.checkpoint import Checkpoint
from pycni.services.dra.claims import allocation_of
from pycni.services.dra.model import AllocatedDevice, ClaimRef, PreparedDevice, PrepareFailed

CLAIM = ClaimRef(namespace="ns", name="nic", uid="u-1")


def document(uid: str = "u-1", results: list | None = None) -> dict:
    status = {"allocation": {"devices": {"results": results}}} if results is not None else {}
    return {"metadata": {"namespace": "ns", "name": "nic", "uid": uid}, "status": status}


def test_only_this_drivers_devices_of_the_allocation():
    results = [{"request": "a", "driver": "pycni.io", "pool": "n1", "device": "eth1"},
               {"request": "b", "driver": "gpu.example.com", "pool": "n1", "device": "gpu0"},
               {"request": "c", "driver": "pycni.io", "pool": "n1", "device": "eth2"}]
    assert allocation_of(document(results=results), CLAIM, "pycni.io") == (
        AllocatedDevice(request="a", pool="n1", device="eth1"), AllocatedDevice(request="c", pool="n1", device="eth2"))
    assert allocation_of(document(results=results), CLAIM, "other.example.com") == ()


@pytest.mark.parametrize(("doc", "words"), [
    (document(uid="u-2", results=[]), "is now another claim"),
    (document(results=None), "is not allocated"),
])
def test_a_claim_that_cannot_be_prepared_says_why(doc, words):
    with pytest.raises(PrepareFailed, match=words):
        allocation_of(doc, CLAIM, "pycni.io")


def test_the_checkpoint_reads_back_what_it_wrote(tmp_path):
    path = str(tmp_path / "checkpoint.json")
    device = PreparedDevice(pool="n1", device="eth1", request_names=("a",), edits=Allocation(
        envs={"X": "1"}, annotations={"k": "v"}, device_nodes=[DeviceNode("/dev/a", "/dev/b", "rw")],
        mounts=[Mount("/c", "/h", read_only=False)]))
    Checkpoint(path).put(CLAIM, (device,))
    again = Checkpoint(path)
    assert again.get("u-1") == (CLAIM, (device,))
    again.remove("u-1")
    assert Checkpoint(path).get("u-1") is None and json.loads(open(path).read())["claims"] == {}


def test_a_checkpoint_of_another_version_is_refused(tmp_path):
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps({"version": 99, "claims": {}}))
    with pytest.raises(ValueError, match="another version"):
        Checkpoint(str(path))
