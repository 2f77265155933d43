"""The device plugin process under test and a stand-in kubelet for it (the real protos over real unix
sockets), shared by the device plugin tests."""

import json
import pathlib
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest

from pycni.kubelet import deviceplugin_pb2 as api
from pycni.kubelet.standin import FakeKubelet
from tests.sysfs_tree import DevTree

NIC = "pycni.io/nic"
NIC_SOCKET = "pycni-pycni_io_nic.sock"


def veth(node, name, up=True):
    node.run("ip", "link", "add", name, "type", "veth", "peer", "name", "x" + name)
    node.run("ip", "link", "set", "x" + name, "up")
    if up:
        node.run("ip", "link", "set", name, "up")


class Plugin:
    """The device plugin process in the node namespace, its kubelet, and a ListAndWatch stream."""

    def __init__(self, node, tmp_path, resources, sysfs=None, extra=()):
        # short, as the kubelet's /var/lib/kubelet/device-plugins is: socket paths must fit in 108 bytes
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="dp-"))
        self.kubelet = FakeKubelet(str(self.dir))
        self.config = tmp_path / "devices.json"
        self.config.write_text(json.dumps(resources if isinstance(resources, dict) else {"resources": resources}))
        self.state_file = tmp_path / "device-plugin-state.json"
        self.device_info_dir = tmp_path / "devinfo"
        argv = [sys.executable, "-m", "pycni", "device-plugin", "--config", str(self.config), "--plugin-dir",
                str(self.dir), "--pod-resources-socket", str(tmp_path / "no-kubelet-podresources.sock"),
                "--state-file", str(self.state_file), "--device-info-dir", str(self.device_info_dir)]
        if sysfs:
            argv += ["--sysfs-root", sysfs]
        argv += list(extra)
        self.log = tmp_path / "device-plugin.log"
        self.proc = node.popen(*argv, stderr=open(self.log, "w"))
        self.updates: queue.Queue = queue.Queue()
        self.channels = []

    def registration(self):
        request, options = self.kubelet.next_registration()
        return request, options

    def client(self, endpoint=NIC_SOCKET):
        channel, stub = self.kubelet.plugin(endpoint)
        self.channels.append(channel)
        return stub

    def watch(self, endpoint=NIC_SOCKET):
        stub = self.client(endpoint)

        def read():
            try:
                for response in stub.ListAndWatch(api.Empty()):
                    self.updates.put({d.ID: d.health for d in response.devices})
            except grpc.RpcError:
                self.updates.put(None)

        threading.Thread(target=read, daemon=True).start()
        return self.updates.get(timeout=10)

    def until(self, predicate, timeout=10.0):
        """The first list update for which `predicate` holds (older ones are skipped)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            try:
                devices = self.updates.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"no matching ListAndWatch update in time; saw {seen}") from None
            seen.append(devices)
            if devices is not None and predicate(devices):
                return devices

    def latest(self):
        """The newest list update so far (the stream is quiet: nothing else is changing)."""
        devices = self.updates.get(timeout=5)
        while not self.updates.empty():
            devices = self.updates.get()
        return devices

    def stop(self):
        for channel in self.channels:
            channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # its threads' stacks, into the log
                time.sleep(1)
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the device plugin did not stop on SIGTERM:\n{self.log.read_text()}") from None
        self.kubelet.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def start(node, tmp_path):
    started = []

    def run(resources, sysfs=None, extra=()):
        plugin = Plugin(node, tmp_path, resources, sysfs, extra)
        started.append(plugin)
        return plugin

    yield run
    for plugin in started:
        plugin.stop()


class Stream:
    """One resource's ListAndWatch, as the kubelet holds it: every list it sends, in order."""

    def __init__(self, plugin, endpoint):
        self.stub = plugin.client(endpoint)
        self.updates: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for response in self.stub.ListAndWatch(api.Empty()):
                self.updates.put((time.monotonic(), {d.ID: d.health for d in response.devices}))
        except grpc.RpcError:
            self.updates.put((time.monotonic(), None))

    def until(self, predicate, timeout=10.0):
        """(when, devices) of the first list for which `predicate` holds."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                when, devices = self.updates.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no matching ListAndWatch update in time; saw {seen}") from None
            seen.append(devices)
            if devices is not None and predicate(devices):
                return when, devices

    def allocate(self, *ids):
        answer = self.stub.Allocate(api.AllocateRequest(container_requests=[
            api.ContainerAllocateRequest(devices_ids=list(ids))]), timeout=10)
        return answer.container_responses[0]


def socket_of(name):
    return "pycni-" + name.replace(".", "_").replace("/", "_") + ".sock"


@pytest.fixture
def tree(tmp_path):
    """A /dev and a sysfs of the test's own."""
    return DevTree(tmp_path / "dev", tmp_path / "sys")


def serve(start, tmp_path, resources, extra=()):
    """The device plugin reading the test's /dev and sysfs (`tree`), keeping CDI specs in tmp_path/cdi."""
    return start(resources, extra=("--dev-root", str(tmp_path / "dev"), "--sysfs-root", str(tmp_path / "sys"),
                                   "--cdi-dir", str(tmp_path / "cdi"), *extra))
