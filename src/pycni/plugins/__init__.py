"""The CNI plugins, one module or package each, and the one registry of them.

`REGISTRY` maps a CNI plugin type (what a conflist's "type" says, and the executable's name in the CNI
bin dir) to the module that serves it. The installer, the packaging test, in-process delegation and
the CNI service all read it; a new plugin is one entry here plus its module (and its schema in
`pycni/schemas/`). Each plugin module exposes PLUGIN (a PluginSpec) and main().
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from pycni.protocol.skel import PluginSpec

REGISTRY: dict[str, str] = {
    "loopback": "pycni.plugins.loopback",
    "host-local": "pycni.plugins.host_local",
    "bridge": "pycni.plugins.bridge",
    "portmap": "pycni.plugins.portmap",
    "bandwidth": "pycni.plugins.bandwidth",
    "host-device": "pycni.plugins.host_device",
}

# Second line of every pycni Python launcher, and a line of its own in a compiled one:
# `# pycni-plugin: <type> <site-packages>`.
LAUNCHER_MARKER = "# pycni-plugin:"


def load(plugin_type: str) -> PluginSpec:
    """The PluginSpec of a registered plugin type (imports its module)."""
    from importlib import import_module

    spec: PluginSpec = import_module(REGISTRY[plugin_type]).PLUGIN
    return spec


def package_root() -> str:
    """The site-packages directory this pycni is imported from."""
    import os

    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_launcher_marker(path: str) -> tuple[str, str] | None:
    """(plugin type, site-packages) of a pycni launcher, None for any other executable: the second line of
    a Python launcher, or a line of its own among the strings of a compiled one."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            if head.startswith(b"\x7fELF"):
                head += f.read(1 << 20)
                start = head.find(b"\n" + LAUNCHER_MARKER.encode())
                lines = [head[start + 1:head.find(b"\n", start + 1)]] if start >= 0 else []
            else:
                lines = head.splitlines()[1:2]
    except OSError:
        return None
    for line in (raw.decode("utf-8", "replace") for raw in lines):
        if line.startswith(LAUNCHER_MARKER):
            parts = line[len(LAUNCHER_MARKER):].split()
            if len(parts) == 2:
                return parts[0], parts[1]
    return None


def own_plugin_type(executable: str) -> str | None:
    """The plugin type when `executable` is a launcher of this very pycni installation, else None."""
    marker = read_launcher_marker(executable)
    if marker is None or marker[1] != package_root() or marker[0] not in REGISTRY:
        return None
    return marker[0]
