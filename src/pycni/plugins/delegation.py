"""Delegating to an IPAM plugin (bridge, host-device -> host-local or any other).

The delegate is found in CNI_PATH as the spec says. When the executable found is a launcher of this
very pycni installation, the plugin is called as a function instead: the already validated request in,
a Result out, minus one interpreter start and two JSON round trips per pod. Anything else is executed.
"""

from __future__ import annotations

from pycni import plugins
from pycni.protocol import delegate, skel
from pycni.protocol.request import Request
from pycni.protocol.result import Result


def ipam_status(request: Request) -> None:
    """STATUS of a plugin whose only dependency is its IPAM: the IPAM's STATUS, when it has one."""
    ipam_type = (request.config.get("ipam") or {}).get("type")
    if ipam_type:
        invoke(ipam_type, "STATUS", request)


def invoke(plugin_type: str, command: str, request: Request) -> Result | None:
    """Run `plugin_type` for `command` with the request's config; its Result for ADD, else None."""
    executable = delegate.find(plugin_type, request.cni_path)
    own = plugins.own_plugin_type(executable)
    if own is None:
        return delegate.execute(executable, plugin_type, command, request)
    return skel.call(plugins.load(own), request, command)
