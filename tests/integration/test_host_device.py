"""host-device: real links in a throwaway node namespace handed to real pod namespaces and given back.

The "NICs" are veth ends (this kernel has no dummy or netdevsim) whose peers stay on the node, so traffic
over a handed-out device is real. PCI and auxiliary-bus lookups read a sysfs tree the test builds
(`sysfsRoot`), since there is no PCI NIC here; the netdev side is always the real one."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import ping, plugin_env, reservation_files, run_plugin

SUBNET = "10.66.0.0/24"
PEER_ADDRESS = "10.66.0.1/24"


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "state")


def conf(data_dir, version="1.0.0", ipam=True, **keys):
    config = {"cniVersion": version, "name": "sriovnet", "type": "host-device", "dataDir": data_dir + "/hd"}
    if ipam:
        config["ipam"] = {"type": "host-local", "dataDir": data_dir + "/ipam", "ranges": [[{"subnet": SUBNET}]]}
    config.update(keys)
    return config


def make_nic(node, name, mtu=1400, mac="02:42:ac:11:00:09", up=True):
    """A "NIC" on the node: one end of a veth whose peer `<name>p` stays on the node with PEER_ADDRESS."""
    node.run("ip", "link", "add", name, "mtu", str(mtu), "address", mac, "type", "veth", "peer", "name", name + "p",
             "mtu", str(mtu))
    node.run("ip", "link", "set", name + "p", "up")
    node.run("ip", "addr", "add", PEER_ADDRESS, "dev", name + "p")
    if up:
        node.run("ip", "link", "set", name, "up")


def link(ns, name):
    found = ns.link_json(name) if name in [entry["ifname"] for entry in ns.link_json()] else []
    return found[0] if found else None


class HostDevice:
    def __init__(self, sandbox, node, cni_bin):
        self.sandbox, self.node, self.cni_bin = sandbox, node, cni_bin

    def call(self, command, config, pod_path, container_id, ifname="net1", args="", prev=None, bin_dir=None):
        bin_dir = bin_dir or self.cni_bin
        config = dict(config, prevResult=prev) if prev else config
        env = plugin_env(command, container_id, pod_path, ifname, args=args, path=bin_dir)
        return run_plugin(self.node, f"{bin_dir}/host-device", env, json.dumps(config))


@pytest.fixture
def hd(sandbox, node, cni_bin):
    return HostDevice(sandbox, node, cni_bin)


def ipam_files(data_dir):
    return reservation_files(os.path.join(data_dir, "ipam", "sriovnet"))


def test_add_moves_the_device_with_its_address_and_del_gives_it_back_as_it_was(sandbox, node, hd, data_dir):
    make_nic(node, "nic0")
    pod = sandbox.pod()
    config = conf(data_dir)
    run = hd.call("ADD", conf(data_dir, device="nic0"), pod.path, "c1")
    assert run.ok, run.stdout
    result = run.json
    moved = link(pod, "net1")
    assert link(node, "nic0") is None and moved is not None
    assert moved["ifalias"] == "nic0" and moved["mtu"] == 1400 and moved["address"] == "02:42:ac:11:00:09"
    assert "UP" in moved["flags"]
    assert result["interfaces"] == [{"name": "net1", "mac": "02:42:ac:11:00:09", "sandbox": pod.path}]
    assert result["ips"][0]["address"] == "10.66.0.2/24" and result["ips"][0]["interface"] == 0
    assert [a for a in pod.addresses("net1") if not a.startswith("fe80")] == ["10.66.0.2/24"]
    assert ping(node, "10.66.0.2")  # over the handed-out device itself
    # the pod changes what it was given; DEL restores the node's view of it
    pod.run("ip", "link", "set", "net1", "mtu", "1300")
    pod.run("ip", "link", "set", "net1", "address", "02:00:00:00:00:01")
    assert hd.call("DEL", dict(config, device="nic0"), pod.path, "c1", prev=result).ok
    back = link(node, "nic0")
    assert back is not None and link(pod, "net1") is None
    assert back["mtu"] == 1400 and back["address"] == "02:42:ac:11:00:09" and back.get("ifalias", "") == ""
    assert "UP" in back["flags"]
    assert ipam_files(data_dir) == []
    assert hd.call("DEL", dict(config, device="nic0"), pod.path, "c1", prev=result).ok  # idempotent


def test_a_device_that_was_down_comes_back_down(sandbox, node, hd, data_dir):
    make_nic(node, "nic0", up=False)
    pod = sandbox.pod()
    config = conf(data_dir, ipam=False, device="nic0")
    run = hd.call("ADD", config, pod.path, "c1", ifname="eth7")
    assert run.ok, run.stdout
    assert "UP" in link(pod, "eth7")["flags"] and "ips" not in run.json
    assert hd.call("DEL", config, pod.path, "c1", ifname="eth7").ok
    assert "UP" not in link(node, "nic0")["flags"]


def fake_sysfs(tmp_path, pci, netdev, aux=""):
    """A sysfs tree naming `netdev` as the netdev of PCI function `pci` (and of auxiliary device `aux`)."""
    root = tmp_path / "sys"
    device_dir = root / "devices" / "pci0000:3b" / pci
    (device_dir / "net" / netdev).mkdir(parents=True)
    (root / "bus" / "pci" / "devices").mkdir(parents=True)
    os.symlink(device_dir, root / "bus" / "pci" / "devices" / pci)
    (root / "class" / "net").mkdir(parents=True)
    (root / "class" / "net" / netdev).mkdir()
    os.symlink(device_dir, root / "class" / "net" / netdev / "device")
    if aux:
        (root / "bus" / "auxiliary" / "devices" / aux / "net" / netdev).mkdir(parents=True)
    return str(root)


@pytest.mark.parametrize("how", ["hwaddr", "kernelpath", "pciBusID", "runtimeConfig.deviceID", "deviceID",
                                 "auxiliary", "netdev-name"])
def test_every_way_of_naming_the_device(sandbox, node, hd, data_dir, tmp_path, how):
    make_nic(node, "vf3", mac="02:aa:bb:cc:dd:03")
    root = fake_sysfs(tmp_path, "0000:3b:02.3", "vf3", aux="mlx5_core.sf.3")
    keys = {
        "hwaddr": {"hwaddr": "02:AA:BB:CC:DD:03"},
        "kernelpath": {"kernelpath": "/sys/devices/pci0000:3b/0000:3b:02.3"},
        "pciBusID": {"pciBusID": "3b:02.3"},
        "runtimeConfig.deviceID": {"runtimeConfig": {"deviceID": "0000:3b:02.3"}},
        "deviceID": {"deviceID": "0000:3b:02.3"},
        "auxiliary": {"runtimeConfig": {"deviceID": "mlx5_core.sf.3"}},
        "netdev-name": {"runtimeConfig": {"deviceID": "vf3"}},
    }[how]
    config = conf(data_dir, version="1.1.0", ipam=False, sysfsRoot=root, **keys)
    pod = sandbox.pod()
    run = hd.call("ADD", config, pod.path, "c1")
    assert run.ok, run.stdout
    assert run.json["interfaces"][0]["pciID"] == "0000:3b:02.3"  # 1.1.0 results carry the PCI function
    assert link(pod, "net1")["address"] == "02:aa:bb:cc:dd:03"
    assert hd.call("DEL", config, pod.path, "c1").ok
    assert link(node, "vf3") is not None


@pytest.mark.parametrize("keys, code, words", [
    ({}, 7, "no device named"),
    ({"device": "nic0", "hwaddr": "02:42:ac:11:00:09"}, 7, "one way only"),
    ({"device": "nope0"}, 7, "device 'nope0'"),
    ({"pciBusID": "0000:99:00.0"}, 7, "pciBusID '0000:99:00.0'"),
    ({"kernelpath": "/etc/passwd"}, 7, "/sys/devices/"),
    ({"device": "a/b"}, 7, "device"),
    ({"resourceName": "pycni.io/nic"}, 7, "K8S_POD_NAME"),
])
def test_bad_configs_fail_with_code_7_and_change_nothing(sandbox, node, hd, data_dir, keys, code, words):
    make_nic(node, "nic0")
    pod = sandbox.pod()
    before = sorted(entry["ifname"] for entry in node.link_json())
    run = hd.call("ADD", conf(data_dir, **keys), pod.path, "c1")
    assert not run.ok and run.json["code"] == code and words in run.json["msg"] + run.json.get("details", "")
    assert sorted(entry["ifname"] for entry in node.link_json()) == before
    assert link(node, "nic0").get("ifalias", "") == ""
    assert ipam_files(data_dir) == []


def test_failed_add_leaves_the_device_on_the_node_untouched(sandbox, node, hd, data_dir):
    make_nic(node, "nic0")
    pod = sandbox.pod()
    # host-local refuses an address outside its range: the IPAM step fails after the move
    run = hd.call("ADD", conf(data_dir, device="nic0"), pod.path, "c1",
                  args="IgnoreUnknown=1;IP=10.99.0.5")
    assert not run.ok
    back = link(node, "nic0")
    assert back is not None and link(pod, "net1") is None
    assert back["mtu"] == 1400 and back["address"] == "02:42:ac:11:00:09" and back.get("ifalias", "") == ""
    assert "UP" in back["flags"]
    assert "10.99.0.5" in run.json["msg"] + run.json.get("details", "")  # it failed where it should have
    assert ipam_files(data_dir) == [] and not os.listdir(os.path.join(data_dir, "hd", "sriovnet"))


def test_a_device_in_one_pod_cannot_be_taken_by_another_and_a_race_has_one_winner(sandbox, node, hd, data_dir):
    make_nic(node, "nic0")
    config = conf(data_dir, device="nic0")
    first, second = sandbox.pod(), sandbox.pod()
    assert hd.call("ADD", config, first.path, "c1").ok
    again = hd.call("ADD", config, second.path, "c2")
    assert not again.ok and "nic0" in again.json["msg"] and "already in a pod" in again.json["details"]
    assert hd.call("DEL", config, first.path, "c1").ok
    # now both at once, several rounds: exactly one wins each time and the loser leaves nothing
    for round_ in range(3):
        pods = {"a": sandbox.pod(), "b": sandbox.pod()}
        with ThreadPoolExecutor(2) as pool:
            futures = {k: pool.submit(hd.call, "ADD", config, pod.path, f"r{round_}{k}") for k, pod in pods.items()}
        runs = {k: f.result() for k, f in futures.items()}
        winners = [k for k, run in runs.items() if run.ok]
        assert len(winners) == 1, {k: r.stdout for k, r in runs.items()}
        loser = "b" if winners == ["a"] else "a"
        assert link(pods[loser], "net1") is None
        assert len(ipam_files(data_dir)) == 1
        assert hd.call("DEL", config, pods[winners[0]].path, f"r{round_}{winners[0]}").ok
        assert link(node, "nic0") is not None and ipam_files(data_dir) == []


def test_del_after_the_pod_namespace_is_gone_releases_the_address(sandbox, node, hd, data_dir):
    make_nic(node, "nic0")
    pod = sandbox.pod()
    config = conf(data_dir, device="nic0")
    result = hd.call("ADD", config, pod.path, "c1").json
    sandbox.remove(pod)  # a veth end is virtual: it dies with the namespace
    assert hd.call("DEL", config, pod.path, "c1", prev=result).ok
    assert hd.call("DEL", config, "", "c1", prev=result).ok
    assert ipam_files(data_dir) == []


def test_check_and_gc(sandbox, node, hd, data_dir):
    make_nic(node, "nic0")
    make_nic(node, "nic1", mac="02:42:ac:11:00:0a")
    config = conf(data_dir)
    pod0, pod1 = sandbox.pod(), sandbox.pod()
    r0 = hd.call("ADD", dict(config, device="nic0"), pod0.path, "c0").json
    hd.call("ADD", dict(config, device="nic1"), pod1.path, "c1")
    assert hd.call("CHECK", config, pod0.path, "c0", prev=r0).ok
    pod0.run("ip", "addr", "flush", "dev", "net1")
    broken = hd.call("CHECK", config, pod0.path, "c0", prev=r0)
    assert not broken.ok and "lacks address" in broken.json["msg"]
    assert len(ipam_files(data_dir)) == 2
    gc = dict(config, cniVersion="1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "net1"}]})
    assert hd.call("GC", gc, "", "").ok
    assert len(ipam_files(data_dir)) == 1  # c0's address freed: no leak after a reboot (reference #1196)
    assert os.listdir(os.path.join(data_dir, "hd", "sriovnet")) == ["c1-net1"]
    assert hd.call("STATUS", dict(config, cniVersion="1.1.0"), "", "").ok


def test_reference_and_pycni_del_each_others_devices(sandbox, node, hd, data_dir, reference_bin):
    make_nic(node, "nic0")
    config = conf(data_dir, ipam=False, device="nic0")
    for adder, deleter in ((reference_bin, hd.cni_bin), (hd.cni_bin, reference_bin)):
        pod = sandbox.pod()
        run = hd.call("ADD", config, pod.path, "c1", bin_dir=adder)
        assert run.ok, (adder, run.stdout)
        assert link(pod, "net1")["ifalias"] == "nic0"
        done = hd.call("DEL", config, pod.path, "c1", prev=run.json, bin_dir=deleter)
        assert done.ok, (deleter, done.stdout)
        back = link(node, "nic0")
        assert back is not None and link(pod, "net1") is None, (adder, deleter)
        if deleter == hd.cni_bin:  # pycni also clears the alias and restores the up state
            assert back.get("ifalias", "") == "" and "UP" in back["flags"]
        else:  # the reference leaves both behind
            node.run("ip", "link", "set", "nic0", "alias", "")
            node.run("ip", "link", "set", "nic0", "up")


def test_resource_name_asks_the_kubelets_pod_resources_which_device_the_pod_got(sandbox, node, hd, data_dir,
                                                                                 tmp_path):
    from pycni.kubelet.standin import PodDevices, PodResourcesStub, serve_pod_resources

    make_nic(node, "nic0")
    make_nic(node, "nic1", mac="02:42:ac:11:00:0a")
    stub = PodResourcesStub([PodDevices("team", "web-1", "app", "pycni.io/nic", ["nic1", "nic0"]),
                             PodDevices("team", "web-1", "app", "pycni.io/other", ["x"])])
    socket_path = str(tmp_path / "kubelet.sock")
    server = serve_pod_resources(socket_path, stub)
    try:
        config = conf(data_dir, resourceName="pycni.io/nic", podResourcesSocket=socket_path)
        args = "K8S_POD_NAMESPACE=team;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=c1"
        first, second = sandbox.pod(), sandbox.pod()
        run = hd.call("ADD", config, first.path, "c1", args=args)
        assert run.ok, run.stdout
        assert stub.calls == ["Get team/web-1"]
        assert link(first, "net1")["ifalias"] == "nic1"  # the kubelet's first allocated device
        # a second network of the same pod gets the next allocated device still on the node
        run2 = hd.call("ADD", config, first.path, "c1", ifname="net2", args=args)
        assert run2.ok, run2.stdout
        assert link(first, "net2")["ifalias"] == "nic0"
        unknown = hd.call("ADD", config, second.path, "c2", args="K8S_POD_NAMESPACE=team;K8S_POD_NAME=nobody")
        assert not unknown.ok and "NOT_FOUND" in unknown.json["details"]
        assert hd.call("DEL", config, first.path, "c1", ifname="net2", args=args).ok
        assert hd.call("DEL", config, first.path, "c1", args=args).ok
        assert link(node, "nic0") is not None and link(node, "nic1") is not None
    finally:
        server.stop(0)


def test_shipped_secondary_network_through_libcni(sandbox, node, cni_bin, cnidriver, data_dir, tmp_path):
    """The conflist in conf/ as a runtime (Multus filling the deviceID capability) drives it through libcni."""
    shipped = os.path.join(os.path.dirname(__file__), "..", "..", "conf", "20-host-device-secondary.conflist")
    conflist = json.load(open(shipped))
    conflist["plugins"][0]["dataDir"] = data_dir + "/hd"
    conflist["plugins"][0]["ipam"]["dataDir"] = data_dir + "/ipam"
    path = tmp_path / "net.conflist"
    path.write_text(json.dumps(conflist))
    make_nic(node, "nic0")
    pod = sandbox.pod()
    cache = str(tmp_path / "cache")
    common = [cnidriver, "-bin", cni_bin, "-cache", cache, "-conf", str(path), "-ifname", "net1", "-netns", pod.path,
              "-id", "c1", "-caps", json.dumps({"deviceID": "nic0"})]
    added = node.run(*common, "add", check=False)
    assert added.returncode == 0, added.stdout
    result = json.loads(added.stdout)
    assert result["interfaces"][0]["name"] == "net1" and result["ips"][0]["address"] == "192.168.100.10/24"
    assert [a for a in pod.addresses("net1") if not a.startswith("fe80")] == ["192.168.100.10/24"]
    assert node.run(*common, "check", check=False).returncode == 0
    assert node.run(*common, "del", check=False).returncode == 0
    assert link(node, "nic0") is not None and link(pod, "net1") is None


@pytest.mark.parametrize("keys", [{"pciBusID": "0000:3b:02.6"}, {"runtimeConfig": {"deviceID": "0000:3b:02.6"}}])
def test_a_vfio_device_is_refused_clearly_and_nothing_changes(sandbox, node, hd, data_dir, tmp_path, keys):
    from tests.sysfs_tree import FakeSysfs

    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.pci("0000:3b:00.0", driver="ice", netdevs=["pf0"])
    sysfs.pci("0000:3b:02.6", device="1889", driver="vfio-pci", pf="0000:3b:00.0", iommu_group="169")
    make_nic(node, "nic0")
    pod = sandbox.pod()
    before = sorted(entry["ifname"] for entry in node.link_json())
    run = hd.call("ADD", conf(data_dir, version="1.1.0", sysfsRoot=str(sysfs.root), **keys), pod.path, "c1")
    assert not run.ok and run.json["code"] == 7
    assert "0000:3b:02.6 is bound to vfio-pci and has no network interface" in run.json["msg"]
    assert "device plugin" in run.json["details"]
    assert sorted(entry["ifname"] for entry in node.link_json()) == before
    assert reservation_files(os.path.join(data_dir, "ipam", "sriovnet")) == []
