"""The routes agent's plan, from Node objects alone: who is a neighbour, who is reached over VXLAN, what
waits and why, the MTUs, and what a change of one node changes."""

from __future__ import annotations

import ipaddress

import pytest

from pycni.host.routing import Entries, Forwarding, Neighbour, Route, Uplink
from pycni.services.routes import VTEP_ANNOTATION
from pycni.services.routes.firewall import _accept, _match_of
from pycni.services.routes.peers import DIRECT, VXLAN, WAITING, NodeView, changes, is_unicast_mac, plan, vtep_mac_of

net, ip = ipaddress.ip_network, ipaddress.ip_address
UPLINK = Uplink(name="eth0", mtu=1500, networks=(net("192.0.2.0/24"), net("2001:db8:2::/64")))


def node(name: str, cidrs: list[str], addresses: list[str], mac: str | None = "auto") -> NodeView:
    annotations = {VTEP_ANNOTATION: vtep_mac_of(name) if mac == "auto" else mac} if mac else {}
    return NodeView.from_api({"metadata": {"name": name, "annotations": annotations, "resourceVersion": "7"},
                              "spec": {"podCIDRs": cidrs},
                              "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addresses]
                                         + [{"type": "Hostname", "address": name}]}})


OWN = node("a", ["10.244.1.0/24", "fd00:10:244:1::/64"], ["192.0.2.11", "2001:db8:2::11"])


def test_a_neighbour_gets_direct_routes_for_both_families():
    peer = node("b", ["10.244.2.0/24", "fd00:10:244:2::/64"], ["192.0.2.12", "2001:db8:2::12"])
    wanted = plan(OWN, [OWN, peer], [UPLINK])
    assert [(p.via, p.gateway) for p in wanted.paths["b"]] == [(DIRECT, "192.0.2.12"), (DIRECT, "2001:db8:2::12")]
    assert wanted.entries.routes == {
        net("10.244.2.0/24"): Route(net("10.244.2.0/24"), ip("192.0.2.12"), "eth0"),
        net("fd00:10:244:2::/64"): Route(net("fd00:10:244:2::/64"), ip("2001:db8:2::12"), "eth0")}
    assert not wanted.entries.neighbours and not wanted.entries.forwardings
    assert wanted.pod_mtu == 1500  # no overlay: the smallest MTU of the real interfaces


def test_a_node_behind_a_router_is_reached_over_vxlan_with_its_published_mac():
    peer = node("c", ["10.244.3.0/24", "fd00:10:244:3::/64"], ["203.0.113.13", "2001:db8:3::13"])
    wanted = plan(OWN, [OWN, peer], [UPLINK])
    mac = vtep_mac_of("c")
    assert [(p.via, p.gateway) for p in wanted.paths["c"]] == [(VXLAN, "10.244.3.0"), (VXLAN, "fd00:10:244:3::")]
    assert wanted.entries.routes[net("10.244.3.0/24")] == Route(net("10.244.3.0/24"), ip("10.244.3.0"),
                                                                "pycni.vxlan", onlink=True)
    assert wanted.entries.neighbours == {ip("10.244.3.0"): Neighbour(ip("10.244.3.0"), mac),
                                         ip("fd00:10:244:3::"): Neighbour(ip("fd00:10:244:3::"), mac)}
    assert wanted.entries.forwardings == {mac: Forwarding(mac, ip("203.0.113.13"))}  # the IPv4 underlay
    assert wanted.vxlan is not None and wanted.vxlan.mtu == 1450 and wanted.vxlan.mac == vtep_mac_of("a")
    assert wanted.vxlan.addresses == (ip("10.244.1.0"), ip("fd00:10:244:1::"))
    assert wanted.pod_mtu == 1450


def test_an_ipv6_underlay_costs_seventy_bytes():
    own = node("a", ["fd00:10:244:1::/64"], ["2001:db8:2::11"])
    peer = node("c", ["fd00:10:244:3::/64"], ["2001:db8:3::13"])
    wanted = plan(own, [own, peer], [Uplink(name="eth0", mtu=9000, networks=(net("2001:db8:2::/64"),))])
    assert wanted.vxlan is not None and wanted.vxlan.mtu == 8930 and wanted.pod_mtu == 8930
    assert wanted.entries.forwardings[vtep_mac_of("c")].remote == ip("2001:db8:3::13")


def test_what_cannot_be_planned_waits_and_says_why():
    no_mac = node("c", ["10.244.3.0/24"], ["203.0.113.13"], mac=None)
    no_cidr = node("d", [], ["192.0.2.14"])
    v6_only = node("e", ["10.244.5.0/24"], ["2001:db8:3::15"])
    wanted = plan(OWN, [OWN, no_mac, no_cidr, v6_only], [UPLINK])
    assert wanted.paths["c"][0].via == WAITING and VTEP_ANNOTATION in wanted.paths["c"][0].reason
    assert wanted.paths["d"] == ()
    assert wanted.paths["e"][0].via == WAITING and "IPv4 InternalIP" in wanted.paths["e"][0].reason
    assert not wanted.entries.routes
    assert wanted.pod_mtu == 1450  # c will be reached over VXLAN: pods started meanwhile already fit
    assert plan(None, [no_mac], [UPLINK]).waiting
    assert "InternalIP" in plan(node("a", ["10.244.1.0/24"], []), [], [UPLINK]).waiting


def test_a_change_to_one_node_changes_only_its_entries():
    peers = [node(f"n{i}", [f"10.244.{i}.0/24"], [f"192.0.2.{i}" if i % 2 else f"203.0.113.{i}"])
             for i in range(2, 200)]
    before = plan(OWN, [OWN, *peers], [UPLINK]).entries
    moved = node("n3", ["10.244.3.0/24"], ["192.0.2.250"])
    after = plan(OWN, [OWN, *[moved if p.name == "n3" else p for p in peers]], [UPLINK]).entries
    todo = changes(after, before)
    assert todo.put == (Route(net("10.244.3.0/24"), ip("192.0.2.250"), "eth0"),) and not todo.remove
    gone = plan(OWN, [OWN, *[p for p in peers if p.name != "n4"]], [UPLINK]).entries
    todo = changes(gone, before)
    mac = vtep_mac_of("n4")
    # removals: the route before the neighbour and FDB entries it leans on
    assert todo.remove == (Route(net("10.244.4.0/24"), ip("10.244.4.0"), "pycni.vxlan", onlink=True),
                           Neighbour(ip("10.244.4.0"), mac), Forwarding(mac, ip("203.0.113.4")))
    assert not changes(before, before)


def test_changes_put_what_is_missing_or_different_and_remove_only_the_unwanted():
    wanted = Entries(routes={net("10.0.0.0/24"): Route(net("10.0.0.0/24"), ip("192.0.2.2"), "eth0")},
                     forwardings={"02:00:00:00:00:01": Forwarding("02:00:00:00:00:01", ip("203.0.113.9"))})
    present = Entries(routes={net("10.0.0.0/24"): Route(net("10.0.0.0/24"), ip("192.0.2.99"), "eth0"),
                              net("10.9.0.0/24"): Route(net("10.9.0.0/24"), ip("192.0.2.3"), "eth0")})
    todo = changes(wanted, present)
    # the FDB entry first: a route over VXLAN must find its way when it is made
    assert todo.put == (wanted.forwardings["02:00:00:00:00:01"], wanted.routes[net("10.0.0.0/24")])
    assert todo.remove == (present.routes[net("10.9.0.0/24")],)


def test_node_objects_are_read_defensively():
    view = NodeView.from_api({"metadata": {"name": "x", "annotations": {VTEP_ANNOTATION: "01:00:5e:00:00:01"}},
                              "spec": {"podCIDR": "10.244.9.0/24"},
                              "status": {"addresses": [{"type": "InternalIP", "address": "not-an-ip"},
                                                       {"type": "ExternalIP", "address": "198.51.100.1"},
                                                       {"type": "InternalIP", "address": "192.0.2.9"}]}})
    assert view.pod_cidrs == (net("10.244.9.0/24"),)  # spec.podCIDR alone, as an old controller sets it
    assert view.internal_ips == (ip("192.0.2.9"),)
    assert view.vtep_mac == ""  # a multicast MAC is no VTEP
    assert NodeView.from_api({"metadata": {"name": "y"}, "spec": {"podCIDRs": ["10.244.1.1/24"]}}).pod_cidrs == ()
    assert NodeView.from_api(view.to_json()) == view
    # a heartbeat changes the resourceVersion only: the same node for routing
    assert node("b", ["10.244.2.0/24"], ["192.0.2.12"]) == NodeView.from_api(
        {**node("b", ["10.244.2.0/24"], ["192.0.2.12"]).to_json(), "metadata": {
            "name": "b", "resourceVersion": "99", "annotations": {VTEP_ANNOTATION: vtep_mac_of("b")}}})


@pytest.mark.parametrize("name", ["a", "node-1.example.com", "x" * 253])
def test_vtep_macs_are_stable_locally_administered_unicast(name):
    mac = vtep_mac_of(name)
    assert mac == vtep_mac_of(name) and is_unicast_mac(mac)
    assert int(mac.split(":")[0], 16) & 0x02
    assert vtep_mac_of(name) != vtep_mac_of(name + "x")


def test_the_forward_accept_reads_back_as_written():
    rule = _accept("ip", "filter", "FORWARD", "saddr", net("10.244.0.0/16"))["insert"]["rule"]
    assert _match_of(rule) == ("saddr", "10.244.0.0/16")
