"""Placing pycni on a node: plugin launchers in the CNI bin dir and the conflist in the conf dir."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

from pycni.plugins import LAUNCHER_MARKER, REGISTRY, package_root


def launcher_text(plugin_type: str, python: str, site_packages: str, daemon_socket: str = "",
                  call_log: str = "") -> str:
    # -I -S: no site processing, no user site, no PYTHON* variables: a few ms less per pod and
    # nothing in the runtime's environment can change which code runs.
    paths = [site_packages] + [p for p in _dependency_paths(python) if p != site_packages]
    head = (
        f"#!{python} -IS\n"
        f"{LAUNCHER_MARKER} {plugin_type} {site_packages}\n"
        "import sys\n"
        f"sys.path[:0] = {paths!r}\n"
    )
    if not daemon_socket:
        if call_log:
            return head + (f"from {REGISTRY[plugin_type]} import PLUGIN\nfrom pycni.protocol.skel import main\n"
                           f"main(PLUGIN, call_log={call_log!r})\n")
        return head + f"from {REGISTRY[plugin_type]} import main\nmain()\n"
    from pycni import __version__

    return head + (
        "from pycni.services.cni.client import serve\n"
        f"serve({plugin_type!r}, {REGISTRY[plugin_type]!r}, {__version__!r}, {daemon_socket!r}, {call_log!r})\n"
    )


def _dependency_paths(python: str) -> list[str]:
    """Where this interpreter's packages (pyroute2, ...) live, when pycni itself is elsewhere (editable)."""
    if os.path.abspath(python) != os.path.abspath(sys.executable):
        return []
    import sysconfig

    return [sysconfig.get_paths()["purelib"]]



def _write_atomically(path: str, text: str, mode: int) -> None:
    temporary = f"{path}.pycni-new"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)  # a runtime exec'ing the plugin meanwhile sees the old or the new file, whole


FALLBACK_DIR = ".pycni"  # in the bin dir: the Python launchers behind compiled ones


def install_launchers(bin_dir: str, python: str | None = None, daemon_socket: str = "",
                      call_log: str = "", compiled: bool = True) -> list[str]:
    """One executable per plugin type; with `daemon_socket`, each asks the pycni service there first. In
    service mode, where a C compiler is found (and `compiled`), the executable is the compiled launcher
    (launcher.c: ~1 ms instead of a Python interpreter's ~10 ms per call), and the Python launcher it
    hands the other cases to sits in FALLBACK_DIR."""
    python = python or sys.executable
    site_packages = package_root()
    os.makedirs(bin_dir, exist_ok=True)
    compiler = shutil.which("cc") if daemon_socket and compiled else None
    written = []
    for plugin_type in REGISTRY:
        path = os.path.join(bin_dir, plugin_type)
        text = launcher_text(plugin_type, python, site_packages, daemon_socket, call_log)
        fallback = os.path.join(bin_dir, FALLBACK_DIR, plugin_type)
        if compiler and _c_safe(fallback, daemon_socket, site_packages):
            os.makedirs(os.path.dirname(fallback), exist_ok=True)
            _write_atomically(fallback, text, 0o755)
            if _compile(compiler, path, plugin_type, daemon_socket, fallback, site_packages):
                written.append(path)
                continue
        _write_atomically(path, text, 0o755)
        written.append(path)
    return written


def _c_safe(*texts: str) -> bool:
    """Whether each text can be a C string literal as it is (printable ASCII, no quote or backslash)."""
    return all(all(" " <= c <= "~" and c not in "\"\\" for c in text) for text in texts)


def _compile(compiler: str, path: str, plugin_type: str, daemon_socket: str, fallback: str,
             site_packages: str) -> bool:
    """Build the compiled launcher for `plugin_type` at `path` (atomically); False when the build fails."""
    import subprocess

    from pycni import __version__
    from pycni.services.cni import CALL_TIMEOUT_SECONDS, DECLINED, PROTOCOL

    source = os.path.join(package_root(), "pycni", "services", "cni", "launcher.c")
    temporary = f"{path}.pycni-new"
    defines = {"PYCNI_TYPE": plugin_type, "PYCNI_VERSION": __version__, "PYCNI_PROTOCOL": PROTOCOL,
               "PYCNI_SOCKET": daemon_socket, "PYCNI_FALLBACK": fallback,
               "PYCNI_MARKER": f"{LAUNCHER_MARKER} {plugin_type} {site_packages}"}
    argv = [compiler, "-O2", "-o", temporary, source] + [f'-D{k}="{v}"' for k, v in defines.items()] + \
        [f"-DPYCNI_DECLINED={DECLINED}", f"-DPYCNI_CALL_TIMEOUT={CALL_TIMEOUT_SECONDS}"]
    if subprocess.run(argv, capture_output=True).returncode != 0:
        return False
    os.chmod(temporary, 0o755)
    os.replace(temporary, path)
    return True


def render_conflist(template: str, pod_cidrs: list[str], cluster_cidrs: Sequence[str] = ()) -> str:
    """The shipped conflist with its pod ranges set to `pod_cidrs` (one range-set per CIDR, so two for
    dual-stack) and the bridge's nonMasqueradeCIDRs to `cluster_cidrs`."""
    import ipaddress
    import json

    conflist = json.loads(template)
    ranges = [[{"subnet": str(ipaddress.ip_network(cidr, strict=True))}] for cidr in pod_cidrs]
    cluster = [str(ipaddress.ip_network(cidr, strict=True)) for cidr in cluster_cidrs]
    for plugin in conflist["plugins"]:
        if ranges and "ipam" in plugin:
            plugin["ipam"]["ranges"] = ranges
        if cluster and plugin.get("type") == "bridge":
            plugin["nonMasqueradeCIDRs"] = cluster
    return json.dumps(conflist, indent=2) + "\n"


def install_conflist(template_path: str, conf_dir: str, pod_cidrs: list[str], cluster_cidrs: Sequence[str] = ()) -> str:
    with open(template_path, encoding="utf-8") as f:
        template = f.read()
    os.makedirs(conf_dir, exist_ok=True)
    path = os.path.join(conf_dir, os.path.basename(template_path))
    _write_atomically(path, render_conflist(template, pod_cidrs, cluster_cidrs), 0o644)
    return path
