"""pycni's netlink layer against the kernel, in throwaway namespaces: what the plain-socket reads return
agrees with iproute2, dumps are one link's or one table's, refusals carry the kernel's errno and its
explanation; the requests with nested attributes (veths created across namespaces, bridge ports, routes
with metrics, tc trees) leave what iproute2 would; and a session acts in its own namespace even when the
calling thread is elsewhere."""

import errno
import json
import os
import sys

import pytest

from pycni.host import netlink, netns, tc


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
        assert tc.by_handle(nl, [(index, 0x10000)], [(index, 0x10001)]) == ({}, {})
        assert tc.delete_qdisc(nl, index, 0x10000, 0xFFFFFFFF) is False
        nl.delete_link_named("d0")
        nl.delete_link_named("d0")  # already gone: fine
    assert not [link for link in node.link_json() if link["ifname"] == "d0"]


def test_a_session_acts_in_its_own_namespace(sandbox, node, node_fd):
    """The calling thread stays in the node namespace; the session is the pod's. A link and a qdisc made
    through it, and the qdisc read back, are the pod's."""
    pod = sandbox.pod()
    pod_fd = os.open(pod.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with netns.entered(node_fd), netlink.session(pod_fd) as nl:
            created = nl.add_link("ifb-t", "ifb", up=True, mtu=1400, txqlen=500)
            tc.add_tbf(nl, created.index, 0x10000, tc.TC_H_ROOT, rate=1_000_000, burst=20000, limit=30000)
            qdiscs, _ = tc.by_handle(nl, [(created.index, 0x10000)], [])
    finally:
        os.close(pod_fd)
    (made,) = [link for link in pod.link_json() if link["ifname"] == "ifb-t"]
    assert (made["mtu"], made["txqlen"], made["linkinfo"]["info_kind"]) == (1400, 500, "ifb") and "UP" in made["flags"]
    assert not [link for link in node.link_json() if link["ifname"] == "ifb-t"]
    (qdisc,) = qdiscs.values()
    assert (qdisc.kind, qdisc.rate, qdisc.limit) == ("tbf", 1_000_000, 30000)
    shown = pod.run("tc", "qdisc", "show", "dev", "ifb-t").stdout
    assert "qdisc tbf 1: root" in shown and "rate 8Mbit burst 20000b" in shown, shown


def test_nested_requests_leave_what_iproute2_shows(sandbox, node, node_fd):
    """A veth made across namespaces with its MTU and the peer's MAC, a bridge port with hairpin and
    isolation, a moved and renamed link, aliases set and cleared, and routes with a table, a scope, a
    metric and the route metrics MTU and advmss, each as `ip`, `bridge` and `tc` read them back."""
    pod = sandbox.pod()
    pod_fd = os.open(pod.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with netlink.session(node_fd) as nl, netlink.session(pod_fd) as in_pod:
            nl.add_bridge("br-n", mtu=1450)
            nl.add_bridge("br-n")  # already there: left alone
            bridge = nl.link_index("br-n")
            nl.add_veth("vh-n", "eth0", pod_fd, mtu=1450, peer_mac="02:00:00:aa:bb:cc", up=True)
            with pytest.raises(netlink.NetlinkFailure) as refused:
                nl.add_veth("vh-n", "eth9", pod_fd)
            assert refused.value.errno == errno.EEXIST and "File exists" in refused.value.msg
            port = nl.link_index("vh-n")
            nl.set_link(port, master=bridge)
            nl.set_bridge_port(port, hairpin=True, isolated=True)
            nl.set_link(bridge, address="02:00:00:00:00:01", flags=netlink.IFF_PROMISC, change=netlink.IFF_PROMISC)
            nl.set_link(port, alias="pod port")
            spare = nl.add_link("ifb-n", "ifb")
            nl.set_link(spare.index, alias="going")
            nl.set_link(spare.index, alias="")
            nl.move_link(spare.index, pod_fd, "moved0")
            with pytest.raises(netlink.LinkNotFound):
                nl.set_link(spare.index, mtu=1300)
            eth0 = in_pod.link_index("eth0")
            in_pod.add_address(eth0, "10.65.0.2/24")
            in_pod.set_state(eth0, up=True)
            in_pod.add_route("0.0.0.0/0", "10.65.0.1", eth0)
            in_pod.add_route("10.66.0.0/16", "", eth0, priority=50, mtu=1200, advmss=1100)
            in_pod.add_route("10.66.0.0/16", "", eth0, priority=50)  # a duplicate: the first one stays
            in_pod.add_route("10.67.0.0/16", "10.65.0.1", eth0, table=1000)
            in_pod.add_route("10.68.0.0/16", "", eth0, table=100, scope=253)
    finally:
        os.close(pod_fd)
    (veth,) = node.link_json("vh-n")
    assert veth["mtu"] == 1450 and veth["master"] == "br-n" and veth["ifalias"] == "pod port" and "UP" in veth["flags"]
    (brport,) = json.loads(node.run("bridge", "-d", "-j", "link", "show", "dev", "vh-n").stdout)
    assert brport["hairpin"] is True and brport["isolated"] is True, brport
    (br,) = node.link_json("br-n")
    assert br["mtu"] == 1450 and br["address"] == "02:00:00:00:00:01" and "PROMISC" in br["flags"]
    (eth0,) = pod.link_json("eth0")
    assert eth0["mtu"] == 1450 and eth0["address"] == "02:00:00:aa:bb:cc" and eth0["link_index"] == veth["ifindex"]
    (moved,) = pod.link_json("moved0")
    assert moved["linkinfo"]["info_kind"] == "ifb" and moved.get("ifalias", "") == ""
    assert not [link for link in node.link_json() if link["ifname"] == "ifb-n"]
    routes = {(r["dst"], r.get("table", "main")): r for r in json.loads(
        pod.run("ip", "-d", "-j", "route", "show", "table", "all").stdout) if r.get("type") == "unicast"}
    default = routes["default", "main"]
    assert (default["gateway"], default["dev"], default["protocol"], default["scope"]) == (
        "10.65.0.1", "eth0", "static", "global")
    metric = routes["10.66.0.0/16", "main"]
    assert metric["metric"] == 50 and metric["metrics"] == [{"mtu": 1200, "advmss": 1100}], metric
    assert routes["10.67.0.0/16", "1000"]["gateway"] == "10.65.0.1"
    assert routes["10.68.0.0/16", "100"]["scope"] == "link"


def test_a_dump_interrupted_by_links_coming_and_going_is_taken_again(node):
    """Pods coming and going while GC or CHECK dumps links: the kernel flags the dump, pycni takes it again,
    and every dump it returns is whole (all the links that stayed put are in it)."""
    node.run("sh", "-c", "for i in $(seq 1 120); do ip link add s$i type veth peer name t$i; done")
    churn = node.popen("timeout", "30", "sh", "-c",
                       "while true; do ip link add churn0 type veth peer name churn1; ip link del churn0; done")
    code = """
import time
from pycni.host import netlink
stable = {f"s{i}" for i in range(1, 121)} | {f"t{i}" for i in range(1, 121)}
with netlink.session() as nl:
    deadline, dumps = time.monotonic() + 20, 0
    while time.monotonic() < deadline and (nl.channel.dump_retries == 0 or dumps < 20):
        names = {link.name for link in nl.links()}
        assert stable <= names, sorted(stable - names)
        dumps += 1
    print(dumps, nl.channel.dump_retries)
"""
    try:
        dumps, retries = map(int, node.run(sys.executable, "-c", code, timeout=60).stdout.split())
    finally:
        churn.terminate()
        churn.wait(timeout=10)
    print(f"{dumps} dumps, {retries} taken again")
    assert retries > 0, f"{dumps} dumps were never interrupted"
