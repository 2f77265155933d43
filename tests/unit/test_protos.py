"""The committed kubelet API stubs are exactly what scripts/gen-protos.sh makes from the .proto files."""

import os
import subprocess
import sys

import pytest

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
STUBS = ["deviceplugin_pb2.py", "deviceplugin_pb2_grpc.py", "podresources_pb2.py", "podresources_pb2_grpc.py"]


def test_generated_stubs_match_the_protos(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run([os.path.join(REPO, "scripts", "gen-protos.sh"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    for name in STUBS:
        committed = open(os.path.join(REPO, "src", "pycni", "kubelet", name)).read()
        assert open(tmp_path / "pycni" / "kubelet" / name).read() == committed, f"{name}: run scripts/gen-protos.sh"
