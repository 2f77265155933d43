"""The optional per-node service: plugin executables become thin clients of a warm process.

The wire format (one request per connection, over a root-only AF_UNIX stream socket):
  request:  4-byte big-endian length, then NUL-separated fields
            `pycni/<protocol>`, package version, plugin type, `K=V` environment entries, and
            after an empty field the raw stdin; SCM_RIGHTS carries the caller's network namespace,
            its root directory and, when CNI_NETNS could be opened, the pod's network namespace.
  response: 1 byte exit code, then the plugin's stdout; the connection closes.
"""

PROTOCOL = "pycni/2"  # 2: the caller's root directory travels with its network namespace
DEFAULT_SOCKET = "/run/pycni/pycni.sock"
DECLINED = 255  # the exit byte of a service that will not serve the call (another wire protocol)
SERVICE_WAIT_SECONDS = 5  # a static launcher's wait for a service that is not answering (a restart), then error 11
CALL_TIMEOUT_SECONDS = 300  # a launcher's wait for the service's answer (the Python and the compiled one alike)


def spawn(socket_path: str, python: str = "", *extra: str, log_path: str = ""):
    """Start `pycni daemon` in the background and wait for its socket; the caller stops it by its PID.
    Its stderr (a line per plugin call) goes to `log_path`, or is discarded."""
    import os
    import subprocess
    import sys
    import tempfile
    import time

    log = open(log_path, "a+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115 - the daemon's own
    with log:
        proc = subprocess.Popen([python or sys.executable, "-m", "pycni", "daemon", "--socket", socket_path, *extra],
                                stdout=subprocess.DEVNULL, stderr=log)
        for _ in range(600):
            if os.path.exists(socket_path) or proc.poll() is not None:
                break
            time.sleep(0.05)
        if not os.path.exists(socket_path):
            proc.kill()
            log.seek(0)
            raise RuntimeError(f"pycni daemon did not start: {log.read().decode(errors='replace')[-500:]}")
    return proc
