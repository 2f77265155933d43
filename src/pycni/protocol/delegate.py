"""Executing a delegated plugin (bridge -> its IPAM) as the spec describes.

The delegate is found in CNI_PATH and given the same stdin config and CNI_*
environment with CNI_COMMAND changed. When the executable found is a pycni
launcher of this very installation, the plugin runs in-process through the
same dispatcher instead: identical input and output, minus one interpreter
start per pod.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess

from .errors import CNIError, InvalidEnvironment
from .request import Request
from .result import Result


def find(plugin_type: str, cni_path: list[str]) -> str:
    if not cni_path:
        raise InvalidEnvironment(f"required env variables [CNI_PATH] missing (needed to find {plugin_type!r})")
    if "/" in plugin_type or plugin_type in ("", ".", ".."):
        raise CNIError(f"invalid plugin type {plugin_type!r}")
    for directory in cni_path:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(f"failed to find plugin {plugin_type!r} in path {cni_path}")


def invoke(plugin_type: str, command: str, request: Request) -> Result | None:
    """Run `plugin_type` for `command` with the request's config; its Result for ADD, else None."""
    executable = find(plugin_type, request.cni_path)
    environ = {**request.environ, "CNI_COMMAND": command}
    module = _own_plugin_module(executable)
    if module is not None:
        from . import skel

        code, output = skel.run(importlib.import_module(module).PLUGIN, environ, request.raw_config)
    else:
        environ["PATH"] = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        try:
            done = subprocess.run([executable], input=request.raw_config, env=environ, capture_output=True,
                                  timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CNIError(f"executing {plugin_type}: {e}") from None
        code, output = done.returncode, done.stdout.decode(errors="replace")
    if code != 0:
        raise _error_from(plugin_type, output)
    if command != "ADD":
        return None
    try:
        return Result.from_dict(json.loads(output), request.cni_version)
    except ValueError:
        raise CNIError(f"{plugin_type} printed a result that is not JSON", output[:200]) from None


def _own_plugin_module(executable: str) -> str | None:
    from ..install import PLUGIN_MODULES, package_root, read_marker

    marker = read_marker(executable)
    if marker is None or marker[1] != package_root():
        return None
    return PLUGIN_MODULES.get(marker[0])


def _error_from(plugin_type: str, output: str) -> CNIError:
    try:
        error = json.loads(output)
        return CNIError(error.get("msg", f"{plugin_type} failed"), error.get("details", ""), int(error.get("code", 999)))
    except (ValueError, AttributeError, TypeError):
        return CNIError(f"{plugin_type} failed", output.strip()[:500])
