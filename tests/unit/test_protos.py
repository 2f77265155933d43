"""The committed kubelet API stubs are exactly what scripts/gen-protos.sh makes from the .proto files."""

import os
import subprocess
import sys

import pytest

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
STUBS = [f"{api}{suffix}.py" for api in ("deviceplugin", "podresources", "pluginregistration", "dra_v1", "dra_v1beta1")
         for suffix in ("_pb2", "_pb2_grpc")]


def test_generated_stubs_match_the_protos(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run([os.path.join(REPO, "scripts", "gen-protos.sh"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    for name in STUBS:
        committed = open(os.path.join(REPO, "src", "pycni", "kubelet", name)).read()
        assert open(tmp_path / "pycni" / "kubelet" / name).read() == committed, f"{name}: run scripts/gen-protos.sh"
