#!/usr/bin/env bash
# Install pycni on this node: system packages, a venv of its own, one executable per
# plugin type in the CNI bin dir, and the pod-network conflist in the CNI conf dir.
# Re-running it upgrades in place.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $0 [--bin-dir DIR] [--conf-dir DIR] [--prefix DIR] [--pod-cidr CIDR]... [--cluster-cidr CIDR]...
          [--no-conf] [--no-service] [--skip-apt] [--device-plugin-config FILE] [--cli-dir DIR] [--uninstall]
  --bin-dir DIR    CNI plugin directory              (default /opt/cni/bin)
  --conf-dir DIR   CNI network config directory      (default /etc/cni/net.d)
  --prefix DIR     where pycni's venv lives          (default /opt/pycni)
  --pod-cidr CIDR  this node's pod CIDR; give it twice (IPv4 and IPv6) for dual-stack
  --cluster-cidr CIDR  the whole cluster's pod CIDR: traffic to other nodes' pods is not masqueraded
  --no-conf        install the plugins only, not the conflist
  --no-service     no pycni service: every plugin runs standalone (slower pod start)
  --skip-apt       do not install Debian packages
  --device-plugin-config FILE  also run \`pycni device-plugin --config FILE\` as a systemd service
  --cli-dir DIR    where the \`pycni\` command is linked       (default /usr/local/bin)
  --uninstall      remove what this script installed (plugins, conflist, services, the pycni link and
                   the venv); address reservations and nftables state stay for \`pycni gc\`
USAGE
}

bin_dir=/opt/cni/bin
conf_dir=/etc/cni/net.d
prefix=/opt/pycni
pod_cidrs=()
cluster_cidrs=()
with_conf=1
with_apt=1
with_service=1
device_plugin_config=
cli_dir=/usr/local/bin
uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --conf-dir) conf_dir=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --pod-cidr) pod_cidrs+=("$2"); shift 2 ;;
    --cluster-cidr) cluster_cidrs+=("$2"); shift 2 ;;
    --no-conf) with_conf=0; shift ;;
    --no-service) with_service=0; shift ;;
    --skip-apt) with_apt=0; shift ;;
    --device-plugin-config) device_plugin_config=$(realpath "$2"); shift 2 ;;
    --cli-dir) cli_dir=$2; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$prefix/venv

if [ "$uninstall" = 1 ]; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    for unit in pycni-device-plugin.service pycni.service pycni.socket; do
      if [ -f "/etc/systemd/system/$unit" ]; then
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
        rm -f "/etc/systemd/system/$unit"
      fi
    done
    systemctl daemon-reload
  fi
  # only pycni's launchers: the second line of a Python one says so, a line of its own in a compiled one
  for launcher in "$bin_dir"/*; do
    if [ -f "$launcher" ] && { [ "$(sed -n 2p "$launcher" 2>/dev/null | cut -c1-15)" = "# pycni-plugin:" ] ||
         { [ "$(head -c 4 "$launcher" | tail -c 3)" = "ELF" ] && grep -aqs '^# pycni-plugin: ' "$launcher"; }; }; then
      rm -f "$launcher"
    fi
  done
  rm -rf "$bin_dir/.pycni"  # the Python launchers behind compiled ones
  rm -f "$conf_dir/10-k8s-pod-network.conflist"
  if [ -L "$cli_dir/pycni" ] && [ "$(readlink "$cli_dir/pycni")" = "$venv/bin/pycni" ]; then
    rm -f "$cli_dir/pycni"
  fi
  if [ -x "$venv/bin/python3" ]; then  # a pycni prefix: its venv, run dir and (DaemonSet) source copy
    rm -rf "$prefix"
  fi
  echo "pycni: uninstalled (address reservations and nftables state are left: 'pycni gc' before uninstalling reclaims them)"
  exit 0
fi

apt_packages=(nftables libnftables1 python3-nftables iproute2 conntrack python3 python3-venv python3-pip)
if [ "$with_service" = 1 ]; then
  apt_packages+=(gcc libc6-dev)  # builds the compiled launchers: ~10 ms less per plugin call
fi

if [ "$with_apt" = 1 ]; then
  . "$repo/scripts/lib/apt.sh"
  ensure_packages "${apt_packages[@]}"
fi

python=/usr/bin/python3
if [ ! -x "$venv/bin/python3" ]; then
  echo "pycni: creating $venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check "$repo[devices,cluster]"
# the same version number does not reinstall by itself: force our own package, keep the deps
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$repo"

site=$("$venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# libnftables' official Python binding is not on PyPI: pycni loads Debian's python3-nftables from its path.
# compile now, or the first pod on the node pays for compiling pyroute2
"$venv/bin/python3" -m compileall -q "$site" >/dev/null 2>&1 || true

args=(install --bin-dir "$bin_dir" --conf-dir "$conf_dir")
if [ "$with_conf" = 1 ] && [ -f "$repo/conf/10-k8s-pod-network.conflist" ]; then
  args+=(--conflist "$repo/conf/10-k8s-pod-network.conflist")
  for cidr in "${pod_cidrs[@]}"; do args+=(--pod-cidr "$cidr"); done
  for cidr in "${cluster_cidrs[@]}"; do args+=(--cluster-cidr "$cidr"); done
fi
if [ "$with_service" = 0 ]; then
  args+=(--daemon-socket none)
fi
"$venv/bin/pycni" "${args[@]}"

# `pycni` on PATH: a link replaced atomically (a new link renamed over the old one)
mkdir -p "$cli_dir"
ln -sfn "$venv/bin/pycni" "$cli_dir/.pycni.new"
mv -Tf "$cli_dir/.pycni.new" "$cli_dir/pycni"

# The service keeps the plugins warm; the executables fall back to standalone when it is not running.
if [ "$with_service" = 1 ]; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    sed "s|@PREFIX@|$prefix|g" "$repo/deploy/pycni.service" > /etc/systemd/system/pycni.service
    cp "$repo/deploy/pycni.socket" /etc/systemd/system/pycni.socket
    systemctl daemon-reload
    systemctl enable pycni.socket pycni.service >/dev/null 2>&1
    systemctl start pycni.socket  # held by systemd: calls wait in its backlog across service restarts
    systemctl restart pycni.service  # an upgrade must not leave the old version serving
    echo "pycni: service pycni.service (re)started on pycni.socket"
  else
    echo "pycni: systemd is not running here; start '$venv/bin/pycni daemon' under your supervisor" \
         "(until then the plugins run standalone)"
  fi
fi

if [ -n "$device_plugin_config" ]; then
  "$venv/bin/pycni" device-plugin --config "$device_plugin_config" --check
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@CONFIG@|$device_plugin_config|g" "$repo/deploy/pycni-device-plugin.service" \
      > /etc/systemd/system/pycni-device-plugin.service
    systemctl daemon-reload
    systemctl enable pycni-device-plugin.service >/dev/null 2>&1
    systemctl restart pycni-device-plugin.service
    echo "pycni: service pycni-device-plugin.service (re)started"
  else
    echo "pycni: systemd is not running here; start '$venv/bin/pycni device-plugin --config $device_plugin_config'" \
         "under your supervisor"
  fi
fi
