"""The routes agent's rtnetlink messages (`host/routing.py`), checked without root against pyroute2 as an
independent decoder and encoder: each request is decoded by pyroute2, and notifications pyroute2 encodes
are read back by the agent's parser."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pycni.host import rtnl
from pycni.host.routing import Forwarding, Neighbour, Route, Routing

PROTOCOL = 114
IP, NET = ipaddress.ip_address, ipaddress.ip_network


def routing() -> Routing:
    """A Routing whose link names are known (no socket: only its packing and parsing are used)."""
    found = Routing.__new__(Routing)
    found.protocol, found.vxlan_name = PROTOCOL, "pycni.vxlan"
    found._names, found._indexes = {2: "eth0", 7: "pycni.vxlan"}, {"eth0": 2, "pycni.vxlan": 7}
    return found


def decoded(cls, request: tuple[int, int, bytes]):
    kind, flags, body = request
    message = cls(rtnl.HEADER.pack(rtnl.HEADER.size + len(body), kind, flags, 1, 0) + body)
    message.decode()
    return message


def test_a_direct_route_and_an_onlink_route_over_vxlan_v4_and_v6():
    agent = routing()
    direct = decoded(rtmsg, agent._put_request(Route(NET("10.244.2.0/24"), IP("192.0.2.12"), "eth0")))
    assert (direct["family"], direct["dst_len"], direct["proto"], direct["table"], direct["type"]) == \
        (socket.AF_INET, 24, PROTOCOL, 254, 1)
    assert direct.get_attr("RTA_DST") == "10.244.2.0" and direct.get_attr("RTA_GATEWAY") == "192.0.2.12"
    assert direct.get_attr("RTA_OIF") == 2 and direct["flags"] == 0
    assert direct["header"]["flags"] & rtnl.NLM_F_PUT == rtnl.NLM_F_PUT
    vxlan = decoded(rtmsg, agent._put_request(Route(NET("fd00:10:244:3::/64"), IP("fd00:10:244:3::"),
                                                    "pycni.vxlan", onlink=True)))
    assert (vxlan["family"], vxlan["dst_len"], vxlan["flags"]) == (socket.AF_INET6, 64, rtnl.RTNH_F_ONLINK)
    assert vxlan.get_attr("RTA_GATEWAY") == "fd00:10:244:3::" and vxlan.get_attr("RTA_OIF") == 7
    removal = decoded(rtmsg, agent._remove_request(Route(NET("10.244.2.0/24"), IP("192.0.2.12"), "eth0")))
    assert removal["header"]["type"] == rtnl.RTM_DELROUTE and removal.get_attr("RTA_DST") == "10.244.2.0"
    assert removal["proto"] == PROTOCOL


def test_a_permanent_neighbour_and_an_fdb_entry_on_the_vxlan_device():
    agent = routing()
    neighbour = decoded(ndmsg, agent._put_request(Neighbour(IP("10.244.3.0"), "02:aa:bb:cc:dd:ee")))
    assert (neighbour["family"], neighbour["ifindex"], neighbour["state"]) == (socket.AF_INET, 7, 0x80)
    assert neighbour.get_attr("NDA_DST") == "10.244.3.0"
    assert neighbour.get_attr("NDA_LLADDR") == "02:aa:bb:cc:dd:ee"
    fdb = decoded(ndmsg, agent._put_request(Forwarding("02:aa:bb:cc:dd:ee", IP("203.0.113.13"))))
    assert (fdb["family"], fdb["ifindex"], fdb["state"], fdb["flags"]) == (rtnl.AF_BRIDGE, 7, 0x80, rtnl.NTF_SELF)
    assert fdb.get_attr("NDA_DST") == "203.0.113.13" and fdb.get_attr("NDA_LLADDR") == "02:aa:bb:cc:dd:ee"
    gone = decoded(ndmsg, agent._remove_request(Forwarding("02:aa:bb:cc:dd:ee", IP("203.0.113.13"))))
    assert gone["header"]["type"] == rtnl.RTM_DELNEIGH and gone.get_attr("NDA_DST") == "203.0.113.13"


def encoded(cls, kind: int, fields: dict, attrs: list) -> bytes:
    message = cls()
    message["header"]["type"] = kind
    for key, value in fields.items():
        message[key] = value
    message["attrs"] = attrs
    message.encode()
    return bytes(message.data[rtnl.HEADER.size:message["header"]["length"]])


def test_notifications_pyroute2_encodes_are_read_back():
    agent = routing()
    route = encoded(rtmsg, rtnl.RTM_NEWROUTE, {"family": socket.AF_INET, "dst_len": 24, "table": 254,
                                               "proto": PROTOCOL, "type": 1, "flags": rtnl.RTNH_F_ONLINK},
                    [("RTA_DST", "10.244.3.0"), ("RTA_GATEWAY", "10.244.3.0"), ("RTA_OIF", 7)])
    change = agent._change_of(rtnl.RTM_NEWROUTE, route)
    assert change is not None and change.kind == "route" and not change.removed
    assert change.entry == Route(NET("10.244.3.0/24"), IP("10.244.3.0"), "pycni.vxlan", onlink=True)
    other = encoded(rtmsg, rtnl.RTM_NEWROUTE, {"family": socket.AF_INET, "dst_len": 24, "table": 254,
                                               "proto": 4, "type": 1}, [("RTA_DST", "10.9.0.0")])
    assert agent._change_of(rtnl.RTM_NEWROUTE, other) is None  # not the agent's protocol
    removed = encoded(ndmsg, rtnl.RTM_DELNEIGH, {"family": socket.AF_INET, "ifindex": 7, "state": 0x80},
                      [("NDA_DST", "10.244.3.0")])
    change = agent._change_of(rtnl.RTM_DELNEIGH, removed)
    assert change is not None and change.kind == "neighbour" and change.removed
    assert change.entry == Neighbour(IP("10.244.3.0"), "")
    fdb = encoded(ndmsg, rtnl.RTM_NEWNEIGH, {"family": rtnl.AF_BRIDGE, "ifindex": 7, "state": 0x80, "flags": 2},
                  [("NDA_LLADDR", "02:aa:bb:cc:dd:ee"), ("NDA_DST", "203.0.113.13")])
    change = agent._change_of(rtnl.RTM_NEWNEIGH, fdb)
    assert change is not None and change.entry == Forwarding("02:aa:bb:cc:dd:ee", IP("203.0.113.13"))
    elsewhere = encoded(ndmsg, rtnl.RTM_NEWNEIGH, {"family": socket.AF_INET, "ifindex": 2, "state": 0x80},
                        [("NDA_DST", "192.0.2.12"), ("NDA_LLADDR", "02:00:00:00:00:01")])
    assert agent._change_of(rtnl.RTM_NEWNEIGH, elsewhere) is None  # a neighbour of another device
