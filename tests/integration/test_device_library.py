"""`pycni.devices`, the framework as a library: the README's example, taken from the README as it is, run
as a program of its own in a node namespace against the stand-in kubelet over the real protos."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def readme_example() -> str:
    with open(README, encoding="utf-8") as f:
        section = f.read().split("### Writing a resource", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_public_names_are_the_stable_api():
    import pycni.devices as library

    assert sorted(library.__all__) == sorted(["CDI_SPEC_DIR", "DEFAULT_PLUGIN_DIR", "LOGGER", "Allocation", "Device",
                                             "DeviceNode", "DeviceType", "InvalidRequest", "Mount", "NodePaths",
                                             "Resource", "prefer_one_numa_node", "run"])
    assert all(hasattr(library, name) for name in library.__all__)
    assert os.path.exists(os.path.join(os.path.dirname(library.__file__), "py.typed"))
    import logging

    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger(library.LOGGER).handlers)


@pytest.fixture
def plugin_dir():
    directory = tempfile.mkdtemp(prefix="dp-")  # short: the kubelet's socket paths fit in 108 bytes
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_the_readme_example_serves_the_kubelet(node, plugin_dir, tmp_path):
    from pycni.kubelet import deviceplugin_pb2 as api
    from pycni.kubelet.standin import FakeKubelet

    program = tmp_path / "fuse_plugin.py"
    program.write_text(readme_example())
    kubelet = FakeKubelet(plugin_dir)
    log = open(tmp_path / "example.log", "w")
    proc = node.popen(sys.executable, str(program), plugin_dir, stdout=log, stderr=subprocess.STDOUT)
    try:
        request, options = kubelet.next_registration(timeout=30)
        assert (request.resource_name, request.version) == ("example.com/fuse", "v1beta1")
        assert options.get_preferred_allocation_available and not options.pre_start_required
        channel, stub = kubelet.plugin(request.endpoint)
        with channel:
            listed = next(iter(stub.ListAndWatch(api.Empty(), timeout=10)))
            health = "Healthy" if os.path.exists("/dev/fuse") else "Unhealthy"
            assert {d.ID: d.health for d in listed.devices} == {f"fuse-{i}": health for i in range(4)}
            if health == "Healthy":
                answer = stub.Allocate(api.AllocateRequest(container_requests=[
                    api.ContainerAllocateRequest(devices_ids=["fuse-1", "fuse-3"])]), timeout=10)
                container = answer.container_responses[0]
                assert container.envs["FUSE_SHARES"] == "fuse-1,fuse-3"
                assert [(d.host_path, d.permissions) for d in container.devices] == [("/dev/fuse", "rw")]
                assert [(m.container_path, m.read_only) for m in container.mounts] == [("/etc/fuse.conf", True)]
            with pytest.raises(Exception, match="unknown device IDs"):  # checked by the framework
                stub.Allocate(api.AllocateRequest(container_requests=[
                    api.ContainerAllocateRequest(devices_ids=["fuse-9"])]), timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not os.path.exists(os.path.join(plugin_dir, request.endpoint))  # its socket removed on the way out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kubelet.stop()
        log.close()
    logged = (tmp_path / "example.log").read_text()
    assert "registered example.com/fuse" in logged, logged  # the library's logger, configured by the program
