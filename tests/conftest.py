from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import Sandbox

pytest_plugins = ["tests.devices", "tests.image"]  # the device plugin and image fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_BIN = "/usr/lib/cni"


def _is_root() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.fixture(scope="session")
def cni_bin(tmp_path_factory, pycni_daemon) -> str:
    """The installed pycni plugin executables: $PYCNI_BIN_DIR, or launchers for this interpreter's pycni
    (asking the test session's pycni service first when the suite runs in daemon mode)."""
    configured = os.environ.get("PYCNI_BIN_DIR")
    if configured:
        return configured
    bin_dir = str(tmp_path_factory.mktemp("cni-bin"))
    subprocess.run([sys.executable, "-m", "pycni", "install", "--bin-dir", bin_dir, "--daemon-socket",
                    pycni_daemon or "none"], check=True, capture_output=True)
    return bin_dir


@pytest.fixture(scope="session")
def pycni_daemon():
    """In daemon mode (PYCNI_TEST_DAEMON_SOCKET set) the suite's own pycni service, stopped by its PID."""
    socket_path = os.environ.get("PYCNI_TEST_DAEMON_SOCKET")
    if not socket_path:
        yield None
        return
    from pycni.services.cni import spawn

    proc = spawn(socket_path)
    yield socket_path
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def sandbox(cni_bin):
    if not _is_root():
        pytest.skip("needs root and iproute2 to make network namespaces")
    box = Sandbox(cni_bin)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def node(sandbox):
    return sandbox.namespace("node")


@pytest.fixture
def reference_bin() -> str:
    if not os.path.exists(os.path.join(REFERENCE_BIN, "host-local")):
        pytest.skip("reference plugins (containernetworking-plugins) not installed")
    return REFERENCE_BIN


@pytest.fixture(scope="session")
def cnidriver() -> str:
    built = os.path.join(REPO, "tests", "libcni", "cnidriver")
    if not os.path.exists(built):
        if shutil.which("go") is None:
            pytest.skip("Go toolchain missing: cannot build the libcni driver")
        subprocess.run([os.path.join(REPO, "tests", "libcni", "build.sh")], check=True, capture_output=True)
    return built
