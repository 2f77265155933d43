"""The ResourceSlice pool's bookkeeping, against an in-memory store that behaves as the API server does
(resourceVersions, 409 on a stale one), and the names pycni gives its devices in it."""

import copy

import pytest

from pycni.services.dra.model import PublishedDevice, Version
from pycni.services.dra.names import device_name, prefixes
from pycni.services.dra.slices import MAX_DEVICES_PER_SLICE, SlicePublisher, device_entry


class Conflict(Exception):
    status = 409


class Store:
    def __init__(self):
        self.slices: dict[str, dict] = {}
        self.version = 0
        self.writes: list[tuple[str, str]] = []

    def node_uid(self, node):
        return f"uid-{node}"

    def list(self, driver, node):
        return [copy.deepcopy(s) for s in self.slices.values()
                if s["spec"]["driver"] == driver and s["spec"]["nodeName"] == node]

    def _store(self, name, body):
        self.version += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.version)
        self.slices[name] = body
        return copy.deepcopy(body)

    def create(self, body):
        name = body["metadata"]["name"]
        assert name not in self.slices
        self.writes.append(("create", name))
        return self._store(name, body)

    def replace(self, name, body):
        if body["metadata"]["resourceVersion"] != self.slices[name]["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        self.writes.append(("replace", name))
        return self._store(name, body)

    def delete(self, name):
        self.writes.append(("delete", name))
        del self.slices[name]


def devices(count, healthy=True):
    return [PublishedDevice(name=f"dev-{i}", attributes={"healthy": healthy, "index": i}) for i in range(count)]


def pool(store):
    specs = [s["spec"] for s in store.slices.values()]
    return ({(s["pool"]["generation"], s["pool"]["resourceSliceCount"]) for s in specs},
            sorted(d["name"] for s in specs for d in s["devices"]))


def test_a_pool_is_one_generation_split_at_the_apis_limit_and_written_only_when_it_changes():
    store = Store()
    publisher = SlicePublisher(store, "pycni.io", "node-a")
    assert publisher.publish(devices(300))
    assert len(store.slices) == 3 and pool(store)[0] == {(1, 3)}
    assert max(len(s["spec"]["devices"]) for s in store.slices.values()) == MAX_DEVICES_PER_SLICE
    assert all(s["metadata"]["ownerReferences"][0]["uid"] == "uid-node-a" for s in store.slices.values())
    writes = len(store.writes)
    assert not publisher.publish(list(reversed(devices(300))))  # the same devices: nothing written
    assert len(store.writes) == writes
    assert publisher.publish(devices(100, healthy=False))  # shrinks to one slice: the others deleted
    assert pool(store) == ({(2, 1)}, sorted(f"dev-{i}" for i in range(100)))
    assert [verb for verb, _ in store.writes[writes:]] == ["replace", "delete", "delete"]


def test_a_restarted_driver_reads_its_pool_back_and_a_conflict_is_read_again():
    store = Store()
    SlicePublisher(store, "pycni.io", "node-a").publish(devices(2))
    restarted = SlicePublisher(store, "pycni.io", "node-a")
    assert not restarted.publish(devices(2)) and restarted.generation == 1
    store.slices["node-a-pycni.io-0"]["metadata"]["resourceVersion"] = "someone-else"  # edited meanwhile
    with pytest.raises(Conflict):
        restarted.publish(devices(3))
    assert restarted.publish(devices(3))  # read again, then written
    assert pool(store) == ({(2, 1)}, ["dev-0", "dev-1", "dev-2"])  # the failed attempt wrote nothing


def test_attributes_are_typed_as_the_api_writes_them_and_bad_ones_refused():
    entry = device_entry(PublishedDevice(name="gpu-0", attributes={"model": "x", "cores": 8, "ok": True,
                                                                   "example.com/fw": Version("1.2.3")},
                                         capacity={"memory": "8Gi"}))
    assert entry == {"name": "gpu-0", "attributes": {"cores": {"int": 8}, "example.com/fw": {"version": "1.2.3"},
                                                     "model": {"string": "x"}, "ok": {"bool": True}},
                     "capacity": {"memory": {"value": "8Gi"}}}
    for bad in ({"name": "GPU_0"}, {"name": "gpu-0", "attributes": {"1st": 1}},
                {"name": "gpu-0", "attributes": {"ratio": 0.5}}, {"name": "gpu-0", "attributes": {"a" * 33: 1}}):
        with pytest.raises(ValueError):
            PublishedDevice(**bad)
    with pytest.raises(ValueError, match="two devices of one name"):
        SlicePublisher(Store(), "d", "n").publish([PublishedDevice(name="a"), PublishedDevice(name="a")])


def test_device_names_are_dns_labels_told_apart_by_a_digest_when_changed():
    assert device_name("nic", "eth1") == "nic-eth1"
    pci = device_name("vf", "0000:03:01.0")
    assert pci.startswith("vf-0000-03-01-0-") and len(pci) == len("vf-0000-03-01-0-") + 8
    assert device_name("nic", "Eth1") != device_name("nic", "eth1")
    long = device_name("nic", "x" * 80)
    assert len(long) <= 63 and long != device_name("nic", "x" * 81)
    assert prefixes(["pycni.io/nic", "pycni.io/tun"]) == {"pycni.io/nic": "nic", "pycni.io/tun": "tun"}
    shared = prefixes(["a.example/nic", "b.example/nic"])
    assert len(set(shared.values())) == 2 and all(p.startswith("nic-") for p in shared.values())
