#!/usr/bin/env bash
# One command for the benchmark: installs pycni into .bench-env, the reference plugins and the libcni
# driver, then runs benchmarks/bench.py (arguments are passed on); `--device-plugin` runs
# benchmarks/device_plugin.py, `--dra` benchmarks/dra.py, `--breakdown` benchmarks/breakdown.py,
# `--bufferbloat` benchmarks/bufferbloat.py and `--routes` benchmarks/routes.py instead.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$repo/scripts/lib/apt.sh"
ensure_packages containernetworking-plugins iptables golang-go golang-github-appc-cni-dev time iperf3 podman runc mmdebstrap
"$repo/scripts/install-bin.sh" --prefix "$repo/.bench-env" --bin-dir "$repo/.bench-env/bin" --cli-dir "$repo/.bench-env/cli" --no-conf --no-service >/dev/null
"$repo/tests/libcni/build.sh" >/dev/null
if [ "${1:-}" = "--device-plugin" ]; then
  shift
  exec "$repo/.bench-env/venv/bin/python3" "$repo/benchmarks/device_plugin.py" "$@"
fi
if [ "${1:-}" = "--breakdown" ]; then
  shift
  exec "$repo/.bench-env/venv/bin/python3" "$repo/benchmarks/breakdown.py" "$@"
fi
if [ "${1:-}" = "--dra" ]; then
  shift
  exec "$repo/.bench-env/venv/bin/python3" "$repo/benchmarks/dra.py" "$@"
fi
if [ "${1:-}" = "--routes" ]; then
  shift
  exec "$repo/.bench-env/venv/bin/python3" "$repo/benchmarks/routes.py" --bin-dir "$repo/.bench-env/bin" "$@"
fi
if [ "${1:-}" = "--bufferbloat" ]; then
  shift
  exec "$repo/.bench-env/venv/bin/python3" "$repo/benchmarks/bufferbloat.py" "$@"
fi
exec "$repo/.bench-env/venv/bin/python3" "$repo/benchmarks/bench.py" "$@"
