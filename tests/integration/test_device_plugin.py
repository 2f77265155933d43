"""`pycni device-plugin` against a stand-in kubelet (the real protos over real unix sockets), with real
interfaces changing state in a throwaway node namespace."""

import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

grpc = pytest.importorskip("grpc")

from pycni.kubelet import deviceplugin_pb2 as api  # noqa: E402
from pycni.kubelet.standin import FakeKubelet  # noqa: E402
from tests.devices import NIC, NIC_SOCKET, veth  # noqa: E402


def nic_resource(**selector):
    return {"resourceName": NIC, "type": "netdev", "selector": selector or {"ifNames": ["ens*"]}}


def test_registers_after_serving_and_streams_health_from_real_link_changes(node, start):
    veth(node, "ens1")
    veth(node, "ens2", up=False)
    veth(node, "eth9")  # not selected
    plugin = start([nic_resource()])
    request, options = plugin.registration()
    assert (request.version, request.endpoint, request.resource_name) == ("v1beta1", NIC_SOCKET, NIC)
    assert request.options.get_preferred_allocation_available and options.get_preferred_allocation_available
    assert plugin.watch() == {"ens1": "Healthy", "ens2": "Unhealthy"}  # the full list first
    node.run("ip", "link", "set", "ens1", "down")
    assert plugin.until(lambda d: d.get("ens1") == "Unhealthy")["ens2"] == "Unhealthy"
    node.run("ip", "link", "set", "ens2", "up")
    plugin.until(lambda d: d.get("ens2") == "Healthy")
    node.run("ip", "link", "set", "ens1", "up")
    plugin.until(lambda d: d.get("ens1") == "Healthy")
    node.run("ip", "link", "set", "xens1", "down")  # ens1 stays up but loses its carrier
    plugin.until(lambda d: d.get("ens1") == "Unhealthy")
    node.run("ip", "link", "set", "xens1", "up")
    plugin.until(lambda d: d.get("ens1") == "Healthy")
    veth(node, "ens3")
    plugin.until(lambda d: d.get("ens3") == "Healthy")
    node.run("ip", "link", "del", "ens3")  # not allocated: it leaves the list
    assert "ens3" not in plugin.until(lambda d: "ens3" not in d)


def test_allocate_and_a_device_moved_into_a_pod_stays_listed(sandbox, node, start):
    veth(node, "ens1")
    veth(node, "ens2", up=False)
    plugin = start([nic_resource()], extra=["--metrics-address", "127.0.0.1:9751"])
    plugin.registration()
    plugin.watch()
    stub = plugin.client()
    node.run("ip", "link", "set", "ens2", "up")
    plugin.until(lambda d: d.get("ens2") == "Healthy")
    response = stub.Allocate(api.AllocateRequest(container_requests=[
        api.ContainerAllocateRequest(devices_ids=["ens1"]),
        api.ContainerAllocateRequest(devices_ids=["ens2", "ens1"])]))
    first, second = response.container_responses
    assert dict(first.envs) == {"PCIDEVICE_PYCNI_IO_NIC": "ens1"} and dict(first.annotations) == {NIC: "ens1"}
    assert dict(second.envs) == {"PCIDEVICE_PYCNI_IO_NIC": "ens2,ens1"}
    pod = sandbox.pod()
    node.run("ip", "link", "set", "ens1", "netns", pod.path)  # what host-device does
    time.sleep(1)
    assert plugin.latest()["ens1"] == "Healthy"  # still listed, still healthy
    pod.run("ip", "link", "set", "ens1", "netns", node.path)  # the pod gave it back: an ordinary device again
    node.run("ip", "link", "set", "ens1", "up")
    plugin.until(lambda d: d.get("ens1") == "Healthy")
    node.run("ip", "link", "del", "ens1")  # now not allocated any more: gone means gone
    plugin.until(lambda d: "ens1" not in d)
    scrape = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9751/metrics').read().decode())"
    metrics = node.run(sys.executable, "-c", scrape).stdout
    assert 'pycni_devices{health="Healthy",resource="pycni.io/nic"} 1.0' in metrics
    assert 'pycni_devices{health="Unhealthy",resource="pycni.io/nic"} 0.0' in metrics
    assert 'pycni_device_allocations_total{resource="pycni.io/nic"} 3.0' in metrics


def test_bad_requests_are_invalid_argument_naming_the_ids(node, start, tmp_path):
    veth(node, "ens1")
    veth(node, "ens2", up=False)
    sysfs = tmp_path / "sys"
    for name, numa in (("ens1", 0), ("ens4", 1), ("ens5", 1)):
        (sysfs / "class" / "net" / name / "device").mkdir(parents=True)
        (sysfs / "class" / "net" / name / "device" / "numa_node").write_text(f"{numa}\n")
    veth(node, "ens4")
    veth(node, "ens5")
    plugin = start([nic_resource()], sysfs=str(sysfs))
    plugin.registration()
    plugin.watch()
    stub = plugin.client()
    for ids, words in ((["ens9"], "unknown device IDs ['ens9']"), (["ens2"], "unhealthy device IDs ['ens2']")):
        with pytest.raises(grpc.RpcError) as failed:
            stub.Allocate(api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=ids)]))
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in failed.value.details()

    def preferred(available, must=(), size=1):
        return list(stub.GetPreferredAllocation(api.PreferredAllocationRequest(container_requests=[
            api.ContainerPreferredAllocationRequest(available_deviceIDs=available, must_include_deviceIDs=list(must),
                                                    allocation_size=size)])).container_responses[0].deviceIDs)

    assert preferred(["ens1", "ens4", "ens5"], size=2) == ["ens4", "ens5"]  # both on NUMA node 1
    assert preferred(["ens1", "ens4", "ens5"], must=["ens5"], size=2) == ["ens5", "ens4"]
    assert preferred(["ens1", "ens4"], must=["ens1"], size=2) == ["ens1", "ens4"]
    for available, must, size, words in ((["ens1"], ["ens4"], 1, "not available"),
                                         (["ens1", "ens4"], ["ens1", "ens4"], 1, "allocation size 1"),
                                         (["ens1", "ens2"], [], 1, "unhealthy device IDs ['ens2']")):
        with pytest.raises(grpc.RpcError) as failed:
            preferred(available, must, size)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in failed.value.details()


def test_tun_devices_and_fifty_allocations_at_once(node, start, tmp_path):
    plugin = start([{"resourceName": "pycni.io/tun", "type": "tun", "count": 4},
                    {"resourceName": "pycni.io/notun", "type": "tun", "count": 2, "path": str(tmp_path / "nothing")},
                    {"resourceName": "example.com/none", "type": "netdev", "selector": {"ifNames": ["zz*"]}}])
    names = {plugin.registration()[0].resource_name for _ in range(3)}
    assert names == {"pycni.io/tun", "pycni.io/notun", "example.com/none"}
    expected = "Healthy" if os.path.exists("/dev/net/tun") else "Unhealthy"
    assert plugin.watch("pycni-pycni_io_tun.sock") == {f"tun-{i}": expected for i in range(4)}
    assert plugin.watch("pycni-pycni_io_notun.sock") == {"tun-0": "Unhealthy", "tun-1": "Unhealthy"}
    assert plugin.watch("pycni-example_com_none.sock") == {}  # nothing matches yet: registered all the same
    if expected == "Healthy":
        stub = plugin.client("pycni-pycni_io_tun.sock")

        def allocate(i):
            request = api.AllocateRequest(container_requests=[
                api.ContainerAllocateRequest(devices_ids=[f"tun-{i % 4}"])])
            return stub.Allocate(request).container_responses[0].devices[0]

        with ThreadPoolExecutor(50) as pool:
            specs = list(pool.map(allocate, range(50)))
        assert len(specs) == 50
        assert {(s.container_path, s.host_path, s.permissions) for s in specs} == {("/dev/net/tun", "/dev/net/tun",
                                                                                    "rwm")}
    veth(node, "zz0")
    plugin.until(lambda d: d == {"zz0": "Healthy"})


def test_kubelet_restart_is_followed_by_serving_and_registering_again(node, start):
    veth(node, "ens1")
    plugin = start([nic_resource()])
    plugin.registration()
    before = time.monotonic()
    plugin.kubelet.restart()
    request, _ = plugin.registration()
    assert request.resource_name == NIC and time.monotonic() - before < 5
    assert os.path.exists(plugin.dir / NIC_SOCKET)
    assert plugin.watch() == {"ens1": "Healthy"}


def test_sigterm_removes_the_sockets_and_exits_0(node, start):
    plugin = start([nic_resource()])
    plugin.registration()
    assert os.path.exists(plugin.dir / NIC_SOCKET)
    plugin.proc.send_signal(signal.SIGTERM)
    assert plugin.proc.wait(timeout=10) == 0
    assert not os.path.exists(plugin.dir / NIC_SOCKET)


@pytest.mark.parametrize("config, words", [
    ("{", "not JSON"),
    ({"resources": [{"type": "netdev"}]}, "`resources[0]`: 'resourceName' is a required property"),
    ({"resources": [{"resourceName": "nic", "type": "tun"}]}, "not domain/name"),
    ({"resources": [{"resourceName": "kubernetes.io/nic", "type": "tun"}]}, "kubernetes.io domain"),
    ({"resources": [{"resourceName": "a.io/x", "type": "gpu"}]}, "unknown type 'gpu': known are netdev, tun, devices"),
    ({"resources": [{"resourceName": "a.io/x", "type": "tun"}, {"resourceName": "a.io/x", "type": "tun"}]},
     "appears twice"),
    ({"resources": [{"resourceName": "a.io/x", "type": "tun", "count": 0}]}, "0 is less than the minimum of 1"),
    ({"resources": [{"resourceName": "a.io/x", "type": "netdev", "selector": {"ifname": ["ens*"]}}]},
     "`resources[0].selector.ifname`: unknown key; did you mean `ifNames`?"),
    ({"resources": [{"resourceName": "a.io/x", "type": "netdev", "selector": {}}]}, "selects every interface"),
    ({"resources": [{"resourceName": "a.io/x", "type": "netdev"}]}, "'selector' is a required property"),
    ({"resources": [{"resourceName": "a.io/x", "type": "netdev", "allowUplink": True,
                     "selector": {"ifNames": ["eth*"]}}]}, "none is named without a wildcard"),
    ({"resources": [{"resourceName": "a.io/x", "type": "tun", "selector": {"ifNames": ["x"]}}]},
     "`resources[0].selector`: unknown key"),
    ({"resourceList": [{"resourceName": "a", "selectors": {"vendors": ["8086"], "pfName": ["ens1"]}}]},
     "`resourceList[0].selectors.pfName`: unknown key; did you mean `pfNames`?"),
    ({"resourceList": [{"resourceName": "a", "selectors": [{"vendors": ["8086"]}, {"vdpaType": "virtio"}]}]},
     "`resourceList[0].selectors[1].vdpaType`: not implemented by pycni: vDPA devices"),
    ({"resourceList": [{"resourceName": "a"}]}, "has no selectors"),
    ({"resourceList": [{"resourceName": "a", "selectors": [{"isRdma": False}]}]}, "selects every device"),
    ({"resourceList": [{"resourceName": "a", "selectors": {"pfNames": ["ens1#3-1"]}}]}, "ends before it starts"),
    ({"resourceList": [{"resourceName": "a-b", "selectors": {"vendors": ["8086"]}}]}, "does not match"),
    ({"resourceList": [{"resourceName": "a", "deviceType": "accelerator", "selectors": {"pfNames": ["x"]}}]},
     "`resourceList[0].selectors.pfNames`: unknown key"),
    ({"resourceList": [{"resourceName": "a", "selectors": {"vendors": ["8086"]}}],
      "resources": [{"resourceName": "intel.com/a", "type": "tun"}]}, "'intel.com/a' appears twice"),
    ({"resourceLists": []}, "unknown key; did you mean `resourceList`?"),
    (None, "cannot read"),
])
def test_a_bad_config_is_one_line_and_exit_2_with_nothing_served(node, tmp_path, config, words):
    plugin_dir = tmp_path / "device-plugins"
    plugin_dir.mkdir()
    kubelet = FakeKubelet(str(plugin_dir))
    path = tmp_path / "devices.json"
    if config is not None:
        path.write_text(config if isinstance(config, str) else json.dumps(config))
    try:
        done = node.run(sys.executable, "-m", "pycni", "device-plugin", "--config", str(path), "--plugin-dir",
                        str(plugin_dir), check=False)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], done.stderr
        assert os.listdir(plugin_dir) == ["kubelet.sock"] and kubelet.registration.registered.empty()
    finally:
        kubelet.stop()


def test_status_shows_which_pod_holds_which_device(node, tmp_path):
    from pycni.kubelet.standin import PodDevices, PodResourcesStub, serve_pod_resources

    stub = PodResourcesStub([PodDevices("team", "vpn-0", "vpn", "pycni.io/tun", ["tun-3"]),
                             PodDevices("team", "web-1", "app", NIC, ["0000:3b:02.1"])],
                            allocatable={NIC: ["0000:3b:02.1", "0000:3b:02.2"], "pycni.io/tun": ["tun-3", "tun-4"]})
    socket_path = str(tmp_path / "pod-resources.sock")
    server = serve_pod_resources(socket_path, stub)
    try:
        common = ["--conf-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--pod-resources-socket",
                  socket_path]
        data = json.loads(node.run(sys.executable, "-m", "pycni", "status", "--json", *common).stdout)
        assert data["devices"]["allocatable"] == {NIC: ["0000:3b:02.1", "0000:3b:02.2"],
                                                  "pycni.io/tun": ["tun-3", "tun-4"]}
        assert {"namespace": "team", "pod": "web-1", "container": "app", "resource": NIC,
                "devices": ["0000:3b:02.1"]} in data["devices"]["held"]
        human = node.run(sys.executable, "-m", "pycni", "status", *common).stdout
        assert "pycni.io/nic 0000:3b:02.1 held by pod team/web-1 container app" in human
    finally:
        server.stop(0)


def test_status_says_whether_the_device_plugin_that_wrote_the_state_still_runs(node, tmp_path, start):
    """The state file of a device plugin that was killed (an OOM kill: no clean exit) stays behind; `status`
    tells it is not served instead of showing its devices as if they were. A clean exit removes it."""
    def status(*extra):
        return node.run(sys.executable, "-m", "pycni", "status", *extra, "--conf-dir", str(tmp_path),
                        "--cache-dir", str(tmp_path / "cache"), "--pod-resources-socket", str(tmp_path / "none.sock"),
                        "--device-plugin-state", str(plugin.state_file)).stdout

    plugin = start([{"resourceName": "pycni.io/tun", "type": "tun", "count": 2}])
    plugin.registration()
    served = json.loads(status("--json"))["devicePlugin"]
    assert served["alive"] is True and 0 <= served["ageSeconds"] < 60
    healthy = 2 if os.path.exists("/dev/net/tun") else 0
    assert f"pycni.io/tun: 2 devices, {healthy} healthy\n" in status() and "NOT RUNNING" not in status()
    plugin.proc.kill()
    plugin.proc.wait(timeout=10)
    assert plugin.state_file.exists()
    gone = json.loads(status("--json"))["devicePlugin"]
    assert gone["alive"] is False and gone["resources"][0]["name"] == "pycni.io/tun"
    human = status()
    assert f"device plugin: NOT RUNNING (pid {gone['pid']} is gone)" in human
    assert f"pycni.io/tun: 2 devices, {healthy} healthy (not served)" in human

    again = start([{"resourceName": "pycni.io/tun", "type": "tun", "count": 1}])  # a new one writes anew
    again.registration()
    assert json.loads(status("--json"))["devicePlugin"]["alive"] is True
    again.proc.send_signal(signal.SIGTERM)
    assert again.proc.wait(timeout=10) == 0
    assert not again.state_file.exists() and not os.path.exists(f"{again.state_file}.lock")
    assert json.loads(status("--json"))["devicePlugin"] is None
