"""The dispatcher every plugin runs under: env + stdin in, stdout + exit code out.

`run()` is pure apart from what the handlers do, so tests (and a future
daemon) call it in-process; `main()` is the thin shell a plugin executable uses.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

from pycni.protocol import versions
from pycni.protocol.errors import (
    CNIError,
    DecodeFailure,
    IncompatibleVersion,
    InternalError,
    InvalidEnvironment,
    IOFailure,
)
from pycni.protocol.request import (
    Request,
    check_environment,
    check_network_name,
    parse_cni_args,
    parse_valid_attachments,
)
from pycni.protocol.result import Result
from pycni.protocol.schema import validate

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")


@dataclass(frozen=True)
class PluginSpec:
    """What a plugin is: its type name, schema and one handler per verb it implements."""

    name: str
    about: str
    schema: str
    add: Callable[[Request], Result]
    delete: Callable[[Request], None]
    check: Callable[[Request], None]
    gc: Callable[[Request], None] | None = None
    status: Callable[[Request], None] | None = None
    known_cni_args: frozenset[str] = field(default_factory=frozenset)
    supported_versions: tuple[str, ...] = versions.SUPPORTED_VERSIONS


def run(plugin: PluginSpec, environ: Mapping[str, str], stdin: bytes, stdin_is_tty: bool = False,
        netns_fd: int | None = None) -> tuple[int, str]:
    """Serve one invocation; return (exit code, stdout text).

    `netns_fd` is CNI_NETNS already opened by the caller (the CNI service is handed it by the plugin
    executable), so the plugin never resolves that path in a mount namespace other than the caller's."""
    error_version = versions.LATEST
    try:
        command = environ.get("CNI_COMMAND", "")
        if not command:
            if stdin_is_tty:
                return 0, about(plugin)
            raise InvalidEnvironment("required env variables [CNI_COMMAND] missing")
        if command not in COMMANDS:
            raise InvalidEnvironment(f"unknown CNI_COMMAND: {command}", f"expected one of {list(COMMANDS)}")
        config, decode_error = _decode(stdin)
        declared = config.get("cniVersion") if isinstance(config, dict) else None
        if isinstance(declared, str) and declared in plugin.supported_versions:
            error_version = declared
        if command == "VERSION":
            return 0, _dump({"cniVersion": error_version, "supportedVersions": list(plugin.supported_versions)})
        check_environment(command, environ)
        if decode_error:
            raise decode_error
        request = _build_request(plugin, command, environ, stdin, config, netns_fd)
        result = _dispatch(plugin, request)
        return 0, (_dump(result.to_dict(request.cni_version)) if result is not None else "")
    except CNIError as e:
        return 1, _dump(e.to_dict(error_version))
    except Exception as e:  # noqa: BLE001 - a runtime must get JSON, never a traceback
        if environ.get("PYCNI_DEBUG"):
            import traceback

            traceback.print_exc()
        return 1, _dump(InternalError(f"{plugin.name}: {e}", type(e).__name__).to_dict(error_version))


def main(plugin: PluginSpec, call_log: str = "") -> None:
    """The plugin executable: the process's environment and stdin in, stdout and exit code out; with
    `call_log`, a line about the call is appended to that file."""
    started = time.perf_counter()
    try:
        stdin_is_tty = sys.stdin.isatty()
        data = b"" if stdin_is_tty and not os.environ.get("CNI_COMMAND") else sys.stdin.buffer.read()
    except OSError as e:
        code, out = 1, _dump(IOFailure(f"reading stdin: {e}").to_dict(versions.LATEST))
    else:
        code, out = run(plugin, os.environ, data, stdin_is_tty)
    if out:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
        sys.stdout.flush()
    if call_log and os.environ.get("CNI_COMMAND"):
        from pycni.protocol import calllog

        calllog.append(call_log, calllog.Call.of(plugin.name, os.environ, code, out, time.perf_counter() - started))
    sys.exit(code)


def about(plugin: PluginSpec) -> str:
    return (
        f"CNI {plugin.name} plugin (pycni) - {plugin.about}\n"
        f"CNI protocol versions supported: {', '.join(plugin.supported_versions)}\n"
        "Runtimes call it with CNI_COMMAND and the other CNI_* variables set and the network config on stdin.\n"
    )


def _decode(stdin: bytes) -> tuple[dict, CNIError | None]:
    try:
        config = json.loads(stdin)
    except (ValueError, UnicodeDecodeError) as e:
        return {}, DecodeFailure("error parsing network config from stdin", str(e))
    if not isinstance(config, dict):
        return {}, DecodeFailure("network config must be a JSON object", f"got {type(config).__name__}")
    return config, None


def call(plugin: PluginSpec, parent: Request, command: str) -> Result | None:
    """Run `plugin` in this process for `command` as the delegate of `parent`: the same config, environment
    and pod namespace, checked against the delegate's own schema and versions; its Result for ADD."""
    environ = {**parent.environ, "CNI_COMMAND": command}
    request = _build_request(plugin, command, environ, parent.raw_config, parent.config, parent.netns_fd)
    return _dispatch(plugin, request)


def _build_request(plugin: PluginSpec, command: str, environ: Mapping[str, str], stdin: bytes, config: dict,
                   netns_fd: int | None) -> Request:
    version = config.get("cniVersion", "")
    if not isinstance(version, str):
        raise DecodeFailure("cniVersion must be a string", f"got {version!r}")
    if not version:
        raise IncompatibleVersion(
            "incompatible CNI versions",
            f"config has no cniVersion (read as 0.1.0), plugin supports {list(plugin.supported_versions)}",
        )
    versions.require_supported(version, plugin.supported_versions)
    versions.require_verb(command, version)
    name = check_network_name(config.get("name"))
    config = validate(config, plugin.schema)
    prev = config.get("prevResult")
    return Request(
        command=command,
        cni_version=version,
        network_name=name,
        config=config,
        raw_config=stdin,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        netns_fd=netns_fd,
        ifname=environ.get("CNI_IFNAME", ""),
        cni_args=parse_cni_args(environ.get("CNI_ARGS", ""), plugin.known_cni_args),
        cni_path=[p for p in environ.get("CNI_PATH", "").split(":") if p],
        environ={k: v for k, v in environ.items() if k.startswith("CNI_")},
        prev_result=Result.from_dict(prev, version) if prev else None,
        valid_attachments=parse_valid_attachments(config) if command == "GC" else None,
    )


def _dispatch(plugin: PluginSpec, request: Request) -> Result | None:
    if request.command == "ADD":
        return plugin.add(request)
    handler = {
        "DEL": plugin.delete,
        "CHECK": plugin.check,
        "GC": plugin.gc,
        "STATUS": plugin.status,
    }[request.command]
    if handler is not None:
        handler(request)
    return None


def _dump(obj: dict) -> str:
    return json.dumps(obj, indent=2)
