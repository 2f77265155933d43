"""The device plugin process under test, a stand-in kubelet for it (the real protos over real unix sockets),
and a sysfs tree of PCI devices for nodes that have none, where the netdevs are real links."""

import json
import os
import pathlib
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time

import grpc
import pytest

from pycni.kubelet import deviceplugin_pb2 as api
from pycni.kubelet.standin import FakeKubelet

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
        self.proc = node.popen(*argv, stderr=open(tmp_path / "device-plugin.log", "w"))
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
            self.proc.wait(timeout=10)
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




class FakeSysfs:
    """A sysfs tree of PCI functions and auxiliary devices, laid out as the kernel lays out /sys: attribute
    files, and symlinks for `driver`, `physfn`, `virtfnN` and `iommu_group`."""

    def __init__(self, root):
        self.root = root
        (root / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)

    def device_dir(self, address):
        return self.root / "bus" / "pci" / "devices" / address

    def pci(self, address, vendor="8086", device="1592", pci_class="0x020000", driver="", netdevs=(), numa_node=0,
            iommu_group="", pf="", acpi_index="", rdma=(), rdma_nodes=()):
        base = self.device_dir(address)
        base.mkdir(parents=True)
        for name, value in (("vendor", f"0x{vendor}"), ("device", f"0x{device}"), ("class", pci_class),
                            ("numa_node", str(numa_node))):
            (base / name).write_text(value + "\n")
        if acpi_index:
            (base / "acpi_index").write_text(acpi_index + "\n")
        self.bind(address, driver)
        (base / "net").mkdir()
        for name in netdevs:
            (base / "net" / name).mkdir()
        if iommu_group:
            group = self.root / "kernel" / "iommu_groups" / iommu_group
            group.mkdir(parents=True, exist_ok=True)
            (base / "iommu_group").symlink_to(group)
        if pf:
            (base / "physfn").symlink_to(f"../{pf}")
            pf_dir = self.device_dir(pf)
            index = len([n for n in os.listdir(pf_dir) if n.startswith("virtfn")])
            (pf_dir / f"virtfn{index}").symlink_to(f"../{address}")
            (pf_dir / "sriov_numvfs").write_text(f"{index + 1}\n")
        for name in rdma:
            (base / "infiniband" / name).mkdir(parents=True)
        for node in rdma_nodes:  # e.g. infiniband_verbs/uverbs0
            (base / node).mkdir(parents=True)
        return base

    def bind(self, address, driver):
        link = self.device_dir(address) / "driver"
        if link.is_symlink():
            link.unlink()
        if driver:
            target = self.root / "bus" / "pci" / "drivers" / driver
            target.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)

    def remove_vf(self, pf, address):
        pf_dir = self.device_dir(pf)
        for name in os.listdir(pf_dir):
            if name.startswith("virtfn") and os.readlink(pf_dir / name) == f"../{address}":
                (pf_dir / name).unlink()
        (pf_dir / "sriov_numvfs").write_text(f"{len([n for n in os.listdir(pf_dir) if n.startswith('virtfn')])}\n")
        for entry in sorted(self.device_dir(address).rglob("*"), reverse=True):
            entry.unlink() if entry.is_symlink() or entry.is_file() else entry.rmdir()
        self.device_dir(address).rmdir()

    def auxiliary(self, name, parent, netdevs=(), driver=""):
        base = self.device_dir(parent) / name
        (base / "net").mkdir(parents=True)
        for netdev in netdevs:
            (base / "net" / netdev).mkdir()
        if driver:
            target = self.root / "bus" / "auxiliary" / "drivers" / driver
            target.mkdir(parents=True, exist_ok=True)
            (base / "driver").symlink_to(target)
        bus = self.root / "bus" / "auxiliary" / "devices"
        bus.mkdir(parents=True, exist_ok=True)
        (bus / name).symlink_to(base)
