"""Executing another plugin as the spec describes: found in CNI_PATH, given the same stdin config and
CNI_* environment with CNI_COMMAND changed, its stdout read back as a result or an error."""

from __future__ import annotations

import json
import os

from pycni.protocol.errors import CNIError, InvalidEnvironment
from pycni.protocol.request import Request
from pycni.protocol.result import Result


def find(plugin_type: str, search_path: list[str]) -> str:
    """The executable for `plugin_type` in the first directory of `search_path` that has one."""
    if not search_path:
        raise InvalidEnvironment(f"required env variables [CNI_PATH] missing (needed to find {plugin_type!r})")
    if "/" in plugin_type or plugin_type in ("", ".", ".."):
        raise CNIError(f"invalid plugin type {plugin_type!r}")
    for directory in search_path:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(f"failed to find plugin {plugin_type!r} in path {search_path}")


def execute(executable: str, plugin_type: str, command: str, request: Request) -> Result | None:
    """Run `executable` for `command` with the request's stdin and environment; its Result for ADD."""
    import subprocess  # only for a delegate that is not pycni's own (~3 ms of a plugin start otherwise)

    environ = {**request.environ, "CNI_COMMAND": command,
               "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    try:
        done = subprocess.run([executable], input=request.raw_config, env=environ, capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CNIError(f"executing {plugin_type}: {e}") from None
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise error_from(plugin_type, output)
    if command != "ADD":
        return None
    try:
        return Result.from_dict(json.loads(output), request.cni_version)
    except ValueError:
        raise CNIError(f"{plugin_type} printed a result that is not JSON", output[:200]) from None


def error_from(plugin_type: str, output: str) -> CNIError:
    """The CNI error a plugin printed (or one saying it printed none)."""
    try:
        error = json.loads(output)
        return CNIError(error.get("msg", f"{plugin_type} failed"), error.get("details", ""),
                        int(error.get("code", 999)))
    except (ValueError, AttributeError, TypeError):
        return CNIError(f"{plugin_type} failed", output.strip()[:500])
