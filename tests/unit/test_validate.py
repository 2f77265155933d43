"""`pycni validate` on real files: every key no schema knows (with the closest known key), capabilities, and
the failures a runtime would only meet at the first pod. The plugins themselves keep accepting unknown keys."""

import json
import os
import stat

import pytest
from click.testing import CliRunner

from pycni.node.cli import main
from pycni.node.install import install_launchers
from pycni.protocol import schema

REPO = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.fixture
def bin_dir(tmp_path):
    """A CNI bin dir with this pycni's launchers and one foreign plugin that speaks only 0.3.1."""
    path = tmp_path / "bin"
    install_launchers(str(path), compiled=False)
    foreign = path / "oldplugin"
    foreign.write_text('#!/bin/sh\necho \'{"cniVersion":"0.3.1","supportedVersions":["0.3.0","0.3.1"]}\'\n')
    foreign.chmod(foreign.stat().st_mode | stat.S_IXUSR)
    return str(path)


def validate(tmp_path, bin_dir, config, *flags):
    path = tmp_path / "net.conflist"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    result = CliRunner().invoke(main, ["validate", "--cni-bin-dir", bin_dir, "--json", *flags, str(path)])
    return result.exit_code, json.loads(result.output)


def findings(report, severity=None):
    return {f["path"]: f for f in report["findings"] if severity is None or f["severity"] == severity}


TYPOS = {"cniVersion": "1.0.0", "name": "x", "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipMasq": True, "hairpinmode": True,
     "ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "rangess": []}},
    {"type": "portmap", "capabilities": {"portMapping": True}}]}


def test_the_three_silent_typos_are_found_with_the_key_meant(tmp_path, bin_dir):
    code, report = validate(tmp_path, bin_dir, TYPOS)
    assert code == 0 and report["kind"] == "conflist" and report["errors"] == 0
    found = findings(report, "warning")
    assert found["plugins[0].hairpinmode"]["suggestion"] == "hairpinMode"
    assert "case-insensitively" in found["plugins[0].hairpinmode"]["message"]
    assert (found["plugins[0].ipam.rangess"]["message"], found["plugins[0].ipam.rangess"]["suggestion"]) == \
        ("unknown key", "ranges")
    assert found["plugins[1].capabilities.portMapping"]["suggestion"] == "portMappings"
    assert "no hostPort of any pod will work" in found["plugins[1].capabilities"]["message"]
    assert set(found) == {"plugins[0].hairpinmode", "plugins[0].ipam.rangess", "plugins[1].capabilities.portMapping",
                          "plugins[1].capabilities"}
    assert validate(tmp_path, bin_dir, TYPOS, "--strict")[0] == 1


def test_human_output_names_path_and_suggestion(tmp_path, bin_dir):
    path = tmp_path / "typos.conflist"
    path.write_text(json.dumps(TYPOS))
    result = CliRunner().invoke(main, ["validate", "--cni-bin-dir", bin_dir, str(path)])
    assert "warning: `plugins[0].ipam.rangess`: unknown key; did you mean `ranges`?" in result.output
    assert result.output.rstrip().endswith("conflist, 0 errors, 4 warnings")


def test_the_plugins_themselves_still_accept_unknown_keys():
    config = schema.validate({"cniVersion": "1.0.0", "name": "x", "hairpinmode": True, "somethingElse": 1,
                              "ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "rangess": []}}, "bridge.json")
    assert config["hairpinMode"] is True and config["somethingElse"] == 1  # read as Go reads it, the rest kept


def test_the_shipped_conflists_are_clean(tmp_path, bin_dir):
    for name in ("10-k8s-pod-network.conflist", "20-host-device-secondary.conflist"):
        result = CliRunner().invoke(main, ["validate", "--strict", "--cni-bin-dir", bin_dir, "--json",
                                           os.path.join(REPO, "conf", name)])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["findings"] == []


@pytest.mark.parametrize("change, path, words", [
    ({"plugins": [{"type": "flannel"}]}, "plugins[0].type", "no executable `flannel`"),
    ({"plugins": [{"type": "bridge", "ipam": {"type": "dhcp"}}]}, "plugins[0].ipam.type", "no executable `dhcp`"),
    ({"plugins": [{"type": "oldplugin"}]}, "plugins[0].type", "does not support cniVersion 1.0.0"),
    ({"cniVersion": "2.0.0", "plugins": [{"type": "loopback"}]}, "plugins[0].type",
     "does not support cniVersion 2.0.0"),
    ({"disableCheck": "yes"}, "disableCheck", "is not of type 'boolean'"),
    ({"disableGC": 1}, "disableGC", "is not of type 'boolean'"),
    ({"plugins": [{"type": "bridge", "ipam": {"type": "host-local", "ranges": [
        [{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/16"}]]}}]}, "plugins[0].ipam.ranges", "overlaps"),
    ({"plugins": [{"type": "bridge", "ipam": {"type": "host-local", "ranges": [
        [{"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}]]}}]}, "plugins[0].ipam.ranges[0][0].gateway",
     "gateway 10.2.0.1 is not in subnet 10.1.0.0/24"),
    ({"plugins": [{"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24",
                                              "gateway": "10.9.0.1"}}]}, "plugins[0].ipam.gateway", "not in subnet"),
    ({"plugins": [{"type": "bridge", "mtu": "big"}]}, "plugins[0].mtu", "'big' is not of type 'integer'"),
    ({"plugins": [{"type": "portmap", "capabilities": {"portMappings": "yes"}}]},
     "plugins[0].capabilities.portMappings", "must be true or false"),
])
def test_what_a_runtime_would_fail_on_is_an_error(tmp_path, bin_dir, change, path, words):
    config = {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "loopback"}], **change}
    code, report = validate(tmp_path, bin_dir, config)
    assert code == 1
    found = findings(report, "error")
    assert path in found and words in found[path]["message"], report["findings"]


def test_capabilities_nothing_reads_and_conflist_level_typos_are_warnings(tmp_path, bin_dir):
    config = {"cniVersion": "1.0.0", "name": "net", "disablecheck": True, "plugin": [], "plugins": [
        {"type": "bridge", "capabilities": {"portMappings": True, "ips": True, "mac": True},
         "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}]}
    code, report = validate(tmp_path, bin_dir, config)
    assert code == 0
    found = findings(report, "warning")
    assert "`bridge` nor `host-local` does not read this capability" in \
        found["plugins[0].capabilities.portMappings"]["message"]
    assert "plugins[0].capabilities.ips" not in found and "plugins[0].capabilities.mac" not in found
    assert found["disablecheck"]["suggestion"] == "disableCheck" and found["plugin"]["suggestion"] == "plugins"


def test_a_single_plugin_config_and_an_unreadable_file(tmp_path, bin_dir):
    code, report = validate(tmp_path, bin_dir, {"cniVersion": "1.0.0", "name": "n", "type": "bandwidth",
                                                "ingressRate": 1000000, "ingressburst": 10, "egresRate": 5})
    assert code == 0 and report["kind"] == "netconf"
    found = findings(report)
    assert found["ingressburst"]["suggestion"] == "ingressBurst" and found["egresRate"]["suggestion"] == "egressRate"
    code, report = validate(tmp_path, bin_dir, "{not json")
    assert code == 1 and "not JSON" in report["findings"][0]["message"]


def test_the_device_plugin_config_is_recognised_and_held_to_its_schema(tmp_path, bin_dir):
    good = {"resourceList": [{"resourceName": "sriov_a", "selectors": {"vendors": ["8086"], "pfNames": ["ens1#0-3"]}}],
            "resources": [{"resourceName": "pycni.io/tun", "type": "tun", "count": 4}]}
    code, report = validate(tmp_path, bin_dir, good)
    assert (code, report["kind"], report["findings"]) == (0, "device-plugin", [])
    assert report["checked"] == ["intel.com/sriov_a: ok", "pycni.io/tun: ok"]
    bad = {"resources": [{"resourceName": "pycni.io/nic", "type": "netdev", "selector": {"ifname": ["ens*"]}}],
           "resourceList": [{"resourceName": "b", "selectors": [{"vendor": ["8086"]}, {"ddpProfiles": ["x"]}]}]}
    code, report = validate(tmp_path, bin_dir, bad)
    assert code == 1
    found = findings(report, "error")
    assert found["resources[0].selector.ifname"]["suggestion"] == "ifNames"
    assert found["resourceList[0].selectors[0].vendor"]["suggestion"] == "vendors"
    assert "not implemented by pycni" in found["resourceList[0].selectors[1].ddpProfiles"]["message"]
    code, report = validate(tmp_path, bin_dir, {"resources": [{"resourceName": "pycni.io/nic", "type": "netdev",
                                                               "selector": {}}]})
    assert code == 1 and "selects every interface" in report["findings"][0]["message"]
