#!/bin/sh
# Run by the DaemonSet's init container: put pycni on the node whose root filesystem is mounted at
# HOST_ROOT (default /host). The repository is copied to <host>/opt/pycni/src, then installed there
# with scripts/install-bin.sh: inside the host's mount namespace (nsenter into PID 1, the host's init,
# as the pod has hostPID), so the venv and the launchers use the host's own Python and paths.
# PYCNI_INSTALL_MODE=local installs under HOST_ROOT from here instead (tests use it with a temporary
# directory standing in for the host).
set -eu
host_root=${1:-/host}
src_dir=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$host_root/opt/pycni"
rm -rf "$host_root/opt/pycni/src.new"
mkdir -p "$host_root/opt/pycni/src.new"
(cd "$src_dir" && tar --exclude=.git --exclude=.test-env -cf - .) | (cd "$host_root/opt/pycni/src.new" && tar -xf -)
rm -rf "$host_root/opt/pycni/src"
mv "$host_root/opt/pycni/src.new" "$host_root/opt/pycni/src"

pod_cidr=${POD_CIDR:-}
if [ -z "$pod_cidr" ] && [ -n "${NODE_NAME:-}" ] && [ -r /var/run/secrets/kubernetes.io/serviceaccount/token ]; then
  pod_cidr=$(python3 "$src_dir/deploy/node-pod-cidrs.py" "$NODE_NAME")
fi
args=""
for cidr in $pod_cidr; do args="$args --pod-cidr $cidr"; done
for cidr in ${CLUSTER_CIDR:-}; do args="$args --cluster-cidr $cidr"; done

if [ "${PYCNI_INSTALL_MODE:-host}" = local ]; then
  # shellcheck disable=SC2086
  exec "$host_root/opt/pycni/src/scripts/install-bin.sh" --prefix "$host_root/opt/pycni" \
    --bin-dir "$host_root/opt/cni/bin" --conf-dir "$host_root/etc/cni/net.d" --cli-dir "$host_root/usr/local/bin" \
    --no-service ${PYCNI_INSTALL_FLAGS:-} $args
fi
# shellcheck disable=SC2086
# --no-service: on Kubernetes the DaemonSet's own "service" container runs the pycni service
exec nsenter --target 1 --mount --uts --ipc --net -- /opt/pycni/src/scripts/install-bin.sh --no-service $args
