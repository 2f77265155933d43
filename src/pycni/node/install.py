"""Placing pycni on a node: plugin launchers in the CNI bin dir and the conflist in the conf dir."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

from pycni.host.files import replace_file, replacing
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
    replace_file(path, text.encode(), mode)  # a runtime exec'ing the plugin meanwhile sees the old or the new file


FALLBACK_DIR = ".pycni"  # in the bin dir: the Python launchers behind compiled ones


def install_launchers(bin_dir: str, python: str | None = None, daemon_socket: str = "",
                      call_log: str = "", compiled: bool = True, static: bool = False) -> list[str]:
    """One executable per plugin type; with `daemon_socket`, each asks the pycni service there first. In
    service mode, where a C compiler is found (and `compiled`), the executable is the compiled launcher
    (launcher.c: ~1 ms instead of a Python interpreter's ~10 ms per call), and the Python launcher it
    hands the other cases to sits in FALLBACK_DIR. `static`: compiled launchers linked statically with no
    Python behind them (an image's, for nodes that have no Python): a compiler is then required."""
    python = python or sys.executable
    site_packages = package_root()
    os.makedirs(bin_dir, exist_ok=True)
    compiler = shutil.which("cc") if daemon_socket and (compiled or static) else None
    if static and not (daemon_socket and compiler and _c_safe(daemon_socket, site_packages)):
        raise ValueError("static launchers need a service socket (--daemon-socket), a C compiler (cc) with a "
                         "static libc, and plain ASCII paths")
    written = []
    for plugin_type in REGISTRY:
        path = os.path.join(bin_dir, plugin_type)
        if static:
            assert compiler is not None
            _compile(compiler, path, plugin_type, daemon_socket, "", site_packages, static=True)
            written.append(path)
            continue
        text = launcher_text(plugin_type, python, site_packages, daemon_socket, call_log)
        fallback = os.path.join(bin_dir, FALLBACK_DIR, plugin_type)
        if compiler and _c_safe(fallback, daemon_socket, site_packages):
            os.makedirs(os.path.dirname(fallback), exist_ok=True)
            _write_atomically(fallback, text, 0o755)
            try:
                _compile(compiler, path, plugin_type, daemon_socket, fallback, site_packages)
                written.append(path)
                continue
            except OSError:
                pass  # the Python launcher does it all, slower
        _write_atomically(path, text, 0o755)
        written.append(path)
    return written


def copy_launchers(source_dir: str, bin_dir: str) -> list[str]:
    """Place the prebuilt launchers of `source_dir` (an image's static ones) in `bin_dir`: each written
    beside its target and renamed over it, so a runtime exec'ing a plugin meanwhile runs the old file or the
    new one, whole. Only pycni launchers are taken; nothing else in `bin_dir` is touched."""
    from pycni.plugins import read_launcher_marker

    os.makedirs(bin_dir, exist_ok=True)
    written = []
    for name in sorted(os.listdir(source_dir)):
        source = os.path.join(source_dir, name)
        marker = read_launcher_marker(source)
        if marker is None or marker[0] != name:
            continue
        target = os.path.join(bin_dir, name)
        with replacing(target, 0o755, durable=True) as temporary:  # a node crash leaves one whole
            shutil.copyfile(source, temporary)
        written.append(target)
    if not written:
        raise ValueError(f"{source_dir}: no pycni launchers to copy")
    return written


def _c_safe(*texts: str) -> bool:
    """Whether each text can be a C string literal as it is (printable ASCII, no quote or backslash)."""
    return all(all(" " <= c <= "~" and c not in "\"\\" for c in text) for text in texts)


def _compile(compiler: str, path: str, plugin_type: str, daemon_socket: str, fallback: str,
             site_packages: str, static: bool = False) -> None:
    """Build the compiled launcher for `plugin_type` at `path` (atomically); OSError when the build fails."""
    import subprocess

    from pycni import __version__
    from pycni.services.cni import CALL_TIMEOUT_SECONDS, DECLINED, PROTOCOL, SERVICE_WAIT_SECONDS

    source = os.path.join(package_root(), "pycni", "services", "cni", "launcher.c")
    defines = {"PYCNI_TYPE": plugin_type, "PYCNI_VERSION": __version__, "PYCNI_PROTOCOL": PROTOCOL,
               "PYCNI_SOCKET": daemon_socket, "PYCNI_FALLBACK": fallback,
               "PYCNI_MARKER": f"{LAUNCHER_MARKER} {plugin_type} {site_packages}"}
    options = [*(["-static", "-s"] if static else []), *(f'-D{k}="{v}"' for k, v in defines.items()),
               f"-DPYCNI_DECLINED={DECLINED}", f"-DPYCNI_CALL_TIMEOUT={CALL_TIMEOUT_SECONDS}",
               f"-DPYCNI_SERVICE_WAIT={SERVICE_WAIT_SECONDS}"]
    with replacing(path, 0o755) as temporary:
        built = subprocess.run([compiler, "-O2", "-o", temporary, source, *options], capture_output=True, text=True)
        if built.returncode != 0:
            raise OSError(f"cannot build the {plugin_type} launcher: {built.stderr.strip()[-300:]}")


SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def node_pod_cidrs(node_name: str, account: str = SERVICE_ACCOUNT) -> list[str]:
    """The node's spec.podCIDRs from the API server, read with the pod's service account (the DaemonSet's
    init container); OSError when the API server cannot tell."""
    import json
    import ssl
    import urllib.request

    host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    try:
        with open(os.path.join(account, "token"), encoding="utf-8") as f:
            token = f.read().strip()
        request = urllib.request.Request(f"https://{host}:{port}/api/v1/nodes/{node_name}",
                                         headers={"Authorization": f"Bearer {token}"})
        context = ssl.create_default_context(cafile=os.path.join(account, "ca.crt"))
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            spec = json.load(response).get("spec", {})
    except (OSError, ValueError) as e:
        raise OSError(f"cannot read node {node_name}'s pod CIDRs from the API server: {e}") from None
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    if not cidrs:
        raise OSError(f"node {node_name} has no spec.podCIDRs yet (is the controller manager allocating them?)")
    return list(cidrs)


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
