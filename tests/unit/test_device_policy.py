"""The device side's pure policy, without root or gRPC: the preferred allocation across NUMA nodes, the
uplink rules, withheld devices, the SR-IOV selectors and function ranges, the PCI kinds' descriptions, the
frozen model, and config errors that carry where they are."""

import dataclasses
import json

import pytest

from pycni.host.netlink import IFF_LOWER_UP, IFF_UP, LinkInfo
from pycni.host.sysfs import PciFunction
from pycni.services.devices.model import (
    Allocation,
    Device,
    DeviceNode,
    Mount,
    NodeAddresses,
    OptionError,
    Resource,
    prefer_one_numa_node,
)
from pycni.services.devices.pci.kinds import KINDS
from pycni.services.devices.pci.selectors import PciSelector, candidate, healthy, parse_functions
from pycni.services.devices.uplink import NodeView, uplinks_of
from pycni.services.devices.withheld import ALLOCATED_HERE, held_here, withheld


def link(index, name, kind="", master=0, up=True):
    return LinkInfo(index, name, kind, "02:00:00:00:00:01", 1500, IFF_UP | IFF_LOWER_UP if up else 0, master, 0,
                    "up" if up else "down")


# preferred allocation


def test_a_request_is_kept_on_the_numa_node_with_the_most_devices():
    devices = [Device("a", numa_node=0), Device("b", numa_node=1), Device("c", numa_node=1), Device("d", numa_node=0),
               Device("e", numa_node=1)]
    assert prefer_one_numa_node(devices, [], 2) == ["b", "c"]
    assert prefer_one_numa_node(devices, [], 4) == ["b", "c", "e", "a"]  # then the rest, in order


def test_must_include_devices_come_first_and_choose_the_numa_node():
    devices = [Device("a", numa_node=0), Device("b", numa_node=1), Device("c", numa_node=1), Device("d", numa_node=0)]
    assert prefer_one_numa_node(devices, ["d"], 2) == ["d", "a"]
    assert prefer_one_numa_node(devices, ["d", "b"], 2) == ["d", "b"]


def test_devices_without_topology_are_one_node_of_their_own():
    devices = [Device("x"), Device("y"), Device("z", numa_node=0)]
    assert prefer_one_numa_node(devices, [], 2) == ["x", "y"]


# the uplink guard


def test_the_interfaces_the_node_depends_on_are_named_with_their_reason():
    links = [link(1, "lo"), link(2, "eth0"), link(3, "eth1"), link(4, "br0", "bridge"), link(5, "eth2", master=4),
             link(6, "bond0", "bond"), link(7, "eth3", master=6), link(8, "vethabcdef01234", "veth"),
             link(9, "ifb0", "ifb"), link(10, "eth4"), link(11, "eth5"), link(12, "veth-mine", "veth")]
    view = NodeView(links, default_route_interfaces=(2, 1), addresses={3: ["10.0.0.5"], 10: ["192.168.9.9"]},
                    api_server_interface=11)
    found = uplinks_of(view, NodeAddresses(("10.0.0.5",), "10.96.0.1"))
    assert found.reasons == {
        "eth0": "carries the default route", "eth1": "holds the node IP 10.0.0.5",
        "eth5": "is the way to the API server 10.96.0.1", "br0": "is a bridge", "eth2": "is a port of bridge br0",
        "bond0": "is a bond", "eth3": "is a port of bond bond0", "vethabcdef01234": "is a pod's veth",
        "ifb0": "is a shaping ifb"}
    assert found.excludes("eth4") == "" and found.excludes("veth-mine") == "" and found.excludes("lo") == ""


def test_an_unknown_node_ip_or_api_server_rules_nothing_out():
    view = NodeView([link(2, "eth0")], addresses={2: ["10.0.0.5"]}, api_server_interface=2)
    assert uplinks_of(view, NodeAddresses()).reasons == {}


def test_the_first_reason_of_an_interface_is_the_one_given():
    view = NodeView([link(2, "eth0")], default_route_interfaces=(2,), addresses={2: ["10.0.0.5"]})
    assert uplinks_of(view, NodeAddresses(("10.0.0.5",))).reasons == {"eth0": "carries the default route"}


# withheld devices


def test_a_device_a_pod_holds_through_a_resource_that_no_longer_lists_it_is_withheld():
    offered = {"example.com/new": ["0000:03:00.1", "0000:03:00.2"], "example.com/old": ["0000:03:00.9"]}
    listed = {"example.com/new": {"0000:03:00.1", "0000:03:00.2"}, "example.com/old": {"0000:03:00.9"}}
    held = {"example.com/old": {"0000:03:00.1": "pod default/a", "0000:03:00.9": "pod default/b"}}
    assert withheld(offered, listed, held) == {
        "example.com/new": {"0000:03:00.1": "held by pod default/a through example.com/old: offered again once it "
                                            "is given back"},
        "example.com/old": {}}


def test_a_device_held_through_the_resource_that_still_lists_it_is_not_withheld():
    offered = {"a.io/x": ["d1"], "a.io/y": ["d1"]}
    assert withheld(offered, {"a.io/x": {"d1"}, "a.io/y": {"d1"}}, {"a.io/x": {"d1": "pod ns/p"}}) == \
        {"a.io/x": {}, "a.io/y": {}}


def test_where_the_kubelet_cannot_say_what_this_daemon_handed_out_counts():
    held = held_here({"a.io/gone": {"d1"}})
    assert held == {"a.io/gone": {"d1": ALLOCATED_HERE}}
    assert withheld({"a.io/x": ["d1"]}, {"a.io/x": {"d1"}}, held)["a.io/x"]["d1"].startswith(
        f"held by {ALLOCATED_HERE} through a.io/gone")


# the SR-IOV selectors


def test_function_ranges_parse_and_refuse_what_is_malformed():
    assert parse_functions("enp1s0f0") == ("enp1s0f0", None)
    assert parse_functions("enp1s0f0#0,2-4,9") == ("enp1s0f0", frozenset({0, 2, 3, 4, 9}))
    for bad in ("#1", "pf#a", "pf#3-1", "pf#1-"):
        with pytest.raises(ValueError):
            parse_functions(bad)


PF = PciFunction("0000:03:00.0", "8086", "1572", 0x020000, "i40e", virtfns=("0000:03:02.0", "0000:03:02.1"), vfs=2,
                 netdevs=("enp3s0f0",))
VF1 = PciFunction("0000:03:02.1", "8086", "154c", 0x020000, "iavf", pf=PF.address, netdevs=("enp3s0f0v1",),
                  numa_node=1, rdma=("mlx5_3",), rdma_nodes=("infiniband_verbs/uverbs3",))
VFIO = PciFunction("0000:03:02.0", "8086", "154c", 0x020000, "vfio-pci", pf=PF.address, iommu_group="42")


def test_a_selector_takes_a_vf_by_its_pf_and_index_and_its_fields_combine_with_and():
    links = {"enp3s0f0": link(2, "enp3s0f0"), "enp3s0f0v1": link(3, "enp3s0f0v1", up=False)}
    c = candidate(VF1.address, VF1, VF1.driver, VF1.netdevs, PF, 1, links)
    assert (c.pf_netdev, c.pf_address, c.index, c.netdev) == ("enp3s0f0", PF.address, 1, "enp3s0f0v1")
    assert PciSelector(pf_names=(("enp3s0f0", frozenset({1})),)).matches(c)
    assert not PciSelector(pf_names=(("enp3s0f0", frozenset({0})),)).matches(c)
    assert PciSelector(vendors=("8086",), drivers=("iavf",)).matches(c)
    assert not PciSelector(vendors=("8086",), drivers=("ixgbevf",)).matches(c)
    assert PciSelector(root_devices=((PF.address, None),)).matches(c)
    assert healthy(c, links)  # a VF follows its PF's link, not its own (admin down, waiting for a pod)
    assert not healthy(c, {**links, "enp3s0f0": link(2, "enp3s0f0", up=False)})


def test_each_pci_kind_describes_its_devices_as_the_sriov_device_plugin_does():
    rdma_vhost = PciSelector(drivers=("iavf",), is_rdma=True, need_vhost_net=True)
    c = candidate(VF1.address, VF1, VF1.driver, VF1.netdevs, PF, 1, {})
    info, nodes = KINDS["netDevice"].describe(c, rdma_vhost, lambda path: True)
    assert info == {"generic": {"deviceID": VF1.address},
                    "vhost": {"net-mount": "/dev/vhost-net", "tun-mount": "/dev/net/tun"},
                    "rdma": {"rdma_cm": "/dev/infiniband/rdma_cm", "uverbs": "/dev/infiniband/uverbs3"}}
    assert [n.host_path for n in nodes] == ["/dev/vhost-net", "/dev/net/tun", "/dev/infiniband/rdma_cm",
                                            "/dev/infiniband/uverbs3"]
    assert json.loads(KINDS["netDevice"].device_info(c, rdma_vhost)) == {
        "type": "pci", "version": "1.1.0",
        "pci": {"pci-address": VF1.address, "pf-pci-address": PF.address, "vhost-net": "/dev/vhost-net",
                "rdma-device": "mlx5_3"}}
    vfio = candidate(VFIO.address, VFIO, VFIO.driver, (), PF, 0, {})
    info, nodes = KINDS["accelerator"].describe(vfio, PciSelector(drivers=("vfio-pci",)), lambda path: True)
    assert info == {"vfio": {"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/42"}}
    assert nodes == [DeviceNode("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"),
                     DeviceNode("/dev/vfio/42", "/dev/vfio/42", "rw")]
    assert KINDS["auxNetDevice"].device_info(c, rdma_vhost) == ""  # Multus reads none for an SF


def test_vhost_is_left_out_where_the_node_lacks_its_devices():
    c = candidate(VF1.address, VF1, VF1.driver, VF1.netdevs, PF, 1, {})
    info, nodes = KINDS["netDevice"].describe(c, PciSelector(need_vhost_net=True, drivers=("iavf",)),
                                              lambda path: path != "/dev/vhost-net")
    assert "vhost" not in info and nodes == []


# the model


def test_the_model_is_frozen_and_its_optional_parts_keyword_only():
    device = Device("d1", healthy=False, numa_node=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        device.healthy = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        Device("d1", False)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Mount("/a", "/b", False)  # type: ignore[misc]
    allocation = Allocation(device_nodes=[DeviceNode("/dev/x", "/dev/x")], mounts=[Mount("/a", "/b")])
    assert allocation.device_nodes == (DeviceNode("/dev/x", "/dev/x", "rwm"),) and isinstance(allocation.mounts, tuple)
    resource = Resource("example.com/x", list, lambda ids: Allocation())
    with pytest.raises(dataclasses.FrozenInstanceError):
        resource.cdi = True  # type: ignore[misc]
    with pytest.raises(ValueError, match="CDI needs describe"):
        dataclasses.replace(resource, cdi=True)


def test_a_config_error_carries_its_file_place_and_message():
    from pycni.services.devices.config import ConfigError, Settings, parse

    with pytest.raises(ConfigError) as refused:
        parse({"resources": [{"resourceName": "example.com/x", "type": "devices", "groups": [{"paths": [
            {"path": "/dev/../etc/passwd"}]}]}]}, "devices.json", Settings())
    assert (refused.value.path, refused.value.where, refused.value.message) == \
        ("devices.json", "resources[0].groups[0].paths[0].path", "'/dev/../etc/passwd' leaves /dev through `..`")
    assert OptionError("selector", "x").key == "selector"


def test_every_built_in_type_is_in_the_registry_as_third_parties_find_theirs():
    from pycni.services.devices.registry import Registry, UnknownType

    registry = Registry.for_config()
    assert list(registry.resource_types) == ["netdev", "tun", "devices"]
    assert sorted(registry.sriov_kinds) == ["accelerator", "auxNetDevice", "netDevice"]
    assert registry.resource_type("tun") is registry.resource_types["tun"]
    with pytest.raises(UnknownType, match="unknown type 'nope': known are netdev, tun, devices"):
        registry.resource_type("nope")
