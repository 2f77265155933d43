"""Where the device side lives on a node by default: the kubelet's directories, the runtimes' CDI directory,
Multus's device-info directory, our state file. One place, read by the daemon, the library and the CLI
(which must not import gRPC to show its defaults)."""

from __future__ import annotations

PLUGIN_DIR = "/var/lib/kubelet/device-plugins"  # the kubelet's device plugin directory
CDI_SPEC_DIR = "/var/run/cdi"  # the runtimes' directory for specs that come and go (/etc/cdi: ones that stay)
DEVICE_INFO_DIR = "/var/run/k8s.cni.cncf.io/devinfo/dp"  # where Multus reads device-info files
STATE_FILE = "/run/pycni/device-plugin.json"  # what `pycni status` shows of `pycni device-plugin`
SRIOV_RESOURCE_PREFIX = "intel.com"  # the SR-IOV device plugin's --resource-prefix default
