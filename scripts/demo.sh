#!/usr/bin/env bash
# The pycni demo on a fresh Debian machine, as root: installs pycni (under /opt/pycni, plugins in
# /opt/pycni/bin: the node's real /opt/cni/bin and /etc/cni/net.d are left alone), then attaches two
# sandbox pods in throwaway network namespaces with the shipped conflist and shows what happened.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "scripts/demo.sh must run as root (it creates network namespaces)" >&2
  exit 2
fi
prefix=${PYCNI_DEMO_PREFIX:-/opt/pycni}
. "$repo/scripts/lib/apt.sh"
ensure_packages iperf3 iputils-ping iproute2 conntrack
"$repo/scripts/install-bin.sh" --prefix "$prefix" --bin-dir "$prefix/bin" --no-conf --no-service
exec "$prefix/venv/bin/pycni" demo --bin-dir "$prefix/bin" --conflist "$repo/conf/10-k8s-pod-network.conflist"
