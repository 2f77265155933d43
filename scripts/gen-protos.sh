#!/usr/bin/env bash
# Regenerate the kubelet API stubs (src/pycni/kubelet/*_pb2*.py) from the .proto files beside them.
# Needs grpcio-tools, the version the `lint` extra pins (pip install 'pycni[lint]'); OUT (default: the
# package itself) lets a test generate into a temporary directory and compare.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
out=${1:-$repo/src}
"$python" -m grpc_tools.protoc -I "$repo/src" --python_out="$out" --grpc_python_out="$out" \
  pycni/kubelet/deviceplugin.proto pycni/kubelet/podresources.proto pycni/kubelet/pluginregistration.proto \
  pycni/kubelet/dra_v1.proto pycni/kubelet/dra_v1beta1.proto
