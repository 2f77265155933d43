"""A resource's watch that fails is started again, so the kubelet keeps getting health updates."""

import threading

import pytest

pytest.importorskip("grpc")

from pycni.services.devices.daemon import DevicePluginDaemon  # noqa: E402
from pycni.services.devices.framework import Allocation, Resource  # noqa: E402


def test_a_failed_watch_is_started_again_and_reports_changes(tmp_path):
    calls = []
    restarted = threading.Event()

    def watch(changed):
        calls.append(len(calls))
        if len(calls) == 1:
            raise OSError("netlink socket went away")
        changed()
        restarted.set()
        threading.Event().wait()  # a healthy watch blocks for the daemon's life

    resource = Resource("example.com/x", list, lambda ids: Allocation(), watch=watch)
    daemon = DevicePluginDaemon([resource], str(tmp_path), state_file=str(tmp_path / "state.json"))
    plugin = daemon.plugins[0]
    before = plugin.generation
    daemon._start_watch(plugin, pause=0.01)
    assert restarted.wait(5)
    # told twice: once the failed watch is started again (what changed meanwhile), once by the new watch
    assert calls == [0, 1] and plugin.generation == before + 2
    assert (tmp_path / "state.json").exists()  # every change is written where `pycni status` reads it
