"""Pure logic behind the nftables layouts: the masquerade exemptions merged before they reach an interval
set, and a refused transaction named in the error a runtime sees."""

import ipaddress
import json

import pytest

from pycni.host import nft
from pycni.plugins.bridge import masquerade


@pytest.mark.parametrize("subnet,others,merged", [
    ("10.244.0.0/24", ["10.244.0.0/16"], ["10.244.0.0/16"]),
    ("10.244.255.0/24", ["10.244.0.0/16"], ["10.244.0.0/16"]),
    ("10.244.0.0/24", ["10.244.0.0/24"], ["10.244.0.0/24"]),
    ("10.244.0.0/24", ["10.244.0.0/16", "10.244.0.0/16", "10.0.0.0/8"], ["10.0.0.0/8"]),
    ("10.244.0.0/24", ["10.245.0.0/16", "fd00::/8"], ["10.244.0.0/24", "10.245.0.0/16"]),
    ("10.244.0.0/24", ["10.244.1.0/24"], ["10.244.0.0/23"]),  # adjacent: one interval covers both
    ("10.244.3.0/24", ["10.244.0.0/22", "10.244.3.7/32"], ["10.244.0.0/22"]),  # a host address inside
    ("fd00:10:244::/64", ["fd00:10:244::/56", "10.244.0.0/16", "fd00:10:244::/56"], ["fd00:10:244::/56"]),
])
def test_exemptions_are_merged_per_family(subnet, others, merged):
    assert [str(n) for n in masquerade.exemptions(ipaddress.ip_network(subnet), others)] == merged


def test_a_refused_element_is_named_with_the_kernel_reason_and_code_7():
    command = {"add": {"element": {"family": "inet", "table": "pycni_masq", "name": "exempt4", "elem": [
        {"elem": {"val": {"concat": ["10.244.0.2", {"prefix": {"addr": "10.244.0.0", "len": 16}}]},
                  "comment": "net/c/eth0"}}]}}}
    error = nft.refusal("internal:0:0-0: Error: Could not process rule: File exists\n", nft.describe(command))
    assert error.msg == ("nftables refused add element inet pycni_masq exempt4 { 10.244.0.2 . 10.244.0.0/16 }: "
                         "File exists")
    assert error.code == 7 and "File exists" in error.details


@pytest.mark.parametrize("reason,code", [("Device or resource busy", 11), ("No buffer space available", 11),
                                         ("Operation not supported", 999), ("No such file or directory", 999)])
def test_refusal_codes(reason, code):
    assert nft.refusal(f"Error: Could not process rule: {reason}", "x").code == code


def test_map_elements_ranges_and_other_commands_are_described():
    map_add = {"add": {"element": {"family": "inet", "table": "t", "name": "m", "elem": [
        [{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": "x"}}, {"concat": ["10.0.0.2", 80]}]]}}}
    assert nft.describe(map_add) == "add element inet t m { tcp . 8080 : 10.0.0.2 . 80 }"
    ranged = {"delete": {"element": {"family": "ip", "table": "t", "name": "s", "elem": [{"range": [1, 9]}]}}}
    assert nft.describe(ranged) == "delete element ip t s { 1-9 }"
    assert nft.describe({"add": {"chain": {"family": "inet", "table": "t", "name": "c"}}}) == "add chain inet t c"
    assert nft.describe({"odd": 1}) == '{"odd": 1}'


def test_the_refused_line_of_a_text_transaction():
    error = ("Error: Could not process rule: File exists\n"
             "add element inet t exempt4 { 10.244.0.2 . 10.244.0.0/24 }\n"
             "                             ^^^^^^^^^^^^^^^^^^^^^^^^^^\n")
    assert nft._refused_line(error) == "add element inet t exempt4 { 10.244.0.2 . 10.244.0.0/24 }"
    assert nft._element_key('10.244.0.2 . 10.244.0.0/16 comment "a/b/eth0"') == "10.244.0.2 . 10.244.0.0/16"
    assert nft._element_key('tcp . 80 comment "x" : 10.0.0.2 . 8080') == "tcp . 80"


def test_the_call_log_carries_the_kernels_reason():
    from pycni.protocol.calllog import Call

    answer = nft.refusal("internal:0:0-0: Error: Could not process rule: File exists", "add element inet t s { 1 }")
    call = Call.of("bridge", {"CNI_COMMAND": "ADD"}, 1, json.dumps(answer.to_dict("1.0.0")), 0.01)
    line = json.loads(call.line(as_json=True))
    assert line["code"] == 7 and line["error"] == "nftables refused add element inet t s { 1 }: File exists"
    assert line["details"] == "internal:0:0-0: Error: Could not process rule: File exists"
