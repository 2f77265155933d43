"""The `devices` resource type against the stand-in kubelet over the real protos: a /dev of the test's own with
character nodes made by mknod, USB devices in a sysfs tree, the plugin in a node namespace. Paths, globs,
counts, groups that go together, USB by vendor/product/serial, hot-plug through inotify, and `tun` as a
case of it."""

from __future__ import annotations

import json
import time

import pytest

grpc = pytest.importorskip("grpc")

from tests.devices import Stream, serve, socket_of  # noqa: E402

pytestmark = pytest.mark.netns


def specs(container):
    return sorted((d.container_path, d.host_path, d.permissions) for d in container.devices)


def test_paths_globs_counts_groups_and_usb(start, tmp_path, tree):
    tree.node("kvm")
    for name in ("ttyUSB0", "ttyUSB1", "snd/controlC0", "snd/pcmC0D0p", "net/tun"):
        tree.node(name)
    tree.usb("1-1.2", "0403", "6001", bus=1, number=5, serial="FT123")
    tree.usb("1-1.3", "0403", "6001", bus=1, number=6, serial="OTHER")
    tree.usb("2-1", "1d6b", "0002", bus=2, number=1)
    plugin = serve(start, tmp_path, [
        {"resourceName": "example.com/kvm", "type": "devices",
         "groups": [{"paths": [{"path": "/dev/kvm"}], "count": 3}]},
        {"resourceName": "example.com/serial", "type": "devices", "groups": [
            {"paths": [{"path": "/dev/ttyUSB*"}]},
            {"usb": [{"vendor": "0403", "product": "6001", "serial": "FT123"}]}]},
        {"resourceName": "example.com/audio", "type": "devices", "groups": [
            {"name": "snd", "paths": [{"path": "/dev/snd/*", "permissions": "rw"}], "together": True, "count": 2}]},
        {"resourceName": "example.com/vhost", "type": "devices", "groups": [
            {"paths": [{"path": "/dev/vhost-net"}, {"path": "/dev/net/tun", "permissions": "rwm"}]}]},
        {"resourceName": "example.com/tun", "type": "tun", "count": 2, "path": "/dev/net/tun"},
    ])
    names = {plugin.registration()[0].resource_name for _ in range(5)}
    assert names == {"example.com/kvm", "example.com/serial", "example.com/audio", "example.com/vhost",
                     "example.com/tun"}
    kvm = Stream(plugin, socket_of("example.com/kvm"))
    kvm.until(lambda d: d == {"kvm-0": "Healthy", "kvm-1": "Healthy", "kvm-2": "Healthy"})
    assert specs(kvm.allocate("kvm-1")) == [("/dev/kvm", "/dev/kvm", "rw")]  # the node's paths, not --dev-root's

    serial = Stream(plugin, socket_of("example.com/serial"))
    serial.until(lambda d: d == {"ttyUSB0": "Healthy", "ttyUSB1": "Healthy", "usb-1-1.2": "Healthy"})
    assert specs(serial.allocate("ttyUSB1", "usb-1-1.2")) == [("/dev/bus/usb/001/005", "/dev/bus/usb/001/005", "rw"),
                                                                ("/dev/ttyUSB1", "/dev/ttyUSB1", "rw")]

    audio = Stream(plugin, socket_of("example.com/audio"))
    audio.until(lambda d: d == {"snd-0": "Healthy", "snd-1": "Healthy"})
    assert specs(audio.allocate("snd-1")) == [("/dev/snd/controlC0", "/dev/snd/controlC0", "rw"),
                                              ("/dev/snd/pcmC0D0p", "/dev/snd/pcmC0D0p", "rw")]

    vhost = Stream(plugin, socket_of("example.com/vhost"))  # /dev/vhost-net is missing: the pair is not whole
    vhost.until(lambda d: d == {"vhost-net": "Unhealthy"})
    with pytest.raises(grpc.RpcError, match="unhealthy device IDs"):
        vhost.allocate("vhost-net")
    tree.node("vhost-net")
    vhost.until(lambda d: d == {"vhost-net": "Healthy"})
    assert specs(vhost.allocate("vhost-net")) == [("/dev/net/tun", "/dev/net/tun", "rwm"),
                                                  ("/dev/vhost-net", "/dev/vhost-net", "rw")]

    tun = Stream(plugin, socket_of("example.com/tun"))  # the `tun` type: a case of it, its IDs as before
    tun.until(lambda d: d == {"tun-0": "Healthy", "tun-1": "Healthy"})
    assert specs(tun.allocate("tun-0")) == [("/dev/net/tun", "/dev/net/tun", "rwm")]


def test_hot_plug_add_and_remove_reach_the_stream(start, tmp_path, tree):
    tree.node("ttyUSB0")
    tree.node("kvm")
    tree.sysfs_root.mkdir(parents=True)
    plugin = serve(start, tmp_path, [
        {"resourceName": "example.com/serial", "type": "devices", "groups": [
            {"paths": [{"path": "/dev/ttyUSB*"}]}, {"usb": [{"vendor": "2341", "product": "0043"}]}]},
        {"resourceName": "example.com/kvm", "type": "devices", "groups": [{"paths": [{"path": "/dev/kvm"}]}]},
        {"resourceName": "example.com/audio", "type": "devices", "groups": [
            {"name": "snd", "paths": [{"path": "/dev/snd/*"}], "together": True}]},
    ])
    for _ in range(3):
        plugin.registration()
    serial = Stream(plugin, socket_of("example.com/serial"))
    serial.until(lambda d: d == {"ttyUSB0": "Healthy"})
    delays = []

    def timed(stream, change, predicate):
        began = time.monotonic()
        change()
        when, _ = stream.until(predicate)
        delays.append(when - began)

    timed(serial, lambda: tree.node("ttyUSB1"), lambda d: d == {"ttyUSB0": "Healthy", "ttyUSB1": "Healthy"})
    timed(serial, lambda: tree.remove("ttyUSB0"), lambda d: d == {"ttyUSB1": "Healthy"})
    timed(serial, lambda: tree.usb("1-4", "2341", "0043", bus=1, number=9),  # the node made last, as devtmpfs does
          lambda d: d == {"ttyUSB1": "Healthy", "usb-1-4": "Healthy"})
    timed(serial, lambda: tree.unplug_usb("1-4", bus=1, number=9), lambda d: d == {"ttyUSB1": "Healthy"})

    kvm = Stream(plugin, socket_of("example.com/kvm"))  # a literal path stays listed: Unhealthy while gone
    kvm.until(lambda d: d == {"kvm": "Healthy"})
    timed(kvm, lambda: tree.remove("kvm"), lambda d: d == {"kvm": "Unhealthy"})
    timed(kvm, lambda: tree.node("kvm"), lambda d: d == {"kvm": "Healthy"})

    audio = Stream(plugin, socket_of("example.com/audio"))  # its directory does not exist yet
    audio.until(lambda d: d == {"snd": "Unhealthy"})
    timed(audio, lambda: tree.node("snd/controlC0"), lambda d: d == {"snd": "Healthy"})
    print(f"hot-plug to the kubelet's stream: max {max(delays) * 1000:.1f} ms over {len(delays)} changes")
    state = json.loads(plugin.state_file.read_text())
    assert {r["name"]: r["devices"] for r in state["resources"]}["example.com/kvm"] == {"kvm": "Healthy"}


@pytest.mark.parametrize("resource, words", [
    ({"groups": [{"paths": [{"path": "/dev/tty*", "mountPath": "/dev/x"}]}]}, "is for a path without glob"),
    ({"groups": [{"paths": [{"path": "/dev/kvm"}], "usb": [{"vendor": "0403", "product": "6001"}]}]},
     "needs `paths` or `usb`"),
    ({"groups": [{}]}, "needs `paths` or `usb`"),
    ({"groups": [{"paths": [{"path": "/dev/snd/*"}], "together": True}]}, "give it a `name`"),
    ({"groups": [{"paths": [{"path": "/dev/kvm"}]}, {"paths": [{"path": "/dev/kvm"}]}]}, "makes device ID 'kvm'"),
    ({"groups": [{"paths": [{"path": "/dev/../etc/shadow"}]}]}, "leaves /dev"),
    ({"groups": [{"paths": [{"path": "/etc/shadow"}]}]}, "does not match"),
    ({"groups": [{"paths": [{"path": "/dev/kvm", "permissions": "rwx"}]}]}, "is not one of"),
    ({"groups": [{"usb": [{"vendor": "04031", "product": "6001"}]}]}, "does not match"),
    ({"groups": [{"paths": [{"path": "/dev/kvm", "perms": "rw"}]}]}, "did you mean `permissions`"),
    ({"groups": []}, "should be non-empty"),
])
def test_a_devices_config_that_would_widen_or_mislead_is_refused(resource, words):
    from pycni.services.devices.config import ConfigError, Settings, parse

    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("[", r"\[")):
        parse({"resources": [{"resourceName": "example.com/x", "type": "devices", **resource}]}, "devices.json",
              Settings())
