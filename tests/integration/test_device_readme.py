"""The README's device plugin examples, taken from the README as they are (each code block after an
`<!-- example: NAME -->` marker) and run: the `devices` config against a /dev made by mknod, the CDI config
and the spec it shows, the reload's before and after, the example package's entry point and config."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import tomllib

import pytest

grpc = pytest.importorskip("grpc")

from tests.devices import Stream, serve, socket_of  # noqa: E402

pytestmark = pytest.mark.netns
ROOT = pathlib.Path(__file__).parent.parent.parent


def example(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- example: {re.escape(name)} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"no example {name!r} in the README"
    return match.group(1)


def resources(name: str) -> list:
    return json.loads(example(name))["resources"]


def test_the_devices_example(start, tmp_path, tree):
    for name in ("kvm", "ttyUSB0", "snd/controlC0", "snd/pcmC0D0p", "vhost-net", "net/tun"):
        tree.node(name)
    tree.usb("1-1.2", "0403", "6001", bus=1, number=5, serial="FT4XW3KA")
    plugin = serve(start, tmp_path, resources("devices"))
    for _ in range(4):
        plugin.registration()
    expected = {"example.com/kvm": {f"kvm-{i}": "Healthy" for i in range(10)},
                "example.com/serial": {"ttyUSB0": "Healthy", "usb-1-1.2": "Healthy"},
                "example.com/audio": {f"snd-{i}": "Healthy" for i in range(4)},
                "example.com/vhost": {"vhost-net": "Healthy"}}
    for name, devices in expected.items():
        Stream(plugin, socket_of(name)).until(lambda d, devices=devices: d == devices)


def test_the_cdi_example(start, tmp_path, tree):
    tree.node("fuse")
    plugin = serve(start, tmp_path, resources("cdi"))
    plugin.registration()
    fuse = Stream(plugin, socket_of("example.com/fuse"))
    fuse.until(lambda d: d == {"fuse-0": "Healthy", "fuse-1": "Healthy"})
    assert [d.name for d in fuse.allocate("fuse-1").cdi_devices] == ["example.com/fuse=fuse-1"]
    written = json.loads((tmp_path / "cdi" / "pycni-example.com-fuse.json").read_text())
    assert written == json.loads(example("cdi-spec"))


def test_the_reload_example(start, tmp_path, tree):
    for name in ("ttyUSB0", "ttyACM0"):
        tree.node(name)
    plugin = serve(start, tmp_path, resources("reload-before"))
    plugin.registration()
    serial_a = Stream(plugin, socket_of("example.com/serial-a"))
    serial_a.until(lambda d: d == {"ttyUSB0": "Healthy"})
    serial_a.allocate("ttyUSB0")
    plugin.config.write_text(example("reload-after"))
    plugin.proc.send_signal(signal.SIGHUP)
    assert plugin.registration()[0].resource_name == "example.com/serial-b"
    serial_a.until(lambda d: d == {"ttyACM0": "Healthy"})
    Stream(plugin, socket_of("example.com/serial-b")).until(lambda d: d == {"ttyUSB0": "Unhealthy"})


def test_the_entry_point_example_is_the_packages():
    declared = tomllib.loads((ROOT / "examples" / "pycni-seats" / "pyproject.toml").read_text())
    shown = tomllib.loads(example("entry-point"))
    assert declared["project"]["entry-points"] == shown["project"]["entry-points"]
    assert resources("seats")[0]["type"] in shown["project"]["entry-points"]["pycni.device_types"]
    assert os.path.exists(ROOT / "examples" / "pycni-seats" / "src" / "pycni_seats" / "__init__.py")
