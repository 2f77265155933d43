"""The plugin registry is the one list of plugins: packaging, schemas and modules agree with it."""

import importlib
import os
import tomllib

from pycni.plugins import REGISTRY, load, own_plugin_type
from pycni.protocol.schema import SCHEMA_DIR

PYPROJECT = os.path.join(os.path.dirname(__file__), "..", "..", "pyproject.toml")


def test_pyproject_scripts_are_the_registry_plus_the_cli():
    with open(PYPROJECT, "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts.pop("pycni") == "pycni.node.cli:main"
    assert scripts == {plugin_type: f"{module}:main" for plugin_type, module in REGISTRY.items()}


def test_every_registered_plugin_loads_with_its_own_type_and_schema():
    for plugin_type, module in REGISTRY.items():
        spec = load(plugin_type)
        assert spec.name == plugin_type
        assert callable(importlib.import_module(module).main)
        assert os.path.isfile(os.path.join(SCHEMA_DIR, spec.schema))


def test_only_launchers_of_this_installation_run_in_process(tmp_path):
    from pycni.node.install import launcher_text
    from pycni.plugins import package_root

    ours = tmp_path / "host-local"
    ours.write_text(launcher_text("host-local", "/usr/bin/python3", package_root()))
    elsewhere = tmp_path / "bridge"
    elsewhere.write_text(launcher_text("bridge", "/usr/bin/python3", "/some/other/site-packages"))
    foreign = tmp_path / "portmap"
    foreign.write_bytes(b"\x7fELF\x02\x01\x01")
    assert own_plugin_type(str(ours)) == "host-local"
    assert own_plugin_type(str(elsewhere)) is None
    assert own_plugin_type(str(foreign)) is None
