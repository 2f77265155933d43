"""A record of one plugin call and the line it is logged as: the CNI service logs every call it serves,
and launchers installed with `pycni install --call-log FILE` append the same line for standalone calls.
The config on stdin is never part of it (it may hold secrets)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from collections.abc import Mapping


DETAILS_LOGGED = 500  # characters of an error's details a log line keeps


@dataclass(frozen=True, slots=True)
class Call:
    """One plugin call as it was served."""

    plugin: str
    command: str
    container_id: str
    ifname: str
    netns: str
    code: int  # 0 on success, else the CNI error code
    seconds: float
    error: str = ""
    details: str = ""  # the error's details: for a kernel refusal, the kernel's own words

    @classmethod
    def of(cls, plugin: str, environ: Mapping[str, str], exit_code: int, output: str, seconds: float) -> Call:
        code, error, details = 0, "", ""
        if exit_code != 0:
            try:
                answer = json.loads(output)
                code, error = int(answer.get("code", 999)), str(answer.get("msg", ""))
                details = str(answer.get("details", ""))[:DETAILS_LOGGED]
            except (ValueError, TypeError, AttributeError):
                code, error = 999, output.strip()[:200]
        return cls(plugin, environ.get("CNI_COMMAND", ""), environ.get("CNI_CONTAINERID", ""),
                   environ.get("CNI_IFNAME", ""), environ.get("CNI_NETNS", ""), code, seconds, error, details)

    def line(self, as_json: bool) -> str:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        fields: dict[str, object] = {"time": stamp, "plugin": self.plugin, "command": self.command,
                                     "containerID": self.container_id, "ifname": self.ifname, "netns": self.netns,
                                     "code": self.code, "durationMs": round(self.seconds * 1000, 2)}
        if self.error:
            fields["error"] = self.error
        if self.details:
            fields["details"] = self.details
        if as_json:
            return json.dumps(fields)
        return " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v}"
                        for k, v in fields.items())


def append(path: str, call: Call) -> None:
    """Append the call's JSON line to `path` (one write: lines of concurrent plugins do not interleave)."""
    import os

    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, (call.line(as_json=True) + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # a log that cannot be written never fails a pod
