"""Pure pieces of the `devices` type and CDI: device IDs from paths, which groups make a device per match,
CDI names, annotation keys and specs; and the inotify watch's interrupt and events (on a temporary
directory: no root needed)."""

import threading

import pytest

pytest.importorskip("grpc")

from pycni.host.inotify import CONTENTS, DirectoryWatch  # noqa: E402
from pycni.services.devices import cdi  # noqa: E402
from pycni.services.devices.framework import Allocation, DeviceNode, Mount  # noqa: E402
from pycni.services.devices.nodes import Group, PathPattern, UsbMatch, id_of_path  # noqa: E402


@pytest.mark.parametrize("path, device_id", [
    ("/dev/kvm", "kvm"), ("/dev/net/tun", "net_tun"), ("/dev/snd/pcmC0D0p", "snd_pcmC0D0p"),
    ("/dev/snd/*", "snd"), ("/dev/ttyUSB[0-3]", "ttyUSB0-3"), ("/dev/bus/usb/001/005", "bus_usb_001_005"),
])
def test_device_ids_from_paths(path, device_id):
    assert id_of_path(path) == device_id


def test_which_groups_make_a_device_per_match_and_their_ids():
    assert Group((PathPattern("/dev/ttyUSB*"),)).per_match
    assert Group(usb=(UsbMatch("0403", "6001"),)).per_match
    assert not Group((PathPattern("/dev/kvm"),)).per_match
    assert not Group((PathPattern("/dev/snd/*"),), together=True, name="snd").per_match
    assert not Group((PathPattern("/dev/ttyUSB*"), PathPattern("/dev/ttyACM*")), name="ports").per_match
    assert Group((PathPattern("/dev/kvm"),)).ids("kvm") == ["kvm"]
    assert Group((PathPattern("/dev/kvm"),), count=3).ids("kvm") == ["kvm-0", "kvm-1", "kvm-2"]
    assert Group((PathPattern("/dev/net/tun"),), count=1).ids("tun") == ["tun-0"]  # a count given: suffixed


def test_cdi_names_keys_and_versions():
    assert cdi.qualified("example.com/kvm", "kvm-3") == "example.com/kvm=kvm-3"
    with pytest.raises(ValueError, match="not a CDI device name"):
        cdi.qualified("example.com/kvm", "-x")
    with pytest.raises(ValueError, match="not a CDI kind"):
        cdi.kind_of("example.com/_x")
    assert cdi.annotation_key("example.com/kvm") == "cdi.k8s.io/pycni_example.com_kvm"
    long_kind = "a" * 60 + ".example.com/" + "b" * 60
    key = cdi.annotation_key(long_kind)
    assert len(key.split("/", 1)[1]) == 63 and key != cdi.annotation_key(long_kind + "c")
    assert cdi.minimum_version("example.com/kvm") == "0.5.0"
    assert cdi.minimum_version("example.com/kvm.v2") == "0.6.0"  # a dot in the class


def test_a_spec_leaves_out_devices_with_nothing_to_give():
    spec = cdi.spec("example.com/x", {
        "b": Allocation(envs={"K": "v"}, mounts=[Mount("/etc/x", "/srv/x")]),
        "a": Allocation(device_nodes=[DeviceNode("/dev/x", "/dev/x", "rw")]),
        "gone": Allocation()})
    assert spec == {"cdiVersion": "0.5.0", "kind": "example.com/x", "devices": [
        {"name": "a", "containerEdits": {"deviceNodes": [
            {"path": "/dev/x", "hostPath": "/dev/x", "permissions": "rw"}]}},
        {"name": "b", "containerEdits": {"env": ["K=v"], "mounts": [
            {"hostPath": "/srv/x", "containerPath": "/etc/x", "options": ["ro", "nosuid", "nodev", "bind"]}]}}]}


def test_a_spec_file_is_written_only_when_it_changes_and_removed(tmp_path):
    spec_file = cdi.SpecFile(str(tmp_path / "cdi"), "example.com/x")
    devices = {"a": Allocation(device_nodes=[DeviceNode("/dev/x", "/dev/x", "rw")])}
    assert spec_file.write(devices) and not spec_file.write(devices)
    assert spec_file.write({})
    assert [p.name for p in (tmp_path / "cdi").iterdir()] == ["pycni-example.com-x.json"]
    spec_file.remove()
    assert list((tmp_path / "cdi").iterdir()) == []


def test_a_directory_watch_sees_entries_and_wakes_on_interrupt(tmp_path):
    watch = DirectoryWatch(str(tmp_path), mask=CONTENTS)
    try:
        (tmp_path / "a").write_text("x")
        events = watch.read(timeout=5)
        assert ("a", True) in [(e.name, e.created) for e in events]
        assert all(e.directory == str(tmp_path) for e in events)
        threading.Timer(0.05, watch.interrupt).start()
        assert watch.read() == []  # woken, nothing happened
        assert not watch.add(str(tmp_path / "missing"))
        with pytest.raises(OSError, match="watching"):
            watch.add(str(tmp_path / "missing"), required=True)
    finally:
        watch.close()
