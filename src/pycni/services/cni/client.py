"""The plugin executable's side of daemon mode. It imports nothing beyond sys, posix and _socket
(not even os: every millisecond of interpreter start is paid per plugin, per pod), so a pod's chain
does not pay for Python's heavier modules. When the service is absent, of another wire protocol, or fails
to answer, the plugin runs in this process instead, just slower."""

import posix
import sys

from pycni.services.cni import CALL_TIMEOUT_SECONDS, DECLINED, PROTOCOL


def _environ():
    """As os.environ decodes it: bytes that are not UTF-8 stay as surrogates, so any environment is read."""
    return {k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape") for k, v in posix.environ.items()}


def _request(plugin_type, version, environ, stdin):
    env = [f"{k}={v}" for k, v in environ.items() if k.startswith("CNI_") or k == "PYCNI_DEBUG"]
    body = "\0".join([PROTOCOL, version, plugin_type] + env + [""]).encode(errors="surrogateescape") + b"\0" + stdin
    return len(body).to_bytes(4, "big") + body


def _open_fds(environ):
    """The caller's network namespace and root directory (where the service acts, and the files it sees),
    and the pod's network namespace when there is one."""
    fds = [posix.open("/proc/thread-self/ns/net", posix.O_RDONLY), posix.open("/", posix.O_RDONLY | posix.O_DIRECTORY)]
    netns = environ.get("CNI_NETNS", "")
    if netns:
        try:
            fds.append(posix.open(netns, posix.O_RDONLY))
        except OSError:
            pass  # gone: the service reports that as the plugin would
    return fds


def _ask_daemon(socket_path, plugin_type, version, environ, stdin):
    """(exit code, stdout) from the service, or None when it cannot serve this call."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    fds = []
    chunks = []
    sent = False
    try:
        sock.settimeout(CALL_TIMEOUT_SECONDS)
        sock.connect(socket_path)
        fds = _open_fds(environ)
        data = _request(plugin_type, version, environ, stdin)
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))]
        count = sock.sendmsg([data], ancillary)
        if count < len(data):
            sock.sendall(data[count:])
        sent = True
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        pass
    finally:
        sock.close()
        for fd in fds:
            posix.close(fd)
    reply = b"".join(chunks)
    if reply and reply[0] != DECLINED:  # the service speaks another wire protocol, or declined
        return reply[0], reply[1:]
    if sent and not reply and environ.get("CNI_COMMAND") == "ADD":
        # The service took the ADD and went away (killed, crashed) before answering: part of it may be
        # done, so running it again here could add the pod twice. Fail it; the runtime DELs and retries.
        return 1, _service_died(stdin)
    return None  # not taken, or a verb that is safe to run again: run it here


def _service_died(stdin):
    """Error 11 for an ADD the service took and did not answer."""
    import json

    try:
        version = json.loads(stdin).get("cniVersion", "1.0.0")
    except (ValueError, AttributeError):
        version = "1.0.0"
    return json.dumps({"cniVersion": version, "code": 11, "msg": "the pycni service went away during this ADD; "
                       "try again", "details": "the runtime's DEL cleans up whatever part of it was done"},
                      indent=2).encode() + b"\n"


def serve(plugin_type, module, version, socket_path, call_log=""):
    """Entry point of a daemon-mode launcher."""
    environ = _environ()
    interactive = not environ.get("CNI_COMMAND") and sys.stdin.isatty()
    stdin = b"" if interactive else sys.stdin.buffer.read()
    answer: tuple[int, bytes] | None
    if environ.get("PYCNI_SERVICE_DIED") and environ.get("CNI_COMMAND") == "ADD":  # from the compiled launcher
        answer = 1, _service_died(stdin)
    else:
        answer = None if interactive or environ.get("PYCNI_NO_DAEMON") else _ask_daemon(
            socket_path, plugin_type, version, environ, stdin)
    if answer is None:
        from importlib import import_module
        from time import perf_counter

        from pycni.protocol import skel

        started = perf_counter()
        plugin = import_module(module).PLUGIN
        code, text = skel.run(plugin, environ, stdin, interactive)
        answer = code, text.encode() + (b"\n" if text and not text.endswith("\n") else b"")
        if call_log and not interactive:  # the service logs the calls it serves; this one ran here
            from pycni.protocol import calllog

            calllog.append(call_log, calllog.Call.of(plugin.name, environ, code, text, perf_counter() - started))
    code, out = answer
    if out:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    sys.exit(code)
