"""Flushing stale UDP conntrack entries, so a new pod on a reused hostPort gets traffic at once."""

from __future__ import annotations

import os
import sys


def _tool() -> str | None:
    import shutil

    return shutil.which("conntrack") or next(
        (p for p in ("/usr/sbin/conntrack", "/sbin/conntrack") if os.path.exists(p)), None)


def flush_udp_destination_port(port: int, family: int) -> None:
    """Delete UDP entries whose original destination port is `port` (failures are only logged)."""
    tool = _tool()
    if tool is None:
        print("pycni: conntrack tool missing; stale UDP entries are not flushed", file=sys.stderr)
        return
    import subprocess  # imported here: only a UDP hostPort's ADD needs it (~3 ms of every portmap start)

    subprocess.run([tool, "-D", "-f", "ipv6" if family == 6 else "ipv4", "-p", "udp", "--orig-port-dst",
                    str(port)], capture_output=True, timeout=30)
