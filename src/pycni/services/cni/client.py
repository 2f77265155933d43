"""The plugin executable's side of daemon mode. It imports nothing beyond sys, posix and _socket
(not even os: every millisecond of interpreter start is paid per plugin, per pod), so a pod's chain
does not pay for Python's heavier modules. When the service is absent, of another version, or fails
to answer, the plugin runs in this process instead, just slower."""

import posix
import sys

from pycni.services.cni import PROTOCOL


def _environ():
    """As os.environ decodes it: bytes that are not UTF-8 stay as surrogates, so any environment is read."""
    return {k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape") for k, v in posix.environ.items()}


def _request(plugin_type, version, environ, stdin):
    env = [f"{k}={v}" for k, v in environ.items() if k.startswith("CNI_") or k == "PYCNI_DEBUG"]
    body = "\0".join([PROTOCOL, version, plugin_type] + env + [""]).encode(errors="surrogateescape") + b"\0" + stdin
    return len(body).to_bytes(4, "big") + body


def _open_fds(environ):
    """The caller's network and mount namespaces (where the service acts, and the files it sees), and the
    pod's network namespace when there is one."""
    fds = [posix.open(f"/proc/thread-self/ns/{kind}", posix.O_RDONLY) for kind in ("net", "mnt")]
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
    try:
        sock.settimeout(300)
        sock.connect(socket_path)
        fds = _open_fds(environ)
        data = _request(plugin_type, version, environ, stdin)
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))]
        sent = sock.sendmsg([data], ancillary)
        if sent < len(data):
            sock.sendall(data[sent:])
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        sock.close()
        for fd in fds:
            posix.close(fd)
    reply = b"".join(chunks)
    if not reply or reply[0] == 255:  # 255: the service is of another version
        return None
    return reply[0], reply[1:]


def serve(plugin_type, module, version, socket_path, call_log=""):
    """Entry point of a daemon-mode launcher."""
    environ = _environ()
    interactive = not environ.get("CNI_COMMAND") and sys.stdin.isatty()
    stdin = b"" if interactive else sys.stdin.buffer.read()
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
