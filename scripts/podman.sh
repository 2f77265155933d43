#!/usr/bin/env bash
# podman as pycni's scripts and tests run it: the settings in scripts/lib/containers.conf, and with
# PYCNI_PODMAN_ROOT set, images and containers kept under that directory instead of the machine's storage.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONTAINERS_CONF=$here/lib/containers.conf
if [ -n "${PYCNI_PODMAN_ROOT:-}" ]; then
  exec podman --root "$PYCNI_PODMAN_ROOT/storage" --runroot "$PYCNI_PODMAN_ROOT/run" \
    --tmpdir "$PYCNI_PODMAN_ROOT/tmp" "$@"
fi
exec podman "$@"
