"""The per-node pycni service: the plugin functions, warm, behind a root-only unix socket.

Each request runs in a thread of its own that first takes the caller's root directory and enters its
network namespace (both passed as descriptors), so the service acts exactly where the plugin
executable was started and sees the files it sees (CNI_PATH, dataDir, resolvConf: a runtime in a
container of its own has other ones), and is given the pod's namespace as a descriptor too, never a
path.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import threading
import time

from pycni import plugins
from pycni.host import netlink, netns, nft
from pycni.plugins.host_local import store
from pycni.protocol import schema, skel
from pycni.services.cni import DECLINED, PROTOCOL, observe

MAX_REQUEST = 16 * 1024 * 1024


# What a call may import or read after it entered its caller's root, where none of our files may exist (a
# node with no Python: the image's static launchers): imported and read at start, in the service's own root.
CALL_TIME_IMPORTS = ("subprocess", "traceback", "ipaddress", "hashlib", "ctypes", "shutil", "importlib.util",
                     "encodings.ascii", "encodings.latin_1", "encodings.idna", "encodings.utf_8",
                     "pycni.plugins.host_local.store", "pycni.protocol.calllog")
OPTIONAL_CALL_TIME_IMPORTS = ("pycni.kubelet.podresources",)  # host-device's resourceName: needs grpcio


def preload() -> None:
    """Pay every import once, at start: each plugin, what calls import later, the schemas, libnftables."""
    from importlib import import_module

    for plugin_type in plugins.REGISTRY:
        plugins.load(plugin_type)
    for module in CALL_TIME_IMPORTS:
        import_module(module)
    for module in OPTIONAL_CALL_TIME_IMPORTS:
        try:
            import_module(module)
        except ImportError:
            pass
    schema.load_all()
    netns.own_proc()
    netlink.defer_link_deletions()  # a DEL answers before its idle links are unregistered (~15 ms each)
    store.remember_reservations()  # host-local reads again only the reservation files that changed
    try:
        nft.load_library()
    except (nft.NftError, OSError):
        pass  # a plugin that needs nftables says so in its answer


def _recv_exact(conn: socket.socket, size: int, fds: list[int]) -> bytes:
    data = b""
    while len(data) < size:
        chunk, ancillary, _, _ = conn.recvmsg(min(size - len(data), 1 << 20), socket.CMSG_SPACE(8 * 4))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds.extend(int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, usable, 4))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


REQUEST_TIMEOUT = 60  # seconds a client may take to send its request


def handle(conn: socket.socket, metrics: observe.Metrics | None = None) -> None:
    fds: list[int] = []
    try:
        conn.settimeout(REQUEST_TIMEOUT)
        header = _recv_exact(conn, 4, fds)
        size = int.from_bytes(header, "big")
        if size > MAX_REQUEST:
            return
        body = _recv_exact(conn, size, fds)
        fields = body.split(b"\0")
        end = fields.index(b"", 3)
        protocol, _launcher_release, plugin_type = (f.decode() for f in fields[:3])
        # a launcher of another pycni release is served when it speaks this wire protocol (a node mid-upgrade)
        if protocol != PROTOCOL or plugin_type not in plugins.REGISTRY or len(fds) < 2:
            conn.sendall(bytes([DECLINED]))
            return
        environ = dict(f.decode(errors="surrogateescape").split("=", 1) for f in fields[3:end] if b"=" in f)
        stdin = b"\0".join(fields[end + 1:])
        conn.settimeout(None)  # the plugin's own work has its own limits (locks, netlink)
        plugin = plugins.load(plugin_type)
        caller_ns, caller_root, pod_ns = fds[0], fds[1], (fds[2] if len(fds) > 2 else None)
        started = time.perf_counter()
        with netns.root_entered(caller_root), netns.entered(caller_ns):
            before = observe.reserved_addresses(stdin) if metrics and environ.get("CNI_COMMAND") == "GC" else None
            code, out = skel.run(plugin, environ, stdin, netns_fd=pod_ns)
            after = observe.reserved_addresses(stdin) if before else None
        seconds = time.perf_counter() - started
        payload = out.encode() + (b"\n" if out and not out.endswith("\n") else b"")
        conn.sendall(bytes([code & 0xFF]) + payload)
        conn.close()  # the plugin executable is answered; what follows is off the pod's critical path
        call = observe.Call.of(plugin_type, environ, code, out, seconds)
        observe.log_call(call)
        if metrics is not None:
            metrics.observe(call, {before[0]: before[1] - after[1]} if before and after else None)
    except ConnectionError:
        pass  # the client went away
    except Exception as e:  # noqa: BLE001 - whatever it was, the service must say so and go on serving
        observe.log.error("pycni service: a call failed outside its plugin (%s: %s)", type(e).__name__, e)
    finally:
        nft.release_contexts()  # freeing a libnftables context takes milliseconds
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        conn.close()


DRAIN_SECONDS = 60  # how long a stopping worker lets the calls it took finish


def listen(socket_path: str) -> socket.socket:
    """The service's socket: the one systemd passes (socket activation: LISTEN_FDS, fd 3), which outlives
    restarts of the service, or a new one at `socket_path`, root-only."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
        return socket.socket(fileno=3)
    directory = os.path.dirname(socket_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    # bound under a name of its own and renamed over the path: a service already serving there (the old pod of a
    # rolling update) takes every call that connected before the rename, this one every call after it; no
    # launcher ever finds the path missing or refused
    temporary = os.path.join(directory, f".{os.urandom(4).hex()}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(temporary)
    finally:
        os.umask(old_umask)
    listener.listen(1024)
    os.rename(temporary, socket_path)
    return listener


class _Stop(Exception):
    """SIGTERM to the supervising process: stop replacing workers, and stop them."""


def _raise_stop(signum, frame) -> None:
    raise _Stop


def accept_calls(listener: socket.socket, metrics: observe.Metrics | None) -> None:
    """Serve calls, a thread each, until SIGTERM; then let the calls under way finish (up to
    DRAIN_SECONDS) so that stopping the service for an upgrade fails no pod start.

    SIGTERM is seen through the interpreter's wakeup pipe, which its C signal handler writes the moment
    the signal lands, and never as an exception: one raised just after accept() returned would drop the
    connection the kernel had handed over, and that pod's ADD would fail. accept() is libc's, so a
    signal interrupts it even when another worker took the connection poll() announced."""
    import ctypes
    import select

    libc = ctypes.CDLL(None, use_errno=True)
    netlink.deferred_deletions()  # this process's deletion thread, started here: outside any caller's root
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_write)
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    workers: list[threading.Thread] = []
    try:
        while True:
            ready = [fd for fd, _ in poller.poll()]
            if wake_read in ready and signal.SIGTERM in os.read(wake_read, 64):
                break
            if listener.fileno() not in ready:
                continue
            fd = libc.accept4(listener.fileno(), None, None, socket.SOCK_CLOEXEC)
            if fd < 0:
                if ctypes.get_errno() in (errno.EINTR, errno.EAGAIN, errno.ECONNABORTED):
                    continue
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            workers = [w for w in workers if w.is_alive()] + [_serve_connection(fd, metrics)]
        _accept_the_rest(listener, libc, metrics, workers)
    finally:
        signal.set_wakeup_fd(-1)
        listener.close()
    deadline = time.monotonic() + DRAIN_SECONDS
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    deferred = netlink.deferred_deletions()
    if deferred is not None:
        deferred.finish(max(1.0, deadline - time.monotonic()))


def _accept_the_rest(listener: socket.socket, libc, metrics: observe.Metrics | None,
                     workers: list[threading.Thread]) -> None:
    """At SIGTERM, serve the calls already connected (in the listener's backlog) instead of resetting them: a
    launcher that connected just before a successor took the socket's path over gets its answer here."""
    import ctypes

    listener.setblocking(False)
    while (fd := libc.accept4(listener.fileno(), None, None, socket.SOCK_CLOEXEC)) >= 0 or \
            ctypes.get_errno() == errno.EINTR:
        if fd >= 0:
            workers.append(_serve_connection(fd, metrics))


def _serve_connection(fd: int, metrics: observe.Metrics | None) -> threading.Thread:
    """A thread answering the call on the accepted connection `fd`."""
    worker = threading.Thread(target=handle, args=(socket.socket(fileno=fd), metrics), daemon=True)
    worker.start()
    return worker


def serve(socket_path: str, ready=None, metrics: observe.Metrics | None = None, workers: int = 1) -> None:
    """Serve the plugins at `socket_path` from `workers` processes forked from this warm one (each with its
    threads; several processes use several cores), restarted when one dies."""
    preload()
    listener = listen(socket_path)
    if workers <= 1:
        if ready:
            ready()
        accept_calls(listener, metrics)
        return
    _supervise(listener, workers, metrics, ready)


def _supervise(listener: socket.socket, count: int, metrics: observe.Metrics | None, ready) -> None:
    children: set[int] = set()

    def start_worker() -> None:
        pid = os.fork()
        if pid == 0:  # the worker: everything is imported already
            code = 1
            try:
                _die_with(parent)
                accept_calls(listener, metrics)
                code = 0
            finally:
                os._exit(code)
        children.add(pid)

    parent = os.getpid()
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        for _ in range(count):
            start_worker()
        if ready:
            ready()
        while True:
            pid, status = os.wait()
            if pid in children:
                children.discard(pid)
                observe.log.warning("pycni worker %d ended (%s); starting another", pid,
                                    f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                                    else f"exit {os.WEXITSTATUS(status)}")
                start_worker()
    except _Stop:
        pass
    finally:
        listener.close()  # kept open until now: calls wait in its backlog while a worker is replaced
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _die_with(parent: int) -> None:
    """This worker gets SIGTERM when the service process that forked it goes (prctl PR_SET_PDEATHSIG), so
    a service killed outright leaves no worker behind on a socket nobody can reach."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it went before prctl took effect
        os._exit(0)
