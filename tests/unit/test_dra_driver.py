"""The `pycni.io` driver's own logic over plain resources (no node, no gRPC, no API): what it publishes, and
what it refuses to prepare."""

import pytest

from pycni.services.devices.model import Allocation, Device, Resource
from pycni.services.dra.model import AllocatedDevice, ClaimRef, PrepareFailed, PublishedDevice, Version
from pycni.services.dra.resources import ResourcesDriver

CLAIM = ClaimRef(namespace="team", name="c", uid="u1")


def nic_resource(attributes=None):
    return Resource("example.com/nic", lambda: [Device("eth1"), Device("eth2", healthy=False, numa_node=1)],
                    lambda ids: Allocation(envs={"NIC": ",".join(ids)}), type_name="netdev",
                    attributes=attributes or (lambda device_id: {"ifName": device_id}))


def test_every_device_published_with_what_it_is_and_held_ones_left_out():
    held = {"example.com/nic": {"eth2": "pod team/web"}}
    driver = ResourcesDriver([nic_resource()], pool="node-a", held=lambda: held)
    assert [(d.name, d.attributes) for d in driver.devices()] == [
        ("nic-eth1", {"resource": "example.com/nic", "type": "netdev", "id": "eth1", "healthy": True,
                      "numaNode": -1, "ifName": "eth1"})]
    held.clear()
    assert [d.name for d in driver.devices()] == ["nic-eth1", "nic-eth2"]


def test_prepare_gives_what_allocate_gives_and_refuses_what_it_cannot_give():
    held: dict = {}
    driver = ResourcesDriver([nic_resource()], pool="node-a", held=lambda: held)
    driver.devices()
    (prepared,) = driver.prepare(CLAIM, [AllocatedDevice(request="nic", pool="node-a", device="nic-eth1")])
    assert (prepared.device, prepared.request_names, prepared.edits.envs) == ("nic-eth1", ("nic",), {"NIC": "eth1"})
    for device, pool, words in (("nic-eth9", "node-a", "not on this node"),
                                ("nic-eth1", "node-b", r"pool node-b, not this node's \(node-a\)")):
        with pytest.raises(PrepareFailed, match=words):
            driver.prepare(CLAIM, [AllocatedDevice(request="nic", pool=pool, device=device)])
    held["example.com/nic"] = {"eth1": "pod team/web"}  # the device plugin gave it away after publication
    with pytest.raises(PrepareFailed, match="held by pod team/web through the device plugin's example.com/nic"):
        driver.prepare(CLAIM, [AllocatedDevice(request="nic", pool="node-a", device="nic-eth1")])


def test_an_attribute_the_api_would_refuse_is_left_out_not_the_pool():
    driver = ResourcesDriver([nic_resource(lambda device_id: {"usbSerial": "x" * 80, "ok": 1, "bad name": 2})],
                             pool="node-a")
    published = driver.devices()
    assert all("usbSerial" not in d.attributes and "bad name" not in d.attributes and d.attributes["ok"] == 1
               for d in published)


def test_published_devices_are_checked_as_the_api_checks_them():
    for attributes in ({"model": "x" * 65}, {"count": 2**63}, {"fw": Version("1." + "0" * 70)},
                       {f"a{i}": i for i in range(33)}):
        with pytest.raises(ValueError):
            PublishedDevice(name="d", attributes=attributes)
    assert PublishedDevice(name="d", attributes={"count": 2**63 - 1, "model": "x" * 64}).attributes["count"] > 0


def test_a_failed_watch_is_started_again_and_the_driver_stops():
    import threading

    calls = []

    def watch(changed):
        calls.append("watch")
        if len(calls) == 1:
            raise OSError("netlink socket gone")
        changed()
        driver.stopping.wait()

    resource = Resource("example.com/nic", lambda: [Device("eth1")], lambda ids: Allocation(), watch=watch)
    driver = ResourcesDriver([resource], pool="node-a", holdings_seconds=0.05)
    changes = []
    watching = threading.Thread(target=driver.watch, args=(lambda: changes.append("changed"),), daemon=True)
    watching.start()
    for _ in range(500):  # bounded: 10 s
        if len(changes) >= 2:
            break
        threading.Event().wait(0.02)
    assert calls == ["watch", "watch"] and changes[:2] == ["changed", "changed"]  # after the restart, and its own
    driver.close()
    watching.join(5)
    assert not watching.is_alive()
