"""Every rtnetlink request pycni packs, without root: the bytes `host/netlink.py` and `host/tc.py` hand the
socket, checked against pyroute2's message classes (an independent encoder and decoder).

Links, addresses and routes: pyroute2 encodes the same message and the bytes must be equal, but for one
flag: pycni marks nested attributes NLA_F_NESTED (the kernel's strict parsers want it), pyroute2 does not.
tc objects: pyroute2 decodes pycni's bytes, and the values it reads must be the ones asked for (its own
encoder needs rate tables pycni does not send). The u32 selector is checked field by field against the
kernel's layout instead: pyroute2 aligns its keys differently from the kernel and `tc`.
"""

from __future__ import annotations

import socket
import struct

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from pycni.host import rtnl, tc
from pycni.host.netlink import LinkNotFound, Netlink, NetlinkFailure
from pycni.plugins.bandwidth import shaper


class Recorder:
    """A channel that keeps what it is asked to send and acknowledges each request (or answers it with
    the messages queued for it)."""

    def __init__(self, answers=()):
        self.sent: list[tuple[int, int, bytes]] = []
        self.answers = list(answers)

    def exchange(self, requests):
        self.sent += requests
        replies = []
        for _ in requests:
            answer = rtnl.Answer()
            if self.answers:
                answer.messages = self.answers.pop(0)
            replies.append(answer)
        return replies

    def close(self):
        pass


@pytest.fixture
def sent():
    recorder = Recorder()
    return Netlink(recorder), recorder.sent


def body_of(message) -> bytes:
    message.encode()
    return bytes(message.data[rtnl.HEADER.size:message["header"]["length"]])


def same_message(ours: bytes, theirs: bytes, fixed: int) -> None:
    """Equal bytes, where the only difference allowed is NLA_F_NESTED, set by pycni on nested attributes."""
    assert ours[:fixed] == theirs[:fixed], (ours[:fixed].hex(), theirs[:fixed].hex())
    _same_attributes(ours[fixed:], theirs[fixed:])


def _same_attributes(ours: bytes, theirs: bytes) -> None:
    assert len(ours) == len(theirs), (ours.hex(), theirs.hex())
    offset = 0
    while offset < len(ours):
        length, kind = rtnl.ATTRIBUTE.unpack_from(ours, offset)
        their_length, their_kind = rtnl.ATTRIBUTE.unpack_from(theirs, offset)
        assert (length, kind & ~rtnl.NLA_F_NESTED) == (their_length, their_kind), (ours.hex(), theirs.hex())
        inner = slice(offset + rtnl.ATTRIBUTE.size, offset + length)
        if kind & rtnl.NLA_F_NESTED:
            _same_attributes(ours[inner], theirs[inner])
        else:
            assert ours[inner] == theirs[inner], (kind, ours[inner].hex(), theirs[inner].hex())
        offset += (length + 3) & ~3


def link_message(index=0, flags=0, change=0, attrs=(), family=0):
    message = ifinfmsg()
    message["family"], message["index"], message["flags"], message["change"] = family, index, flags, change
    message["attrs"] = list(attrs)
    return body_of(message)


def check(request, kind, flags, expected_body, fixed):
    assert request[:2] == (kind, flags)
    same_message(request[2], expected_body, fixed)


# ----------------------------------------------------------------------------------------------- links

def test_a_veth_pair_with_its_peer_made_in_another_namespace(sent):
    nl, requests = sent
    nl.add_veth("veth1a2b", "eth0", peer_netns_fd=9, mtu=1450, peer_mac="0a:58:0a:f4:00:02", up=True)
    peer = {"attrs": [("IFLA_IFNAME", "eth0"), ("IFLA_MTU", 1450), ("IFLA_ADDRESS", "0a:58:0a:f4:00:02"),
                      ("IFLA_NET_NS_FD", 9)]}
    expected = link_message(flags=1, change=1, attrs=[
        ("IFLA_IFNAME", "veth1a2b"), ("IFLA_MTU", 1450),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"),
                                     ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]})])
    (request,) = requests
    check(request, rtnl.RTM_NEWLINK, rtnl.NLM_F_NEW, expected, rtnl.IFINFO.size)


@pytest.mark.parametrize("kind", ["ifb", "bridge", "dummy"])
def test_a_link_of_a_kind_without_options(kind):
    recorder = Recorder(answers=[[], [(rtnl.RTM_NEWLINK, rtnl.IFINFO.pack(0, 1, 12, 0, 0)
                                       + rtnl.name_attribute(rtnl.IFLA_IFNAME, "bw1"))]])
    Netlink(recorder).add_link("bw1", kind, up=True, mtu=1500, txqlen=1000)
    expected = link_message(flags=1, change=1, attrs=[
        ("IFLA_IFNAME", "bw1"), ("IFLA_MTU", 1500), ("IFLA_TXQLEN", 1000),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]})])
    check(recorder.sent[0], rtnl.RTM_NEWLINK, rtnl.NLM_F_NEW, expected, rtnl.IFINFO.size)


def test_link_changes(sent):
    nl, requests = sent
    nl.set_state(5, True)
    nl.set_state(5, False)
    nl.set_link(5, mtu=9000, address="02:42:ac:11:00:02", master=3)
    nl.set_link(5, master=0)
    nl.move_link(5, 8, "eth1")
    nl.delete_link_named("bw1")
    nl.delete_link(5)
    expected = [
        (rtnl.RTM_NEWLINK, link_message(5, 1, 1)),
        (rtnl.RTM_NEWLINK, link_message(5, 0, 1)),
        (rtnl.RTM_NEWLINK, link_message(5, attrs=[("IFLA_MTU", 9000), ("IFLA_ADDRESS", "02:42:ac:11:00:02"),
                                                  ("IFLA_MASTER", 3)])),
        (rtnl.RTM_NEWLINK, link_message(5, attrs=[("IFLA_MASTER", 0)])),
        (rtnl.RTM_NEWLINK, link_message(5, attrs=[("IFLA_NET_NS_FD", 8), ("IFLA_IFNAME", "eth1")])),
        (rtnl.RTM_DELLINK, link_message(attrs=[("IFLA_IFNAME", "bw1")])),
        (rtnl.RTM_DELLINK, link_message(5)),
    ]
    assert len(requests) == len(expected)
    for request, (kind, body) in zip(requests, expected, strict=True):
        check(request, kind, 0, body, rtnl.IFINFO.size)


def test_an_alias_is_sent_as_iproute2_sends_it(sent):
    """Without a terminating NUL (pyroute2 adds one; the kernel copies the string either way)."""
    nl, requests = sent
    nl.set_link(5, alias="pycni: net1 of pod-a")
    (request,) = requests
    kind, flags, body = request
    message = ifinfmsg(rtnl.HEADER.pack(rtnl.HEADER.size + len(body), kind, flags, 1, 0) + body)
    message.decode()
    assert (message["index"], message.get_attr("IFLA_IFALIAS")) == (5, "pycni: net1 of pod-a")
    assert body[rtnl.IFINFO.size:] == struct.pack("=HH", 24, rtnl.IFLA_IFALIAS) + b"pycni: net1 of pod-a"


def test_bridge_port_options_and_vlans(sent):
    nl, requests = sent
    nl.set_bridge_port(7, hairpin=True, isolated=True)
    nl.vlan("add", 7, 100, pvid_untagged=True)
    nl.vlan("del", 7, 200)
    check(requests[0], rtnl.RTM_SETLINK, 0, link_message(7, family=rtnl.AF_BRIDGE, attrs=[
        ("IFLA_PROTINFO", {"attrs": [("IFLA_BRPORT_MODE", 1), ("IFLA_BRPORT_ISOLATED", 1)]})]), rtnl.IFINFO.size)
    for request, kind, flags, vid in ((requests[1], rtnl.RTM_SETLINK, 6, 100), (requests[2], rtnl.RTM_DELLINK, 0, 200)):
        check(request, kind, 0, link_message(7, family=rtnl.AF_BRIDGE, attrs=[
            ("IFLA_AF_SPEC", {"attrs": [("IFLA_BRIDGE_VLAN_INFO", {"flags": flags, "vid": vid})]})]), rtnl.IFINFO.size)


# ------------------------------------------------------------------------------------------- addresses

def address_message(family, prefix, index, attrs, flags=0):
    message = ifaddrmsg()
    message["family"], message["prefixlen"], message["flags"], message["scope"], message["index"] = \
        family, prefix, flags, 0, index
    message["attrs"] = attrs
    return body_of(message)


def test_addresses(sent):
    nl, requests = sent
    nl.add_address(4, "10.244.1.7/24")
    nl.add_address(4, "fd00:42::7/64", nodad=True)
    nl.delete_address(4, "10.244.1.7/24")
    v4 = address_message(socket.AF_INET, 24, 4, [("IFA_LOCAL", "10.244.1.7"), ("IFA_ADDRESS", "10.244.1.7")])
    v6 = address_message(socket.AF_INET6, 64, 4, [("IFA_ADDRESS", "fd00:42::7"), ("IFA_FLAGS", 2)], flags=2)
    check(requests[0], rtnl.RTM_NEWADDR, rtnl.NLM_F_NEW, v4, rtnl.IFADDR.size)
    check(requests[1], rtnl.RTM_NEWADDR, rtnl.NLM_F_NEW, v6, rtnl.IFADDR.size)
    check(requests[2], rtnl.RTM_DELADDR, 0, v4, rtnl.IFADDR.size)


# ---------------------------------------------------------------------------------------------- routes

def route_message(family, dst_len, table, attrs, scope=0):
    message = rtmsg()
    message["family"], message["dst_len"], message["table"], message["proto"] = family, dst_len, table, 4
    message["scope"], message["type"] = scope, 1
    message["attrs"] = attrs
    return body_of(message)


def test_routes_with_gateways_metrics_tables_and_scopes(sent):
    nl, requests = sent
    nl.add_route("10.0.0.0/8", "10.1.0.1", index=3, priority=100, mtu=1400, advmss=1360)
    nl.add_route("0.0.0.0/0", "10.244.1.1")
    nl.add_route("fd00::/8", "", index=3, table=100, scope=253)
    nl.add_route("10.96.0.0/12", "10.244.1.1", table=1000)
    expected = [
        route_message(socket.AF_INET, 8, 254, [
            ("RTA_TABLE", 254), ("RTA_DST", "10.0.0.0"), ("RTA_GATEWAY", "10.1.0.1"), ("RTA_OIF", 3),
            ("RTA_PRIORITY", 100), ("RTA_METRICS", {"attrs": [("RTAX_MTU", 1400), ("RTAX_ADVMSS", 1360)]})]),
        route_message(socket.AF_INET, 0, 254, [("RTA_TABLE", 254), ("RTA_GATEWAY", "10.244.1.1")]),
        route_message(socket.AF_INET6, 8, 100, [("RTA_TABLE", 100), ("RTA_DST", "fd00::"), ("RTA_OIF", 3)], 253),
        route_message(socket.AF_INET, 12, 0, [("RTA_TABLE", 1000), ("RTA_DST", "10.96.0.0"),
                                             ("RTA_GATEWAY", "10.244.1.1")]),  # a table above 255: attribute only
    ]
    for request, body in zip(requests, expected, strict=True):
        check(request, rtnl.RTM_NEWROUTE, rtnl.NLM_F_NEW, body, rtnl.RTMSG.size)


# ------------------------------------------------------------------------------------------------- tc

def decoded(request) -> tcmsg:
    kind, flags, body = request
    message = tcmsg(rtnl.HEADER.pack(rtnl.HEADER.size + len(body), kind, flags, 1, 0) + body)
    message.decode()
    return message


def options(message) -> dict:
    return dict(message.get_attr("TCA_OPTIONS")["attrs"])


@pytest.fixture
def shaped(sent, monkeypatch):
    nl, requests = sent
    monkeypatch.setattr(tc, "_ticks_per_microsecond", 15.625)
    monkeypatch.setattr(shaper, "_kernel_has_fq_codel", False)
    bucket = shaper.TokenBucket(1_000_000, 100_000, 20_000)
    assert shaper.shape(nl, 7, bucket, frozenset({4, 6})) == "bfifo"
    return bucket, [decoded(r) for r in requests], requests


def test_the_shaper_tree(shaped):
    """Without fq_codel: the limit, the interactive and bulk classes, and eight flow queues under bulk."""
    bucket, messages, requests = shaped
    kinds = [(m["header"]["type"], m.get_attr("TCA_KIND"), m["handle"], m["parent"]) for m in messages]
    leaves = [entry for leaf, tbf in zip(shaper.FLOW_CLASSES, shaper.FLOW_SEGMENTERS, strict=True)
              for entry in ((rtnl.RTM_NEWTCLASS, "htb", leaf, shaper.BULK_CLASS),
                            (rtnl.RTM_NEWQDISC, "tbf", tbf, leaf))]
    assert kinds[:5 + 2 * shaper.FLOWS + 1] == [
        (rtnl.RTM_NEWQDISC, "htb", shaper.ROOT_HANDLE, tc.TC_H_ROOT),
        (rtnl.RTM_NEWTCLASS, "htb", shaper.LIMIT_CLASS, shaper.ROOT_HANDLE),
        (rtnl.RTM_NEWTCLASS, "htb", shaper.INTERACTIVE_CLASS, shaper.LIMIT_CLASS),
        (rtnl.RTM_NEWTCLASS, "htb", shaper.BULK_CLASS, shaper.LIMIT_CLASS),
        (rtnl.RTM_NEWQDISC, "pfifo", shaper.INTERACTIVE_QUEUE, shaper.INTERACTIVE_CLASS),
        *leaves, (rtnl.RTM_NEWTFILTER, "bpf", 0, shaper.ROOT_HANDLE)]
    assert all(r[1] == rtnl.NLM_F_NEW and m["index"] == 7 for r, m in zip(requests, messages, strict=True))
    init = options(messages[0])["TCA_HTB_INIT"]
    assert (init["version"], init["rate2quantum"], init["defcls"]) == (3, 10, shaper.FLOW_CLASSES[0] & 0xFFFF)
    limit = options(messages[1])["TCA_HTB_PARMS"]
    assert (limit["rate"], limit["ceil"], limit["quantum"]) == (bucket.rate, bucket.rate, bucket.frame)
    assert limit["buffer"] == limit["cbuffer"] == 100_000 * 1_000_000 // bucket.rate * 15.625
    interactive, bulk = options(messages[2])["TCA_HTB_PARMS"], options(messages[3])["TCA_HTB_PARMS"]
    assert interactive["rate"] + bulk["rate"] == bucket.rate and interactive["ceil"] == bulk["ceil"] == bucket.rate
    assert (interactive["prio"], bulk["prio"]) == (0, 1)
    assert messages[4].get_attr("TCA_OPTIONS")["limit"] == shaper.INTERACTIVE_PACKETS
    for leaf, tbf in zip(messages[5:5 + 2 * shaper.FLOWS:2], messages[6:6 + 2 * shaper.FLOWS:2], strict=True):
        flow = options(leaf)["TCA_HTB_PARMS"]
        assert (flow["rate"], flow["ceil"], flow["quantum"], flow["prio"]) == \
            (bulk["rate"] // shaper.FLOWS, bucket.rate, bucket.frame, 1)  # each borrows up to the whole limit
        segmenter = options(tbf)["TCA_TBF_PARMS"]
        assert segmenter["limit"] == bucket.limit and segmenter["rate"] == bucket.rate * shaper.SEGMENTER_SPEEDUP
    classifier = messages[5 + 2 * shaper.FLOWS]
    assert classifier["info"] == shaper.FLOW_FILTER_PRIO << 16 | socket.htons(tc.ETH_P_ALL)
    assert options(classifier)["TCA_BPF_OPS_LEN"] == len(shaper.FLOW_HASH)


def test_the_shaper_tree_where_the_kernel_has_fq_codel(sent, monkeypatch):
    nl, requests = sent
    monkeypatch.setattr(tc, "_ticks_per_microsecond", 15.625)
    monkeypatch.setattr(shaper, "_kernel_has_fq_codel", True)
    bucket = shaper.TokenBucket(1_000_000, 100_000, 20_000)
    assert shaper.shape(nl, 7, bucket, frozenset({4})) == "fq_codel"
    messages = [decoded(r) for r in requests]
    kinds = [(m.get_attr("TCA_KIND"), m["handle"], m["parent"]) for m in messages]
    assert kinds[5:7] == [("tbf", shaper.BULK_SEGMENTER, shaper.BULK_CLASS),
                          ("fq_codel", shaper.BULK_QUEUE, shaper.BULK_SEGMENTER + 1)]
    assert options(messages[0])["TCA_HTB_INIT"]["defcls"] == shaper.BULK_CLASS & 0xFFFF
    assert "bpf" not in [kind for kind, _, _ in kinds]  # fq_codel isolates flows itself


def test_the_interactive_filters(shaped):
    _, messages, _ = shaped
    filters = [m for m in messages if m["header"]["type"] == rtnl.RTM_NEWTFILTER and m.get_attr("TCA_KIND") == "u32"]
    assert len(filters) == len(shaper.INTERACTIVE_MATCHES)
    for prio, (message, (protocol, value, mask, offset)) in enumerate(
            zip(filters, shaper.INTERACTIVE_MATCHES, strict=True), start=1):
        assert (message.get_attr("TCA_KIND"), message["parent"]) == ("u32", shaper.ROOT_HANDLE)
        assert message["info"] == prio << 16 | socket.htons(protocol)
        assert options(message)["TCA_U32_CLASSID"] == shaper.INTERACTIVE_CLASS
        selector = _u32_selector(message)
        assert selector == (tc.TC_U32_TERMINAL, 1, [(mask, value, offset, 0)])


def _u32_selector(message):
    """(flags, nkeys, keys) of the filter's TCA_U32_SEL, read with the kernel's layout: struct tc_u32_sel
    (16 bytes), then struct tc_u32_key each (mask and value in network byte order, offsets in the host's)."""
    body = bytes(message.data[rtnl.HEADER.size + rtnl.TCMSG.size:message["header"]["length"]])
    raw = rtnl.attributes(rtnl.attributes(body)[tc.TCA_OPTIONS])[tc.TCA_U32_SEL]
    flags, _, nkeys = struct.unpack_from("=BBB", raw)
    keys = [struct.unpack_from(">II", raw, 16 + 16 * i) + struct.unpack_from("=ii", raw, 16 + 16 * i + 8)
            for i in range(nkeys)]
    return flags, nkeys, keys


def test_the_egress_redirect(sent):
    nl, requests = sent
    shaper.redirect_ingress(nl, 7, 9)
    ingress, redirect = (decoded(r) for r in requests)
    assert (ingress.get_attr("TCA_KIND"), ingress["handle"], ingress["parent"]) == \
        ("ingress", shaper.INGRESS_HANDLE, tc.TC_H_INGRESS)
    assert (redirect.get_attr("TCA_KIND"), redirect["parent"]) == ("u32", shaper.INGRESS_HANDLE)
    assert redirect["info"] == 1 << 16 | socket.htons(tc.ETH_P_ALL)
    action = dict(dict(options(redirect)["TCA_U32_ACT"]["attrs"])["TCA_ACT_PRIO_1"]["attrs"])
    assert action["TCA_ACT_KIND"] == "mirred"
    mirred = dict(action["TCA_ACT_OPTIONS"]["attrs"])["TCA_MIRRED_PARMS"]
    assert (mirred["action"], mirred["eaction"], mirred["ifindex"]) == (tc.TC_ACT_STOLEN, tc.TCA_EGRESS_REDIR, 9)


def test_removing_qdiscs(sent):
    nl, requests = sent
    shaper.remove_all(nl, 7)
    root, ingress = (decoded(r) for r in requests)
    assert [(m["header"]["type"], m["index"], m["handle"], m["parent"]) for m in (root, ingress)] == [
        (rtnl.RTM_DELQDISC, 7, shaper.ROOT_HANDLE, tc.TC_H_ROOT),
        (rtnl.RTM_DELQDISC, 7, shaper.INGRESS_HANDLE, tc.TC_H_INGRESS)]


# ------------------------------------------------------------------------------------- kernel answers

def test_an_extended_ack_names_what_the_kernel_refused():
    """An NLMSG_ERROR with NLM_F_CAPPED | NLM_F_ACK_TLVS: the echoed header only, then NLMSGERR_ATTR_MSG."""
    echoed = rtnl.HEADER.pack(40, rtnl.RTM_NEWLINK, 0x605, 1, 0)
    payload = struct.pack("=i", -17) + echoed + rtnl.name_attribute(rtnl.NLMSGERR_ATTR_MSG, "File exists")
    answer = rtnl.Answer()
    rtnl._finish(answer, payload, rtnl.NLM_F_CAPPED | rtnl.NLM_F_ACK_TLVS)
    with pytest.raises(rtnl.Failed) as failed:
        answer.check()
    assert failed.value.code == 17 and "File exists" in failed.value.reason()


def test_a_refused_request_is_a_cni_error_naming_it():
    class Refusing(Recorder):
        def exchange(self, requests):
            answers = super().exchange(requests)
            for answer in answers:
                answer.error, answer.explanation = 95, "Operation not supported"
            return answers

    with pytest.raises(NetlinkFailure) as failed:
        Netlink(Refusing()).add_address(4, "10.0.0.1/24")
    assert failed.value.errno == 95 and "adding address 10.0.0.1/24 to link 4" in failed.value.msg


# ------------------------------------------------------------ reading: answers pyroute2 encodes, pycni decodes

def answer_of(message) -> tuple[int, bytes]:
    return message["header"]["type"], body_of(message)


def kernel_link(index, name, kind="", mtu=1500, mac="0a:58:0a:f4:00:01", master=0, up=True, alias=""):
    message = ifinfmsg()
    message["header"]["type"] = rtnl.RTM_NEWLINK
    message["family"], message["index"], message["ifi_type"] = 0, index, 1
    message["flags"] = 0x10043 if up else 0x1002  # UP|BROADCAST|RUNNING|LOWER_UP, or BROADCAST|MULTICAST
    attrs = [("IFLA_IFNAME", name), ("IFLA_MTU", mtu), ("IFLA_ADDRESS", mac),
             ("IFLA_OPERSTATE", "UP" if up else "DOWN")]
    if master:
        attrs.append(("IFLA_MASTER", master))
    if alias:
        attrs.append(("IFLA_IFALIAS", alias))
    if kind:
        attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}))
    message["attrs"] = attrs
    return answer_of(message)


def test_links_read_back():
    recorder = Recorder(answers=[[kernel_link(1, "lo", mac="00:00:00:00:00:00"),
                                  kernel_link(4, "cni0", "bridge", alias="pycni"),
                                  kernel_link(9, "veth1a2b", "veth", mtu=1450, master=4, up=False)]])
    links = {link.name: link for link in Netlink(recorder).links()}
    assert recorder.sent == [(rtnl.RTM_GETLINK, rtnl.NLM_F_DUMP, rtnl.IFINFO.pack(0, 0, 0, 0, 0))]
    veth = links["veth1a2b"]
    assert (veth.index, veth.kind, veth.mtu, veth.master, veth.operstate) == (9, "veth", 1450, 4, "DOWN")
    assert (links["cni0"].kind, links["cni0"].alias, links["cni0"].operstate) == ("bridge", "pycni", "UP")
    assert links["cni0"].mac == "0a:58:0a:f4:00:01"


def test_links_by_name_in_one_round_trip():
    recorder = Recorder(answers=[[kernel_link(4, "cni0", "bridge")], []])

    class Absent(Recorder):  # the second name: ENODEV, as the kernel answers for a link that does not exist
        def exchange(self, requests):
            answers = recorder.exchange(requests)
            answers[1].error = 19
            return answers

    found = Netlink(Absent()).links_named(["cni0", "gone0"])
    assert list(found) == ["cni0"] and found["cni0"].index == 4
    assert [kind for kind, _, _ in recorder.sent] == [rtnl.RTM_GETLINK, rtnl.RTM_GETLINK]


def test_addresses_and_routes_read_back():
    v4, v6, other = ifaddrmsg(), ifaddrmsg(), ifaddrmsg()
    for message, family, prefix, index, attrs in (
            (v4, socket.AF_INET, 24, 4, [("IFA_LOCAL", "10.244.1.1"), ("IFA_ADDRESS", "10.244.1.1")]),
            (v6, socket.AF_INET6, 64, 4, [("IFA_ADDRESS", "fd00:42::1")]),
            (other, socket.AF_INET, 8, 1, [("IFA_LOCAL", "127.0.0.1"), ("IFA_ADDRESS", "127.0.0.1")])):
        message["header"]["type"] = rtnl.RTM_NEWADDR
        message["family"], message["prefixlen"], message["index"] = family, prefix, index
        message["attrs"] = attrs
    route = rtmsg()
    route["header"]["type"] = rtnl.RTM_NEWROUTE
    route["family"], route["dst_len"], route["table"], route["type"] = socket.AF_INET, 16, 254, 1
    route["attrs"] = [("RTA_TABLE", 254), ("RTA_DST", "10.96.0.0"), ("RTA_GATEWAY", "10.244.1.254"), ("RTA_OIF", 4)]
    default = rtmsg()
    default["header"]["type"] = rtnl.RTM_NEWROUTE
    default["family"], default["table"], default["type"] = socket.AF_INET, 254, 1
    default["attrs"] = [("RTA_TABLE", 254), ("RTA_GATEWAY", "10.244.1.1"), ("RTA_OIF", 4)]
    recorder = Recorder(answers=[[answer_of(v4), answer_of(v6), answer_of(other)],
                                 [answer_of(route), answer_of(default)]])
    nl = Netlink(recorder)
    assert nl.addresses(4) == [("10.244.1.1", 24), ("fd00:42::1", 64)]  # link 1's, sent anyway, left out
    assert nl.routes(socket.AF_INET) == [("10.96.0.0/16", "10.244.1.254", 4), ("0.0.0.0/0", "10.244.1.1", 4)]


def test_qdiscs_read_back(shaped):
    """The shaper's own requests, answered back as the kernel's dump would list them."""
    bucket, _, requests = shaped
    dump = [(rtnl.RTM_NEWQDISC, body) for kind, _, body in requests if kind == rtnl.RTM_NEWQDISC]
    found = tc.qdiscs(Netlink(Recorder(answers=[dump])), 7)
    assert [(q.kind, q.handle, q.parent) for q in found] == [
        ("htb", shaper.ROOT_HANDLE, tc.TC_H_ROOT), ("pfifo", shaper.INTERACTIVE_QUEUE, shaper.INTERACTIVE_CLASS),
        *(("tbf", tbf, leaf) for leaf, tbf in zip(shaper.FLOW_CLASSES, shaper.FLOW_SEGMENTERS, strict=True))]
    tbf = found[2]
    assert (tbf.rate, tbf.limit) == (bucket.rate * shaper.SEGMENTER_SPEEDUP, bucket.limit)
    assert found[1].limit == shaper.INTERACTIVE_PACKETS


# ------------------------------------------------------------------- what the kernel refuses, and retries

class Answering(Recorder):
    """Answers the n-th request with `errors[n]` (an errno, 0 for an acknowledgement) or `messages[n]`."""

    def __init__(self, errors=(), messages=()):
        super().__init__()
        self.errors, self.messages = list(errors), list(messages)

    def exchange(self, requests):
        answers = super().exchange(requests)
        for answer in answers:
            answer.error = self.errors.pop(0) if self.errors else 0
            answer.messages = self.messages.pop(0) if self.messages else []
        return answers


def test_existing_addresses_and_routes_are_not_errors():
    nl = Netlink(Answering(errors=[17, 17, 0]))  # EEXIST, EEXIST, then a fresh address
    assert nl.add_address(4, "10.0.0.1/24") is False
    nl.add_route("10.1.0.0/16", "10.0.0.254")  # a duplicate route: the first one wins, as in the reference
    assert nl.add_address(4, "10.0.0.2/24") is True


def test_a_route_table_that_does_not_exist_has_no_routes():
    assert Netlink(Answering(errors=[2])).routes(socket.AF_INET, table=1234) == []


def test_the_link_a_destination_leaves_by():
    route = rtmsg()
    route["header"]["type"] = rtnl.RTM_NEWROUTE
    route["family"], route["dst_len"], route["table"], route["type"] = socket.AF_INET, 32, 254, 1
    route["attrs"] = [("RTA_TABLE", 254), ("RTA_DST", "192.0.2.7"), ("RTA_OIF", 3)]
    recorder = Answering(messages=[[answer_of(route)]])
    assert Netlink(recorder).route_interface("192.0.2.7") == 3
    kind, flags, body = recorder.sent[0]
    assert (kind, flags) == (rtnl.RTM_GETROUTE, 0)
    assert rtnl.RTMSG.unpack_from(body)[:2] == (socket.AF_INET, 32)
    assert Netlink(Answering(errors=[101])).route_interface("192.0.2.7") == 0  # ENETUNREACH: no link


def test_every_links_addresses_from_one_dump():
    first, second = ifaddrmsg(), ifaddrmsg()
    for message, index, address in ((first, 4, "10.0.0.1"), (second, 9, "10.0.1.1")):
        message["header"]["type"] = rtnl.RTM_NEWADDR
        message["family"], message["prefixlen"], message["index"] = socket.AF_INET, 24, index
        message["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    recorder = Answering(messages=[[answer_of(first), answer_of(second)]])
    assert Netlink(recorder).addresses_of_every_link() == {4: [("10.0.0.1", 24)], 9: [("10.0.1.1", 24)]}
    assert recorder.sent[0][:2] == (rtnl.RTM_GETADDR, rtnl.NLM_F_DUMP)


def test_a_bridge_without_vlan_filtering_in_the_kernel_is_removed_and_explained():
    from pycni.protocol.errors import CNIError

    created = kernel_link(6, "cni0", "bridge")
    # created; looked up; VLAN filtering refused (EOPNOTSUPP); deleted again
    recorder = Answering(errors=[0, 0, 95, 0], messages=[[], [created], [], []])
    with pytest.raises(CNIError) as failed:
        Netlink(recorder).add_bridge("cni0", vlan_filtering=True)
    assert "CONFIG_BRIDGE_VLAN_FILTERING" in failed.value.msg
    assert [kind for kind, _, _ in recorder.sent] == [rtnl.RTM_NEWLINK, rtnl.RTM_GETLINK, rtnl.RTM_NEWLINK,
                                                      rtnl.RTM_DELLINK]
    assert Netlink(Answering(errors=[17])).add_bridge("cni0") is None  # an existing one: the caller looks


def test_waiting_for_a_link_to_come_up():
    up, down = kernel_link(9, "eth0", up=True), kernel_link(9, "eth0", up=False)
    links = Netlink(Answering(messages=[[down], [up]])).wait_oper_up("eth0", timeout=2)
    assert links["eth0"].operstate == "UP"
    with pytest.raises(LinkNotFound):
        Netlink(Answering(errors=[19])).wait_oper_up("gone0")  # ENODEV: the link vanished


def test_dropping_a_link_outside_the_service_deletes_it_now():
    recorder = Answering()
    Netlink(recorder).drop_link_named("bw1")
    assert recorder.sent == [(rtnl.RTM_DELLINK, 0, rtnl.IFINFO.pack(0, 0, 0, 0, 0)
                              + rtnl.name_attribute(rtnl.IFLA_IFNAME, "bw1"))]


def test_a_kernel_without_fq_codel_gets_the_flow_queues(sent, monkeypatch):
    """The first shape() of a process tries fq_codel; "unknown qdisc kind" (ENOENT) removes what was made
    and builds the flow queues instead, and later calls go straight to them."""
    monkeypatch.setattr(tc, "_ticks_per_microsecond", 15.625)
    monkeypatch.setattr(shaper, "_kernel_has_fq_codel", None)

    class NoFqCodel(Recorder):
        def exchange(self, requests):
            answers = super().exchange(requests)
            for (kind, _, body), answer in zip(requests, answers, strict=True):
                if kind == rtnl.RTM_NEWQDISC and b"fq_codel\0" in body:
                    answer.error = 2
            return answers

    recorder = NoFqCodel()
    bucket = shaper.TokenBucket(1_000_000, 100_000, 20_000)
    assert shaper.shape(Netlink(recorder), 7, bucket, frozenset({4})) == "bfifo"
    kinds = [decoded(r).get_attr("TCA_KIND") for r in recorder.sent]
    assert kinds.count("fq_codel") == 1 and "bpf" in kinds
    removed = [decoded(r) for r in recorder.sent if r[0] == rtnl.RTM_DELQDISC]
    assert [(m["handle"], m["parent"]) for m in removed] == [(shaper.ROOT_HANDLE, tc.TC_H_ROOT)]  # the first try
    recorder.sent.clear()
    assert shaper.shape(Netlink(recorder), 8, bucket, frozenset({4})) == "bfifo"
    assert "fq_codel" not in [decoded(r).get_attr("TCA_KIND") for r in recorder.sent]


def test_what_a_link_carries_read_by_handle(shaped):
    """CHECK's reading: the qdiscs of pycni's handles and the limit class, asked for in one round trip."""
    bucket, _, requests = shaped
    qdisc_answers = {decoded(r)["handle"]: (rtnl.RTM_NEWQDISC, body) for r in requests
                     for kind, _, body in [r] if kind == rtnl.RTM_NEWQDISC}
    limit_class = next((rtnl.RTM_NEWTCLASS, body) for kind, _, body in requests
                       if kind == rtnl.RTM_NEWTCLASS and decoded((kind, 0, body))["handle"] == shaper.LIMIT_CLASS)

    class Kernel(Recorder):
        def exchange(self, wanted):
            answers = super().exchange(wanted)
            for (kind, flags, body), answer in zip(wanted, answers, strict=True):
                assert flags == rtnl.NLM_F_ECHO
                handle = rtnl.TCMSG.unpack_from(body)[2]
                if kind == rtnl.RTM_GETTCLASS:
                    answer.messages = [limit_class]
                elif handle in qdisc_answers:
                    answer.messages = [qdisc_answers[handle]]
                else:
                    answer.error = 22  # EINVAL: no qdisc of that handle
            return answers

    found = shaper.installed_on(Netlink(Kernel()), [7])[7]
    assert (found.queue, found.has_ingress) == ("bfifo", False)
    assert found.bucket is not None and (found.bucket.rate, found.bucket.limit) == (bucket.rate, bucket.limit)


@pytest.mark.parametrize("rate_bits, burst_bits, mtu, expected", [
    (8_000_000, 800_000, 1500, (1_000_000, 100_000, 12_112, 1514)),  # queue: the 8-frame floor
    (8_000_000, 2**32 - 1, 1500, (1_000_000, 100_000, 12_112, 1514)),  # the runtimes' "unset": 100 ms
    (8_000_000, 8, 9000, (1_000_000, 9014, 72_112, 9014)),  # a burst below a frame: one frame
    (1_000_000_000, 8_000_000, 1500, (125_000_000, 1_000_000, 625_000, 1514)),  # 5 ms of the rate
])
def test_token_buckets(rate_bits, burst_bits, mtu, expected):
    bucket = shaper.TokenBucket.from_bits(rate_bits, burst_bits, mtu)
    assert (bucket.rate, bucket.burst, bucket.limit, bucket.frame) == expected
