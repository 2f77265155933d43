"""The SR-IOV network device plugin's configs, unchanged, against a node of PCI functions: a sysfs tree laid out
as the kernel lays it out (a PF with four VFs, two on iavf with netdevs and two on vfio-pci with IOMMU groups,
an RDMA NIC, the node's own NIC), whose netdevs are real links in a throwaway node namespace, and whose
changes reach the daemon as the kernel's link events and uevents do. The kubelet is the stand-in, over the
real protos."""

import json
import os
import sys
import time

import pytest

grpc = pytest.importorskip("grpc")

from pycni.kubelet import deviceplugin_pb2 as api  # noqa: E402
from tests.devices import veth  # noqa: E402
from tests.sysfs_tree import FakeSysfs  # noqa: E402

PF, VFS = "0000:03:00.0", ["0000:03:01.0", "0000:03:01.1", "0000:03:01.2", "0000:03:01.3"]
UPLINK_NIC, RDMA_NIC, ACCELERATOR = "0000:01:00.0", "0000:05:00.0", "0000:07:00.0"


@pytest.fixture
def sriov_node(node, tmp_path):
    """The node: eth0 carries its default route; ens1f0 is the PF (its carrier is its veth peer's state)."""
    for name in ("eth0", "ens1f0", "ens1f0v0", "ens1f0v1", "enp5s0"):
        veth(node, name)
    default_route(node)
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.pci(UPLINK_NIC, device="1572", driver="i40e", netdevs=["eth0"])
    sysfs.pci(PF, device="1592", driver="ice", netdevs=["ens1f0"], numa_node=1)
    for i, address in enumerate(VFS):
        vfio = i >= 2
        sysfs.pci(address, device="1889", driver="vfio-pci" if vfio else "iavf", pf=PF, numa_node=1,
                  netdevs=[] if vfio else [f"ens1f0v{i}"], iommu_group=str(40 + i) if vfio else "")
    sysfs.pci(RDMA_NIC, vendor="15b3", device="1018", driver="mlx5_core", netdevs=["enp5s0"], rdma=["mlx5_0"],
              rdma_nodes=["infiniband_verbs/uverbs0", "infiniband_mad/umad0"], acpi_index="101")
    sysfs.pci(ACCELERATOR, device="0d5c", pci_class="0x120000", driver="vfio-pci", iommu_group="50")
    dev = tmp_path / "dev"
    (dev / "net").mkdir(parents=True)
    (dev / "vhost-net").write_text("")
    (dev / "net" / "tun").write_text("")
    return sysfs


def default_route(node, link="eth0"):
    """`link` becomes the node's uplink: its address and the default route through it."""
    node.run("ip", "addr", "add", "192.0.2.10/24", "dev", link)
    node.run("ip", "route", "add", "default", "via", "192.0.2.1")


def run(start, sysfs, config, *extra):
    plugin = start(config, sysfs=str(sysfs.root), extra=["--dev-root", str(sysfs.root.parent / "dev"), *extra])
    names = {}
    for _ in config.get("resourceList", []) + config.get("resources", []):
        request, _ = plugin.registration()
        names[request.resource_name] = request.endpoint
    return plugin, names


def listed(plugin, endpoint):
    """The first device list a new ListAndWatch stream of `endpoint` sends."""
    first = next(iter(plugin.client(endpoint).ListAndWatch(api.Empty())))
    return {d.ID: d.health for d in first.devices}


def allocate(plugin, endpoint, ids):
    stub = plugin.client(endpoint)
    return stub.Allocate(api.AllocateRequest(container_requests=[
        api.ContainerAllocateRequest(devices_ids=ids)])).container_responses[0]


def announce(node, action, address):
    """The uevent the kernel broadcasts when a PCI function comes or goes."""
    code = ("from pycni.host import uevent; "
            f"uevent.send(uevent.UEvent({action!r}, '/devices/pci0000:00/0000:00:03.0/{address}', 'pci'))")
    node.run(sys.executable, "-c", code)


README_STYLE = {"resourceList": [
    {"resourceName": "intel_sriov_netdevice",
     "selectors": {"vendors": ["8086"], "devices": ["1889"], "drivers": ["iavf"]}},
    {"resourceName": "intel_sriov_dpdk",
     "selectors": [{"vendors": ["8086"], "devices": ["1889"], "drivers": ["vfio-pci"], "pfNames": ["ens1f0"],
                    "needVhostNet": True}]},
    {"resourceName": "mlnx_sriov_rdma", "resourcePrefix": "mellanox.com", "excludeTopology": True,
     "additionalInfo": {"*": {"token": "t-1"}},
     "selectors": {"vendors": ["15b3"], "devices": ["1018"], "drivers": ["mlx5_core"], "isRdma": True}},
]}


def test_their_readme_style_config_yields_the_devices_they_would(sriov_node, start):
    plugin, names = run(start, sriov_node, README_STYLE)
    assert set(names) == {"intel.com/intel_sriov_netdevice", "intel.com/intel_sriov_dpdk",
                          "mellanox.com/mlnx_sriov_rdma"}
    assert listed(plugin, names["intel.com/intel_sriov_netdevice"]) == {VFS[0]: "Healthy", VFS[1]: "Healthy"}
    assert listed(plugin, names["intel.com/intel_sriov_dpdk"]) == {VFS[2]: "Healthy", VFS[3]: "Healthy"}
    assert listed(plugin, names["mellanox.com/mlnx_sriov_rdma"]) == {RDMA_NIC: "Healthy"}
    stub = plugin.client(names["intel.com/intel_sriov_dpdk"])
    first = next(iter(stub.ListAndWatch(api.Empty())))
    assert {d.ID: [n.ID for n in d.topology.nodes] for d in first.devices} == {VFS[2]: [1], VFS[3]: [1]}
    rdma_first = next(iter(plugin.client(names["mellanox.com/mlnx_sriov_rdma"]).ListAndWatch(api.Empty())))
    assert not rdma_first.devices[0].HasField("topology")  # excludeTopology


def test_vfio_devices_get_their_nodes_the_info_variable_and_the_device_info_file(sriov_node, start):
    plugin, names = run(start, sriov_node, README_STYLE)
    response = allocate(plugin, names["intel.com/intel_sriov_dpdk"], [VFS[2]])
    assert response.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK"] == VFS[2]
    assert json.loads(response.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK_INFO"]) == {VFS[2]: {
        "vfio": {"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/42"},
        "vhost": {"net-mount": "/dev/vhost-net", "tun-mount": "/dev/net/tun"}}}
    assert [(d.container_path, d.host_path, d.permissions) for d in response.devices] == [
        ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"), ("/dev/vfio/42", "/dev/vfio/42", "rw"),
        ("/dev/vhost-net", "/dev/vhost-net", "rw"), ("/dev/net/tun", "/dev/net/tun", "rw")]
    # what Multus reads: <dir>/<resource, '/' as '-'>-<device ID>-device.json (device-info spec 1.1.0)
    info = json.loads((plugin.device_info_dir / f"intel.com-intel_sriov_dpdk-{VFS[2]}-device.json").read_text())
    assert info == {"type": "pci", "version": "1.1.0",
                    "pci": {"pci-address": VFS[2], "pf-pci-address": PF, "vhost-net": "/dev/vhost-net"}}
    rdma = allocate(plugin, names["mellanox.com/mlnx_sriov_rdma"], [RDMA_NIC])
    assert json.loads(rdma.envs["PCIDEVICE_MELLANOX_COM_MLNX_SRIOV_RDMA_INFO"]) == {RDMA_NIC: {
        "generic": {"deviceID": RDMA_NIC}, "extraInfo": {"token": "t-1"},
        "rdma": {"rdma_cm": "/dev/infiniband/rdma_cm", "uverbs": "/dev/infiniband/uverbs0",
                 "umad": "/dev/infiniband/umad0"}}}
    assert [d.container_path for d in rdma.devices] == ["/dev/infiniband/rdma_cm", "/dev/infiniband/uverbs0",
                                                        "/dev/infiniband/umad0"]
    rdma_info = json.loads((plugin.device_info_dir / f"mellanox.com-mlnx_sriov_rdma-{RDMA_NIC}-device.json")
                           .read_text())
    assert rdma_info["pci"] == {"pci-address": RDMA_NIC, "rdma-device": "mlx5_0"}


def test_a_selector_that_would_take_the_uplink_does_not_offer_it(sriov_node, start, node, tmp_path):
    config = {"resourceList": [{"resourceName": "every_intel_nic", "selectors": {"vendors": ["8086"]}}]}
    plugin, names = run(start, sriov_node, config, "--node-ip", "192.0.2.10")
    assert listed(plugin, names["intel.com/every_intel_nic"]) == {v: "Healthy" for v in VFS}  # not eth0, not the PF
    state = json.loads(plugin.state_file.read_text())
    assert state["resources"][0]["excluded"] == {UPLINK_NIC: "its interface eth0 carries the default route"}
    shown = node.run(sys.executable, "-m", "pycni", "status", "--conf-dir", str(tmp_path), "--cache-dir",
                     str(tmp_path / "cache"), "--device-plugin-state", str(plugin.state_file)).stdout
    assert f"not offered: {UPLINK_NIC}: its interface eth0 carries the default route" in shown
    log = (tmp_path / "device-plugin.log").read_text()
    assert log.count(f"not offering {UPLINK_NIC}") == 1  # said once, not at every rescan


def test_the_uplink_is_offered_only_named_literally_with_the_opt_in(sriov_node, start):
    config = {"resourceList": [{"resourceName": "uplink", "allowUplink": True,
                                "selectors": {"pciAddresses": [UPLINK_NIC]}}]}
    plugin, names = run(start, sriov_node, config)
    assert listed(plugin, names["intel.com/uplink"]) == {UPLINK_NIC: "Healthy"}


@pytest.mark.parametrize("selector, expected", [
    ({"pfNames": ["ens1f0#1-2"]}, VFS[1:3]),
    ({"pfNames": ["ens1f0#0,3"]}, [VFS[0], VFS[3]]),
    ({"rootDevices": ["0000:03:00.0#2-3"]}, VFS[2:]),
    ({"rootDevices": ["03:00.0"], "drivers": ["iavf"]}, VFS[:2]),
    ({"pciAddresses": ["0000:03:01.1"]}, [VFS[1]]),
    ({"linkTypes": ["ether"], "vendors": ["15b3"]}, [RDMA_NIC]),
    ({"linkTypes": ["infiniband"]}, []),
    ({"acpiIndexes": ["101"]}, [RDMA_NIC]),
    ({"vendors": ["0x15B3"]}, [RDMA_NIC]),
])
def test_pf_names_root_devices_and_the_other_keys(sriov_node, start, selector, expected):
    plugin, names = run(start, sriov_node, {"resourceList": [{"resourceName": "pool", "selectors": selector}]})
    assert listed(plugin, names["intel.com/pool"]) == {v: "Healthy" for v in expected}


def test_a_device_goes_to_the_first_pool_and_the_first_selector_that_takes_it(sriov_node, start):
    config = {"resourceList": [
        {"resourceName": "first", "selectors": [{"pfNames": ["ens1f0#0"]}, {"pfNames": ["ens1f0#1"],
                                                                            "needVhostNet": True}]},
        {"resourceName": "rest", "selectors": {"pfNames": ["ens1f0"]}}]}
    plugin, names = run(start, sriov_node, config)
    assert listed(plugin, names["intel.com/first"]) == {VFS[0]: "Healthy", VFS[1]: "Healthy"}
    assert listed(plugin, names["intel.com/rest"]) == {VFS[2]: "Healthy", VFS[3]: "Healthy"}
    first = allocate(plugin, names["intel.com/first"], [VFS[0]])
    second = allocate(plugin, names["intel.com/first"], [VFS[1]])
    assert [d.container_path for d in first.devices] == [] and \
        [d.container_path for d in second.devices] == ["/dev/vhost-net", "/dev/net/tun"]


def test_vfs_follow_their_pf_carrier_within_a_second(sriov_node, start, node):
    plugin, names = run(start, sriov_node, README_STYLE)
    assert plugin.watch(names["intel.com/intel_sriov_dpdk"]) == {VFS[2]: "Healthy", VFS[3]: "Healthy"}
    node.run("ip", "link", "set", "ens1f0v0", "down")  # a VF's own link does not matter on the node
    before = time.monotonic()
    node.run("ip", "link", "set", "xens1f0", "down")  # the PF loses its carrier
    plugin.until(lambda d: d == {VFS[2]: "Unhealthy", VFS[3]: "Unhealthy"})
    took_down = time.monotonic() - before
    before = time.monotonic()
    node.run("ip", "link", "set", "xens1f0", "up")
    plugin.until(lambda d: d == {VFS[2]: "Healthy", VFS[3]: "Healthy"})
    took_up = time.monotonic() - before
    print(f"PF carrier down -> VFs Unhealthy in {took_down * 1000:.0f} ms, up -> Healthy in {took_up * 1000:.0f} ms")


def test_vfs_that_come_and_go_are_picked_up_without_a_restart(sriov_node, start, node):
    plugin, names = run(start, sriov_node, {"resourceList": [
        {"resourceName": "dpdk", "selectors": {"drivers": ["vfio-pci"]}}]})
    assert plugin.watch(names["intel.com/dpdk"]) == {VFS[2]: "Healthy", VFS[3]: "Healthy"}
    sriov_node.pci("0000:03:01.4", device="1889", driver="vfio-pci", pf=PF, iommu_group="44")
    announce(node, "add", "0000:03:01.4")
    plugin.until(lambda d: "0000:03:01.4" in d)
    sriov_node.bind(VFS[3], "iavf")  # moved back to the kernel driver: no longer this pool's
    announce(node, "bind", VFS[3])
    plugin.until(lambda d: VFS[3] not in d)
    sriov_node.remove_vf(PF, "0000:03:01.4")
    announce(node, "remove", "0000:03:01.4")
    assert plugin.until(lambda d: "0000:03:01.4" not in d) == {VFS[2]: "Healthy"}


def test_a_vf_in_a_pod_stays_listed_and_its_device_info_goes_when_it_is_back(sriov_node, start, node, sandbox):
    plugin, names = run(start, sriov_node, README_STYLE)
    endpoint = names["intel.com/intel_sriov_netdevice"]
    plugin.watch(endpoint)
    allocate(plugin, endpoint, [VFS[0]])
    info = plugin.device_info_dir / f"intel.com-intel_sriov_netdevice-{VFS[0]}-device.json"
    assert json.loads(info.read_text())["pci"] == {"pci-address": VFS[0], "pf-pci-address": PF}
    pod = sandbox.pod()
    node.run("ip", "link", "set", "ens1f0v0", "netns", pod.path)  # what host-device does
    time.sleep(0.5)
    assert listed(plugin, endpoint) == {VFS[0]: "Healthy", VFS[1]: "Healthy"}  # its PF is up: still healthy
    assert info.exists()
    pod.run("ip", "link", "set", "ens1f0v0", "netns", node.path)  # the pod is gone: the VF is free again
    deadline = time.monotonic() + 5
    while info.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not info.exists()


def test_auxiliary_devices(sriov_node, start, node):
    veth(node, "enp3s0f0s4")
    sriov_node.auxiliary("ice.sf.4", PF, netdevs=["enp3s0f0s4"], driver="ice_sf")
    sriov_node.auxiliary("ice.eth.0", PF, driver="ice_eth")
    plugin, names = run(start, sriov_node, {"resourceList": [
        {"resourceName": "sfs", "deviceType": "auxNetDevice", "selectors": {"pfNames": ["ens1f0"],
                                                                          "auxTypes": ["sf"]}}]})
    assert plugin.watch(names["intel.com/sfs"]) == {"ice.sf.4": "Healthy"}
    response = allocate(plugin, names["intel.com/sfs"], ["ice.sf.4"])
    assert json.loads(response.envs["PCIDEVICE_INTEL_COM_SFS_INFO"]) == {"ice.sf.4": {
        "generic": {"deviceID": "ice.sf.4"}}}
    node.run("ip", "link", "set", "xens1f0", "down")
    plugin.until(lambda d: d == {"ice.sf.4": "Unhealthy"})


def test_a_netdev_glob_never_offers_the_uplink_nor_pod_links(node, start, tmp_path):
    veth(node, "eth0")
    veth(node, "eth1")
    # named as pycni's bridge names a pod's host-side veth
    node.run("ip", "link", "add", "vethabcdef01234", "type", "veth", "peer", "name", "podside")
    node.run("ip", "link", "add", "br0", "type", "bridge")
    veth(node, "eth2")
    node.run("ip", "link", "set", "eth2", "master", "br0")
    default_route(node)
    node.run("ip", "addr", "add", "198.51.100.7/24", "dev", "eth1")
    plugin = start([{"resourceName": "pycni.io/nic", "type": "netdev", "selector": {"ifNames": ["*"]}}],
                   extra=["--node-ip", "198.51.100.7"])
    plugin.registration()
    devices = plugin.watch()
    assert not {"eth0", "eth1", "eth2", "br0", "vethabcdef01234", "lo"} & set(devices)
    assert {"xeth0", "xeth1", "xeth2", "podside"} <= set(devices)  # the other ends: ordinary links
    excluded = json.loads(plugin.state_file.read_text())["resources"][0]["excluded"]
    assert excluded == {"eth0": "carries the default route", "eth1": "holds the node IP 198.51.100.7",
                        "eth2": "is a port of bridge br0", "br0": "is a bridge",
                        "vethabcdef01234": "is a pod's veth"}


def test_a_netdev_uplink_named_literally_with_the_opt_in_is_offered(node, start):
    veth(node, "eth0")
    default_route(node)
    plugin = start([{"resourceName": "pycni.io/nic", "type": "netdev", "allowUplink": True,
                     "selector": {"ifNames": ["eth0", "eth*"]}}])
    plugin.registration()
    assert plugin.watch() == {"eth0": "Healthy"}
    assert os.path.exists(plugin.state_file)


def test_an_accelerator_pool_takes_accelerators_only(sriov_node, start):
    plugin, names = run(start, sriov_node, {"resourceList": [
        {"resourceName": "qat", "deviceType": "accelerator", "selectors": {"drivers": ["vfio-pci"]}}]})
    assert listed(plugin, names["intel.com/qat"]) == {ACCELERATOR: "Healthy"}  # not the vfio VFs: class 0x12
    response = allocate(plugin, names["intel.com/qat"], [ACCELERATOR])
    assert [d.container_path for d in response.devices] == ["/dev/vfio/vfio", "/dev/vfio/50"]


def test_the_way_to_the_api_server_is_never_offered(node, start):
    for name in ("eth0", "eth3"):
        veth(node, name)
    default_route(node)
    node.run("ip", "addr", "add", "203.0.113.2/24", "dev", "eth3")
    plugin = start([{"resourceName": "pycni.io/nic", "type": "netdev", "selector": {"ifNames": ["eth*"]}}],
                   extra=["--api-server", "203.0.113.50"])
    plugin.registration()
    assert plugin.watch() == {}
    excluded = json.loads(plugin.state_file.read_text())["resources"][0]["excluded"]
    assert excluded == {"eth0": "carries the default route", "eth3": "is the way to the API server 203.0.113.50"}
