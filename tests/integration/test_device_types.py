"""A third-party resource type under `pycni device-plugin --config`: the example package in
examples/pycni-seats, installed (pip, into a directory of the test's own), found through its
`pycni.device_types` entry point, its keys checked by the schema it declares, served to the stand-in
kubelet with CDI; and what is refused: an unknown type, an unknown or wrong key of the package's type."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

grpc = pytest.importorskip("grpc")

from tests.devices import Stream, serve, socket_of  # noqa: E402

pytestmark = pytest.mark.netns
EXAMPLE = pathlib.Path(__file__).parent.parent.parent / "examples" / "pycni-seats"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example package installed as a user would, into a directory put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("example") / "pycni-seats"
    shutil.copytree(EXAMPLE, source)  # pip builds in the tree: not in the repository's
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(source)], check=True,
                   capture_output=True, timeout=300)
    return str(target)


def test_an_installed_type_is_served_by_its_type_name(start, tmp_path, tree, installed, monkeypatch):
    """The README's config for the example type, with CDI on."""
    from tests.integration.test_device_readme import resources

    monkeypatch.setenv("PYTHONPATH", installed)
    tree.root.mkdir(exist_ok=True)
    plugin = serve(start, tmp_path, [{**resources("seats")[0], "count": 3, "cdi": True}])
    assert plugin.registration()[0].resource_name == "example.com/seat"
    seats = Stream(plugin, socket_of("example.com/seat"))
    seats.until(lambda d: d == {"seat-0": "Healthy", "seat-1": "Healthy", "seat-2": "Healthy"})
    answer = seats.allocate("seat-0", "seat-2")
    assert dict(answer.envs) == {"LICENSE_SEATS": "seat-0,seat-2", "LICENSE_SERVER": "lic.example.com"}
    assert [d.name for d in answer.cdi_devices] == ["example.com/seat=seat-0", "example.com/seat=seat-2"]
    spec = json.loads((tmp_path / "cdi" / "pycni-example.com-seat.json").read_text())
    assert spec["devices"][1] == {"name": "seat-1", "containerEdits": {
        "env": ["LICENSE_SEATS=seat-1", "LICENSE_SERVER=lic.example.com"]}}


@pytest.mark.parametrize("entry, words", [
    ({"type": "seats", "count": 3, "seat": "x"}, "`resources[0].seat`: unknown key for type 'seats'; it knows count, "
                                                 "env, server"),
    ({"type": "seats", "count": 0}, "`resources[0].count`: 0 is less than the minimum of 1"),
    ({"type": "seats"}, "'count' is a required property"),
    ({"type": "seats", "count": 2, "env": "lower"}, "`resources[0].env`: 'lower' does not match"),
    ({"type": "gpus", "count": 2}, "unknown type 'gpus': known are netdev, tun, devices, seats"),
])
def test_a_wrong_entry_of_an_installed_type_is_refused(node, tmp_path, installed, monkeypatch, entry, words):
    monkeypatch.setenv("PYTHONPATH", installed)
    path = tmp_path / "devices.json"
    path.write_text(json.dumps({"resources": [{"resourceName": "example.com/seat", **entry}]}))
    done = node.run(sys.executable, "-m", "pycni", "device-plugin", "--config", str(path), "--check", check=False)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr, done.stderr


def test_pycni_validate_checks_an_installed_types_entry(node, tmp_path, installed, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", installed)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"resources": [{"resourceName": "example.com/seat", "type": "seats", "count": 2}]}))
    bad.write_text(json.dumps({"resources": [{"resourceName": "example.com/seat", "type": "seats", "cuont": 2}]}))
    done = node.run(sys.executable, "-m", "pycni", "validate", str(good), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    done = node.run(sys.executable, "-m", "pycni", "validate", str(bad), check=False)
    assert done.returncode != 0 and "unknown key for type 'seats'" in done.stdout + done.stderr
