"""Reloading the device plugin's config without a restart (SIGHUP, or the file replaced as a ConfigMap is):
resources added register, removed ones go, a changed one keeps its socket and the kubelet's stream and sends
its new list; a device a pod holds through one resource is never offered by another; a bad new config is
logged and the running one keeps serving."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

grpc = pytest.importorskip("grpc")

from tests.devices import Stream, serve, socket_of  # noqa: E402

pytestmark = pytest.mark.netns
SERIAL_A, SERIAL_B, KVM, FUSE = "example.com/serial-a", "example.com/serial-b", "example.com/kvm", "example.com/fuse"


def devices(name, *paths):
    return {"resourceName": name, "type": "devices", "groups": [{"paths": [{"path": p}]} for p in paths]}


def replace_config(plugin, resources):
    """Written beside and renamed over it, as the kubelet updates a ConfigMap volume (no half-written file)."""
    temporary = plugin.config.with_suffix(".new")
    temporary.write_text(json.dumps({"resources": resources}))
    os.replace(temporary, plugin.config)


def wait_for_log(plugin, words, timeout=10.0):
    deadline = time.monotonic() + timeout
    while words not in plugin.log.read_text():
        assert time.monotonic() < deadline, f"{words!r} not logged:\n{plugin.log.read_text()}"
        time.sleep(0.02)


def test_sighup_with_an_allocated_device_and_a_changed_selector(start, tmp_path, tree):
    for name in ("ttyUSB0", "ttyUSB1", "ttyACM0", "kvm", "fuse"):
        tree.node(name)
    plugin = serve(start, tmp_path, [devices(SERIAL_A, "/dev/ttyUSB*"), devices(KVM, "/dev/kvm")])
    assert {plugin.registration()[0].resource_name for _ in range(2)} == {SERIAL_A, KVM}
    serial_a = Stream(plugin, socket_of(SERIAL_A))
    serial_a.until(lambda d: d == {"ttyUSB0": "Healthy", "ttyUSB1": "Healthy"})
    kvm = Stream(plugin, socket_of(KVM))
    kvm.until(lambda d: d == {"kvm": "Healthy"})
    serial_a.allocate("ttyUSB0")  # a pod holds it, through serial-a

    # the serial devices move to a resource of another name; serial-a's selector changes; kvm stays
    plugin.config.write_text(json.dumps({"resources": [
        devices(SERIAL_A, "/dev/ttyACM*"), devices(SERIAL_B, "/dev/ttyUSB*"), devices(KVM, "/dev/kvm"),
        devices(FUSE, "/dev/fuse")]}))
    plugin.proc.send_signal(signal.SIGHUP)
    assert {plugin.registration()[0].resource_name for _ in range(2)} == {SERIAL_B, FUSE}  # only the new ones
    serial_a.until(lambda d: d == {"ttyACM0": "Healthy"})  # the same stream, its new list
    serial_b = Stream(plugin, socket_of(SERIAL_B))
    serial_b.until(lambda d: d == {"ttyUSB0": "Unhealthy", "ttyUSB1": "Healthy"})  # never handed out twice
    with pytest.raises(grpc.RpcError, match="unhealthy device IDs"):
        serial_b.allocate("ttyUSB0")
    assert [d.host_path for d in serial_b.allocate("ttyUSB1").devices] == ["/dev/ttyUSB1"]
    state = {r["name"]: r for r in json.loads(plugin.state_file.read_text())["resources"]}
    assert "through example.com/serial-a" in state[SERIAL_B]["excluded"]["ttyUSB0"]
    Stream(plugin, socket_of(FUSE)).until(lambda d: d == {"fuse": "Healthy"})
    assert kvm.updates.empty()  # unchanged: its stream was not even told again

    # serial-a removed: its socket goes; a bad config (a widening selector) is refused and changes nothing
    replace_config(plugin, [devices(SERIAL_B, "/dev/ttyUSB*"), devices(KVM, "/dev/kvm"), devices(FUSE, "/dev/fuse")])
    wait_for_log(plugin, "reload: example.com/serial-a removed")
    assert not os.path.exists(os.path.join(plugin.dir, socket_of(SERIAL_A)))
    replace_config(plugin, [{"resourceName": "example.com/nic", "type": "netdev", "selector": {}}])
    wait_for_log(plugin, "reload refused, the running config keeps serving")
    assert "selects every interface" in plugin.log.read_text()
    assert [d.host_path for d in serial_b.allocate("ttyUSB1").devices] == ["/dev/ttyUSB1"]  # still served
    assert os.path.exists(os.path.join(plugin.dir, socket_of(KVM)))
    assert plugin.proc.poll() is None


def test_a_device_held_through_a_removed_resource_comes_back_once_its_pod_is_gone(start, tmp_path, tree):
    from pycni.kubelet.standin import PodDevices, PodResourcesStub, serve_pod_resources

    tree.node("ttyUSB0")
    tree.node("ttyUSB1")
    socket_path = str(tmp_path / "podresources.sock")
    stub = PodResourcesStub([PodDevices("lab", "logger-0", "main", SERIAL_A, ["ttyUSB0"])])
    server = serve_pod_resources(socket_path, stub)
    try:
        plugin = serve(start, tmp_path, [devices(SERIAL_A, "/dev/ttyUSB*")],
                       extra=("--pod-resources-socket", socket_path))
        plugin.registration()
        replace_config(plugin, [devices(SERIAL_B, "/dev/ttyUSB*")])
        assert plugin.registration()[0].resource_name == SERIAL_B
        serial_b = Stream(plugin, socket_of(SERIAL_B))
        serial_b.until(lambda d: d == {"ttyUSB0": "Unhealthy", "ttyUSB1": "Healthy"})
        state = {r["name"]: r for r in json.loads(plugin.state_file.read_text())["resources"]}
        assert state[SERIAL_B]["excluded"]["ttyUSB0"].startswith("held by pod lab/logger-0 through "
                                                                 "example.com/serial-a")
        stub.pods.clear()  # the pod ended: the kubelet no longer lists it
        serial_b.until(lambda d: d == {"ttyUSB0": "Healthy", "ttyUSB1": "Healthy"}, timeout=15)
    finally:
        server.stop(0)


def test_a_configmap_update_is_reloaded(start, tmp_path, tree):
    """As the kubelet updates a ConfigMap volume: the file is a link through `..data`, a link to a directory
    of the current version; a new version is a new directory and `..data` renamed over to it."""
    tree.node("kvm")
    tree.node("fuse")
    volume = tmp_path / "volume"
    (volume / "..2026_12_06_v1").mkdir(parents=True)
    (volume / "..2026_12_06_v1" / "devices.json").write_text(json.dumps({"resources": [devices(KVM, "/dev/kvm")]}))
    (volume / "..data").symlink_to("..2026_12_06_v1")
    (volume / "devices.json").symlink_to("..data/devices.json")
    plugin = serve(start, tmp_path, [], extra=("--config", str(volume / "devices.json")))
    assert plugin.registration()[0].resource_name == KVM
    (volume / "..2026_12_06_v2").mkdir()
    (volume / "..2026_12_06_v2" / "devices.json").write_text(json.dumps({"resources": [
        devices(KVM, "/dev/kvm"), devices(FUSE, "/dev/fuse")]}))
    (volume / "..data_tmp").symlink_to("..2026_12_06_v2")
    os.replace(volume / "..data_tmp", volume / "..data")
    assert plugin.registration()[0].resource_name == FUSE
    Stream(plugin, socket_of(FUSE)).until(lambda d: d == {"fuse": "Healthy"})
