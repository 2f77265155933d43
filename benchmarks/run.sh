#!/usr/bin/env bash
# One command for the benchmark: installs pycni into .bench-env, the reference plugins and the libcni
# driver, then runs benchmarks/bench.py (arguments are passed on).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
need=()
for p in containernetworking-plugins iptables golang-go golang-github-appc-cni-dev time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
"$repo/scripts/install-bin.sh" --prefix "$repo/.bench-env" --bin-dir "$repo/.bench-env/bin" --no-conf --no-service >/dev/null
"$repo/tests/libcni/build.sh" >/dev/null
exec "$repo/.bench-env/venv/bin/python3" "$repo/benchmarks/bench.py" "$@"
