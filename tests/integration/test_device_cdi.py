"""CDI: a resource with `cdi: true` answers Allocate with CDI device names (the field and the annotation), and
keeps a spec file in the CDI directory that validates against the CDI specification's schema (written in
the tests, tests/cdi-spec.schema.json), follows hot-plug, and is removed when the daemon stops."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

grpc = pytest.importorskip("grpc")

from tests.devices import Stream, serve, socket_of  # noqa: E402

pytestmark = pytest.mark.netns
SCHEMA = pathlib.Path(__file__).parent.parent / "cdi-spec.schema.json"


def valid_spec(path):
    import jsonschema

    spec = json.loads(path.read_text())
    jsonschema.validate(spec, json.loads(SCHEMA.read_text()))
    return spec


def test_cdi_answers_and_spec_files(start, tmp_path, tree):
    tree.node("ttyUSB0")
    tree.node("net/tun")
    tree.sysfs_root.mkdir(parents=True)
    plugin = serve(start, tmp_path, [
        {"resourceName": "example.com/serial", "type": "devices", "cdi": True,
         "groups": [{"paths": [{"path": "/dev/ttyUSB*", "permissions": "rw"}]}]},
        {"resourceName": "example.com/tun", "type": "tun", "count": 2, "cdi": True},
        {"resourceName": "example.com/plain", "type": "devices", "groups": [{"paths": [{"path": "/dev/net/tun"}]}]},
    ])
    for _ in range(3):
        plugin.registration()
    serial = Stream(plugin, socket_of("example.com/serial"))
    serial.until(lambda d: d == {"ttyUSB0": "Healthy"})
    answer = serial.allocate("ttyUSB0")
    assert [d.name for d in answer.cdi_devices] == ["example.com/serial=ttyUSB0"]
    assert dict(answer.annotations) == {"cdi.k8s.io/pycni_example.com_serial": "example.com/serial=ttyUSB0"}
    assert not answer.devices and not answer.mounts  # the runtime takes them from the spec

    spec_file = tmp_path / "cdi" / "pycni-example.com-serial.json"
    spec = valid_spec(spec_file)
    assert (spec["cdiVersion"], spec["kind"]) == ("0.5.0", "example.com/serial")
    assert spec["devices"] == [{"name": "ttyUSB0", "containerEdits": {"deviceNodes": [
        {"path": "/dev/ttyUSB0", "hostPath": "/dev/ttyUSB0", "permissions": "rw"}]}}]
    assert oct(os.stat(spec_file).st_mode & 0o777) == "0o644"

    tree.node("ttyUSB1")  # hot-plug: the list and the spec follow
    serial.until(lambda d: d == {"ttyUSB0": "Healthy", "ttyUSB1": "Healthy"})
    assert [d["name"] for d in valid_spec(spec_file)["devices"]] == ["ttyUSB0", "ttyUSB1"]
    tree.remove("ttyUSB0")
    serial.until(lambda d: d == {"ttyUSB1": "Healthy"})
    assert [d["name"] for d in valid_spec(spec_file)["devices"]] == ["ttyUSB1"]

    tun = Stream(plugin, socket_of("example.com/tun"))
    tun.until(lambda d: d == {"tun-0": "Healthy", "tun-1": "Healthy"})
    assert [d.name for d in tun.allocate("tun-0", "tun-1").cdi_devices] == ["example.com/tun=tun-0",
                                                                           "example.com/tun=tun-1"]
    tun_spec = valid_spec(tmp_path / "cdi" / "pycni-example.com-tun.json")
    assert {d["name"]: d["containerEdits"]["deviceNodes"][0]["permissions"] for d in tun_spec["devices"]} == \
        {"tun-0": "rwm", "tun-1": "rwm"}

    plain = Stream(plugin, socket_of("example.com/plain"))  # without `cdi`: device nodes, no spec file
    plain.until(lambda d: d == {"net_tun": "Healthy"})
    answer = plain.allocate("net_tun")
    assert not answer.cdi_devices and [d.host_path for d in answer.devices] == ["/dev/net/tun"]
    assert sorted(os.listdir(tmp_path / "cdi")) == ["pycni-example.com-serial.json", "pycni-example.com-tun.json"]

    plugin.stop()
    assert os.listdir(tmp_path / "cdi") == []  # removed on exit


def test_cdi_is_refused_for_a_type_whose_devices_are_not_device_nodes():
    from pycni.services.devices.config import ConfigError, Settings, parse

    with pytest.raises(ConfigError, match="`resources\\[0\\].cdi`: type 'netdev' does not describe its devices"):
        parse({"resources": [{"resourceName": "example.com/nic", "type": "netdev", "cdi": True,
                              "selector": {"ifNames": ["eth1"]}}]}, "devices.json", Settings())
