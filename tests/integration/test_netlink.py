"""pycni's netlink layer against the kernel, in throwaway namespaces: what the plain-socket reads return
agrees with iproute2, dumps are one link's or one table's, refusals carry the kernel's errno and its
explanation, and a session's pyroute2 socket (opened lazily, for the requests with nested attributes)
acts in the session's namespace even when the calling thread is elsewhere."""

import errno
import os

import pytest

from pycni.host import netlink, netns


@pytest.fixture
def node_fd(node):
    fd = os.open(node.path, os.O_RDONLY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def test_links_read_by_name_agree_with_iproute2(node, node_fd):
    node.run("ip", "link", "add", "br-t", "type", "bridge")
    node.run("ip", "link", "add", "vx0", "mtu", "1400", "type", "veth", "peer", "name", "vx1")
    node.run("ip", "link", "set", "vx0", "master", "br-t", "alias", "pod port")
    node.run("ip", "link", "set", "vx1", "up")
    with netlink.session(node_fd) as nl:
        links = nl.links_named(["vx0", "vx1", "br-t", "absent0"])
        assert set(links) == {"vx0", "vx1", "br-t"}, "a name no link has is absent, not an error"
        assert nl.link_named("absent0") is None and nl.find_link("absent0") is None
        listed = {link.name: link for link in nl.links()}
    shown = {entry["ifname"]: entry for entry in node.link_json()}
    for name in ("vx0", "vx1", "br-t"):
        link, expected = links[name], shown[name]
        assert link == listed[name]
        assert (link.index, link.mac, link.mtu, link.operstate) == (
            expected["ifindex"], expected["address"], expected["mtu"], expected["operstate"])
        assert link.kind == expected["linkinfo"]["info_kind"]
    assert links["vx0"].master == links["br-t"].index and links["vx1"].master == 0
    assert links["vx0"].peer_index == links["vx1"].index and links["vx1"].up and not links["vx0"].up
    assert links["vx0"].alias == "pod port" and links["vx1"].alias == ""


def test_addresses_and_routes_are_one_links_and_one_tables(node, node_fd):
    for name, v4, v6 in (("d0", "10.60.0.1/24", "fd60::1/64"), ("d1", "10.61.0.1/24", "fd61::1/64")):
        node.run("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
        node.run("ip", "addr", "add", v4, "dev", name)
        node.run("ip", "addr", "add", v6, "dev", name, "nodad")
        node.run("ip", "link", "set", f"{name}p", "up")
        node.run("ip", "link", "set", name, "up")
    node.run("ip", "route", "add", "10.62.0.0/16", "via", "10.60.0.9", "table", "100")
    node.run("ip", "route", "add", "10.63.0.0/16", "via", "10.61.0.9", "table", "1000")
    with netlink.session(node_fd) as nl:
        d0 = nl.link_index("d0")
        assert nl.addresses(d0, netlink.AF_INET) == [("10.60.0.1", 24)]
        assert ("fd60::1", 64) in nl.addresses(d0, netlink.AF_INET6)
        assert {a for a, _ in nl.addresses(d0)} >= {"10.60.0.1", "fd60::1"}
        assert not {a for a, _ in nl.addresses(d0)} & {"10.61.0.1", "fd61::1"}
        main = nl.routes(netlink.AF_INET)
        assert ("10.60.0.0/24", "", d0) in main and not any(dst == "10.62.0.0/16" for dst, _, _ in main)
        assert nl.routes(netlink.AF_INET, 100) == [("10.62.0.0/16", "10.60.0.9", d0)]
        assert nl.routes(netlink.AF_INET, 1000) == [("10.63.0.0/16", "10.61.0.9", nl.link_index("d1"))]
        assert nl.routes(netlink.AF_INET, 77) == [], "a table that does not exist has no routes"
        assert any(dst == "fd60::/64" for dst, _, _ in nl.routes(netlink.AF_INET6))


def test_changes_and_refusals(node, node_fd):
    node.run("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
    with netlink.session(node_fd) as nl:
        index = nl.link_index("d0")
        assert nl.add_address(index, "10.64.0.2/24") is True
        assert nl.add_address(index, "10.64.0.2/24") is False, "already there"
        assert nl.add_address(index, "fd64::2/64", nodad=True) is True
        nl.set_state(index, up=True)
        assert nl.link(index).up
        assert set(node.addresses("d0")) >= {"10.64.0.2/24", "fd64::2/64"}
        nl.delete_address(index, "10.64.0.2/24")
        assert "10.64.0.2/24" not in node.addresses("d0")
        with pytest.raises(netlink.NetlinkFailure) as refused:
            nl.delete_address(index, "10.64.0.2/24")
        assert refused.value.errno == errno.EADDRNOTAVAIL and refused.value.msg.startswith("deleting address")
        with pytest.raises(netlink.LinkNotFound):
            nl.link(index + 1000)
        assert nl.tc_by_handle([(index, 0x10000)], [(index, 0x10001)]) == ({}, {})
        assert nl.delete_qdisc(index, 0x10000, 0xFFFFFFFF) is False
        nl.delete_link_named("d0")
        nl.delete_link_named("d0")  # already gone: fine
    assert not [link for link in node.link_json() if link["ifname"] == "d0"]


def test_a_sessions_pyroute2_socket_acts_in_the_sessions_namespace(sandbox, node, node_fd):
    """The calling thread stays in the node namespace; the session is the pod's. Links created through the
    lazily opened pyroute2 socket, and a qdisc read back over the plain one, are the pod's."""
    pod = sandbox.pod()
    pod_fd = os.open(pod.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with netns.entered(node_fd), netlink.session(pod_fd) as nl:
            created = nl.add_link("ifb-t", "ifb", up=True)
            nl.add_qdisc("tbf", created.index, handle=0x10000, parent=0xFFFFFFFF, rate="8mbit", burst=20000,
                         latency="5ms")
            qdiscs, _ = nl.tc_by_handle([(created.index, 0x10000)], [])
    finally:
        os.close(pod_fd)
    assert [link["ifname"] for link in pod.link_json() if link["ifname"] == "ifb-t"] == ["ifb-t"]
    assert not [link for link in node.link_json() if link["ifname"] == "ifb-t"]
    (qdisc,) = qdiscs.values()
    assert (qdisc.kind, qdisc.rate) == ("tbf", 1_000_000)
