"""The dispatcher in-process: env and stdin validation, version gates, error JSON."""

import json

import pytest

from pycni.protocol import skel
from pycni.protocol.result import IPConfig, Result

CALLS = []


def _add(request):
    CALLS.append(request)
    return Result(ips=[IPConfig("10.0.0.2/24", "10.0.0.1")])


def _noop(request):
    CALLS.append(request)


def _boom(request):
    raise RuntimeError("kaboom")


PLUGIN = skel.PluginSpec(name="fake", about="test", schema="loopback.json", add=_add, delete=_noop, check=_noop,
                         gc=_noop, status=_noop, known_cni_args=frozenset({"IP"}))
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin"}


def run(env=None, config=None, raw=None, plugin=PLUGIN, tty=False):
    CALLS.clear()
    stdin = raw if raw is not None else json.dumps(config if config is not None else
                                                  {"cniVersion": "1.0.0", "name": "net"}).encode()
    code, out = skel.run(plugin, {**ENV, **(env or {})}, stdin, tty)
    return code, (json.loads(out) if out.strip().startswith("{") else out)


def test_add_prints_result_in_config_version():
    code, out = run(config={"cniVersion": "0.4.0", "name": "net"})
    assert code == 0
    assert out == {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"}]}


@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
def test_missing_env_is_code_4_naming_it(missing):
    code, out = run(env={missing: ""})
    assert code == 1 and out["code"] == 4 and missing in out["msg"]
    assert not CALLS


def test_del_does_not_need_netns():
    assert run(env={"CNI_COMMAND": "DEL", "CNI_NETNS": ""})[0] == 0


@pytest.mark.parametrize("ifname", ["a" * 16, "..", "eth/0", "eth 0", "eth:0"])
def test_bad_ifname_is_code_4(ifname):
    code, out = run(env={"CNI_IFNAME": ifname})
    assert out["code"] == 4 and "CNI_IFNAME" in out["msg"]


def test_bad_container_id_is_code_4():
    assert run(env={"CNI_CONTAINERID": "../etc"})[1]["code"] == 4


def test_unknown_command_is_code_4():
    code, out = run(env={"CNI_COMMAND": "FROB"})
    assert out["code"] == 4 and "FROB" in out["msg"]


def test_no_command_from_a_terminal_prints_about():
    code, out = run(env={"CNI_COMMAND": ""}, raw=b"", tty=True)
    assert code == 0 and "fake" in out and "1.1.0" in out


def test_no_command_otherwise_is_code_4():
    code, out = run(env={"CNI_COMMAND": ""})
    assert code == 1 and out["code"] == 4 and "CNI_COMMAND" in out["msg"]


@pytest.mark.parametrize("raw", [b"{bad", b"", b"[1,2]", b"\xff\xfe"])
def test_undecodable_stdin_is_code_6(raw):
    code, out = run(raw=raw)
    assert code == 1 and out["code"] == 6


@pytest.mark.parametrize("version", ["0.2.0", "9.9.9", ""])
def test_unsupported_version_is_code_1(version):
    code, out = run(config={"cniVersion": version, "name": "net"})
    assert code == 1 and out["code"] == 1


def test_version_not_a_string_is_code_6():
    assert run(config={"cniVersion": 1, "name": "net"})[1]["code"] == 6


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", None, "x" * 300, 7])
def test_hostile_network_names_are_code_7(name):
    config = {"cniVersion": "1.0.0"}
    if name is not None:
        config["name"] = name
    code, out = run(config=config)
    assert code == 1 and out["code"] == 7
    assert not CALLS


@pytest.mark.parametrize("command,version", [("CHECK", "0.3.1"), ("GC", "1.0.0"), ("STATUS", "1.0.0")])
def test_verb_version_gates(command, version):
    code, out = run(env={"CNI_COMMAND": command}, config={"cniVersion": version, "name": "net"})
    assert out["code"] == 1 and command in out["msg"]


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_1_1_0_verbs_dispatch(command):
    config = {"cniVersion": "1.1.0", "name": "net", "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "b"}]}
    code, out = run(env={"CNI_COMMAND": command}, config=config)
    assert code == 0 and out == ""
    assert CALLS[0].command == command
    if command == "GC":
        assert CALLS[0].valid_attachments == frozenset({("a", "b")})


def test_legacy_attachments_key_is_accepted():
    config = {"cniVersion": "1.1.0", "name": "net", "cni.dev/attachments": []}
    assert run(env={"CNI_COMMAND": "GC"}, config=config)[0] == 0
    assert CALLS[0].valid_attachments == frozenset()


def test_version_echoes_a_supported_input_version():
    code, out = run(env={"CNI_COMMAND": "VERSION"}, config={"cniVersion": "0.4.0"})
    assert out == {"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_version_with_empty_stdin():
    code, out = run(env={"CNI_COMMAND": "VERSION"}, raw=b"")
    assert code == 0 and out["cniVersion"] == "1.1.0"


def test_errors_carry_the_config_version():
    code, out = run(env={"CNI_IFNAME": ""}, config={"cniVersion": "0.4.0", "name": "n"})
    assert out["cniVersion"] == "0.4.0"


def test_handler_crash_is_json_not_traceback():
    plugin = skel.PluginSpec(name="fake", about="", schema="loopback.json", add=_boom, delete=_noop, check=_noop)
    code, out = run(plugin=plugin)
    assert code == 1 and out["code"] == 999 and "kaboom" in out["msg"]


def test_capabilities_key_is_tolerated_and_keys_fold_case():
    config = {"cniVersion": "1.0.0", "name": "net", "capabilities": {"portMappings": True},
              "RuntimeConfig": {"x": 1}}
    assert run(config=config)[0] == 0
    assert CALLS[0].runtime_config == {"x": 1}


def test_cni_args_unknown_key_rejected_unless_ignore_unknown():
    assert run(env={"CNI_ARGS": "FOO=1"})[1]["code"] == 4
    assert run(env={"CNI_ARGS": "FOO=1;IgnoreUnknown=1"})[0] == 0
    assert run(env={"CNI_ARGS": "IP=10.0.0.9;K8S_POD_NAME=x"})[0] == 0
    assert CALLS[0].cni_args["IP"] == "10.0.0.9"
    assert run(env={"CNI_ARGS": "garbage"})[1]["code"] == 4


def test_gc_requires_cni_path():
    config = {"cniVersion": "1.1.0", "name": "net"}
    assert run(env={"CNI_COMMAND": "GC", "CNI_PATH": ""}, config=config)[1]["code"] == 4


def test_malformed_prev_result_is_code_6():
    config = {"cniVersion": "1.0.0", "name": "net", "prevResult": {"ips": [{"address": "bad"}]}}
    assert run(config=config)[1]["code"] == 6
