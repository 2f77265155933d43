#!/usr/bin/env bash
# Run pycni's whole test-suite, as root on a Debian machine. Installs everything it needs
# (Debian packages, a venv with pycni, the plugin launchers in a private bin dir, the libcni
# driver), then runs pytest. The machine's own network is never touched: every integration
# test makes throwaway network namespaces and removes them.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh must run as root (it creates network namespaces)" >&2
  exit 2
fi

. "$repo/scripts/lib/apt.sh"
ensure_packages iperf3 iputils-ping golang-go golang-github-appc-cni-dev containernetworking-plugins conntrack \
  procps gcc libc6-dev podman runc mmdebstrap openssl

env_dir=$repo/.test-env
./scripts/install-bin.sh --prefix "$env_dir" --bin-dir "$env_dir/bin" --cli-dir "$env_dir/cli" --no-conf --no-service
"$env_dir/venv/bin/pip" install -q --disable-pip-version-check "$repo[test,lint]"
./tests/libcni/build.sh >/dev/null

# Both modes run the whole suite: the plugins standalone, then as clients of a pycni service.
"$env_dir/venv/bin/pycni" install --bin-dir "$env_dir/bin" --daemon-socket none >/dev/null
echo "== lint (ruff) and types (mypy)"
"$env_dir/venv/bin/ruff" check src tests benchmarks examples
"$env_dir/venv/bin/mypy"
echo "== the netlink room from unit tests alone (no root: bytes against pyroute2's encoder and decoder)"
"$env_dir/venv/bin/python3" -m pytest -p no:cacheprovider -q tests/unit --cov=pycni.host.rtnl --cov=pycni.host.tc \
  --cov=pycni.host.netlink --cov-report=term | grep -E "^(Name|TOTAL|.*pycni/host/)|passed|failed"
echo "== standalone plugins"
PYCNI_BIN_DIR=$env_dir/bin "$env_dir/venv/bin/python3" -m pytest -p no:cacheprovider "$@" tests
echo "== plugins as clients of the pycni service (compiled launchers)"
socket=$env_dir/run/pycni.sock
"$env_dir/venv/bin/pycni" install --bin-dir "$env_dir/bin-daemon" --daemon-socket "$socket" >/dev/null
PYCNI_BIN_DIR=$env_dir/bin-daemon PYCNI_TEST_DAEMON_SOCKET=$socket \
  "$env_dir/venv/bin/python3" -m pytest -p no:cacheprovider "$@" tests
