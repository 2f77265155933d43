"""deploy/: what the DaemonSet may and may not do on a node, and the install path for nodes managed
without Kubernetes (scripts/install-bin.sh) run against stand-in host paths. The image and the DaemonSet's
containers themselves run for real in test_image.py."""

import json
import os
import subprocess

from pycni.plugins import REGISTRY
from tests.image import daemonsets, host_paths, pod_spec

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
DEPLOY = os.path.join(REPO, "deploy")
ON_THE_HOST = ("nsenter", "apt", "apt-get", "dnf", "yum", "pip", "pip3", "cc", "gcc", "install-bin.sh")


def test_the_daemonsets_never_enter_the_host_nor_install_there():
    paths = host_paths()
    assert "/" not in paths.values()  # no host root to chroot or nsenter into
    for name in daemonsets():
        spec = pod_spec(name)
        assert spec["hostNetwork"] is True and not spec.get("hostPID") and not spec.get("hostIPC")
        for container in spec.get("initContainers", []) + spec["containers"]:
            words = " ".join(container["command"]).replace(";", " ").split()
            assert not set(words) & set(ON_THE_HOST), (container["name"], words)
            assert container["command"][0] == "pycni", container["command"]  # no shell as PID 1: SIGTERM reaches it
    init = pod_spec()["initContainers"][0]
    assert not init.get("securityContext", {}).get("privileged")  # it only writes two directories
    mounts = {m["mountPath"]: paths[m["name"]] for m in init["volumeMounts"]}
    assert mounts == {"/host/opt/cni/bin": "/opt/cni/bin", "/host/etc/cni/net.d": "/etc/cni/net.d"}


def test_a_node_without_an_optional_host_path_still_starts_the_pods():
    """`type: Directory` fails the whole pod on a node without that directory (no /lib/modules, a kubelet
    that has not made its pod-resources directory yet): every host path is made when missing, or unchecked."""
    for name in daemonsets():
        for volume in pod_spec(name)["volumes"]:
            if "hostPath" in volume:
                assert volume["hostPath"].get("type", "") in ("", "DirectoryOrCreate"), (name, volume)


def test_the_cni_daemonset_surges_on_update_and_the_device_plugin_does_not():
    cni, devices = daemonsets()["pycni"], daemonsets()["pycni-device-plugin"]
    assert cni["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # a declared port is a host port under hostNetwork: the surge pod would not fit beside the old one
    assert not any(c.get("ports") for c in pod_spec()["containers"])
    service = next(c for c in pod_spec()["containers"] if c["name"] == "service")
    ready_file = service["command"][service["command"].index("--ready-file") + 1]
    assert service["readinessProbe"]["exec"]["command"] == ["test", "-e", ready_file]
    # two device plugins of one resource would take the kubelet's registration from each other
    assert devices["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert [c["name"] for c in pod_spec("pycni-device-plugin")["containers"]] == ["device-plugin", "dra"]


def test_the_containerfile_leaves_no_compiler_or_index_in_the_image():
    with open(os.path.join(DEPLOY, "Containerfile")) as f:
        stages = f.read().split("\nFROM ")
    final = stages[-1]
    assert "COPY --from=build /opt/pycni /opt/pycni" in final
    runtime_packages = next(line for line in final.splitlines() if line.startswith("ARG RUNTIME_PACKAGES="))
    packages = set(runtime_packages.split("=")[1].strip('"').split())
    assert "python3-nftables" in packages and not {"gcc", "libc6-dev", "python3-pip", "python3-venv"} & packages
    assert "pip install" not in final and "--static" in stages[-2]


def test_install_bin_for_nodes_without_kubernetes(tmp_path):
    """scripts/install-bin.sh, for a Debian host run by hand or by configuration management: a venv, launchers,
    the conflist and the `pycni` link; --uninstall takes every pycni file away again."""
    host = tmp_path / "host"
    bin_dir, conf_dir = host / "opt" / "cni" / "bin", host / "etc" / "cni" / "net.d"
    cli = host / "usr" / "local" / "bin"
    done = subprocess.run([os.path.join(REPO, "scripts", "install-bin.sh"), "--skip-apt", "--no-service",
                           "--prefix", str(host / "opt" / "pycni"), "--bin-dir", str(bin_dir), "--conf-dir",
                           str(conf_dir), "--cli-dir", str(cli), "--pod-cidr", "10.244.42.0/24", "--pod-cidr",
                           "fd00:42::/64", "--cluster-cidr", "10.244.0.0/16"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(os.listdir(bin_dir)) == sorted(REGISTRY)
    version = subprocess.run([str(bin_dir / "host-local")], env={"CNI_COMMAND": "VERSION"}, input=b"",
                             capture_output=True)
    assert json.loads(version.stdout)["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    bridge = json.loads((conf_dir / "10-k8s-pod-network.conflist").read_text())["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.42.0/24"}], [{"subnet": "fd00:42::/64"}]]
    assert bridge["nonMasqueradeCIDRs"] == ["10.244.0.0/16"]
    on_path = subprocess.run(["pycni", "--version"], env={**os.environ, "PATH": f"{cli}:/usr/bin:/bin"},
                             capture_output=True, text=True)
    assert on_path.returncode == 0 and "pycni" in on_path.stdout, on_path.stderr
    (bin_dir / "foreign-plugin").write_text("#!/bin/sh\n")  # not pycni's: stays
    done = subprocess.run([os.path.join(REPO, "scripts", "install-bin.sh"), "--prefix", str(host / "opt" / "pycni"),
                           "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--cli-dir", str(cli),
                           "--uninstall"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    left = sorted(str(p.relative_to(host)) for p in host.rglob("*") if p.is_file() or p.is_symlink())
    assert left == ["opt/cni/bin/foreign-plugin"]
