"""deploy/: the DaemonSet manifest, parsed, and its install step run against stand-in host paths."""

import json
import os
import subprocess

import yaml  # scripts/test.sh installs PyYAML

from pycni.plugins import REGISTRY

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy")


def documents():
    with open(os.path.join(DEPLOY, "pycni-daemonset.yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def daemonset():
    return next(d for d in documents() if d["kind"] == "DaemonSet")


def test_manifest_mounts_privileges_and_command():
    ds = daemonset()
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    init = spec["initContainers"][0]
    assert init["securityContext"]["privileged"] is True
    assert init["command"] == ["/pycni/deploy/install-on-host.sh", "/host"]
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert volumes[next(iter(mounts))] == "/" and mounts["host-root"] == "/host"
    service = next(c for c in spec["containers"] if c["name"] == "service")
    assert service["command"] == ["nsenter", "--target", "1", "--mount", "--net", "--", "/opt/pycni/venv/bin/pycni",
                                  "daemon", "--socket", "/run/pycni/pycni.sock", "--metrics-address", "0.0.0.0:9750",
                                  "--log-format", "json"]
    assert service["ports"] == [{"name": "metrics", "containerPort": 9750, "protocol": "TCP"}]
    assert service["securityContext"]["privileged"] is True
    env = {e["name"] for e in init["env"]}
    assert {"NODE_NAME", "CLUSTER_CIDR"} <= env
    kinds = sorted(d["kind"] for d in documents())
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "ServiceAccount"]
    devices = next(c for c in spec["containers"] if c["name"] == "device-plugin")
    assert devices["securityContext"]["privileged"] is True
    assert devices["command"][:4] == ["/venv/bin/pycni", "device-plugin", "--config", "/etc/pycni/devices.json"]
    mounted = {m["mountPath"]: m["name"] for m in devices["volumeMounts"]}
    host_paths = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
    for path in ("/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources"):
        assert host_paths[mounted[path]] == path
    config_map = next(d for d in documents() if d["kind"] == "ConfigMap")
    resources = json.loads(config_map["data"]["devices.json"])["resources"]
    assert [r["resourceName"] for r in resources] == ["pycni.io/nic", "pycni.io/tun"]
    rules = next(d for d in documents() if d["kind"] == "ClusterRole")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]


def test_install_step_against_stand_in_host_paths(tmp_path):
    """What the init container runs, with a temporary directory as the host's root."""
    host = tmp_path / "host"
    env = {**os.environ, "PYCNI_INSTALL_MODE": "local", "PYCNI_INSTALL_FLAGS": "--skip-apt",
           "POD_CIDR": "10.244.42.0/24 fd00:42::/64", "CLUSTER_CIDR": "10.244.0.0/16"}
    done = subprocess.run([os.path.join(DEPLOY, "install-on-host.sh"), str(host)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    bin_dir = host / "opt" / "cni" / "bin"
    assert sorted(os.listdir(bin_dir)) == sorted(REGISTRY)
    version = subprocess.run([str(bin_dir / "host-local")], env={"CNI_COMMAND": "VERSION"}, input=b"",
                             capture_output=True)
    assert json.loads(version.stdout)["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    conflist = json.loads((host / "etc" / "cni" / "net.d" / "10-k8s-pod-network.conflist").read_text())
    bridge = conflist["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.42.0/24"}], [{"subnet": "fd00:42::/64"}]]
    assert bridge["nonMasqueradeCIDRs"] == ["10.244.0.0/16"]
    assert (host / "opt" / "pycni" / "src" / "scripts" / "install-bin.sh").exists()
    # `pycni` is on PATH (the link install-bin.sh places), and an uninstall takes every pycni file away
    cli = host / "usr" / "local" / "bin"
    on_path = subprocess.run(["pycni", "--version"], env={**os.environ, "PATH": f"{cli}:/usr/bin:/bin"},
                             capture_output=True, text=True)
    assert on_path.returncode == 0 and "pycni" in on_path.stdout, on_path.stderr
    (bin_dir / "foreign-plugin").write_text("#!/bin/sh\n")  # not pycni's: stays
    done = subprocess.run([str(host / "opt" / "pycni" / "src" / "scripts" / "install-bin.sh"), "--prefix",
                           str(host / "opt" / "pycni"), "--bin-dir", str(bin_dir), "--conf-dir",
                           str(host / "etc" / "cni" / "net.d"), "--cli-dir", str(cli), "--uninstall"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    left = sorted(str(p.relative_to(host)) for p in host.rglob("*") if p.is_file() or p.is_symlink())
    assert left == ["opt/cni/bin/foreign-plugin"]
