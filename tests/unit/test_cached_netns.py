"""Which network namespace a libcni cache entry belongs to, whichever libcni wrote it (gc keeps the pods
whose namespace still exists, so a wrong answer here frees addresses that are in use)."""

import pytest

from pycni.node.nodeinfo import cached_netns

RESULT = {"interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/pod-a"},
                         {"name": "net1", "sandbox": "/run/netns/pod-b"}]}


@pytest.mark.parametrize("entry, expected", [
    ({"netns": "/run/netns/own", "ifName": "eth0", "result": RESULT}, "/run/netns/own"),  # libcni 1.2, pycni run
    ({"ifName": "eth0", "result": RESULT}, "/run/netns/pod-a"),  # older libcni: no netns key
    ({"ifName": "net1", "result": RESULT}, "/run/netns/pod-b"),
    ({"ifName": "eth9", "result": {"interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}]}}, "/run/netns/x"),
    ({"ifName": "eth0", "result": {"interfaces": [{"name": "cni0"}]}}, ""),
    ({"ifName": "eth0"}, ""),
    ({"ifName": "eth0", "result": None}, ""),
])
def test_the_namespace_of_a_cache_entry(entry, expected):
    assert cached_netns(entry) == expected
