"""The optional per-node service: plugin executables become thin clients of a warm process.

The wire format (one request per connection, over a root-only AF_UNIX stream socket):
  request:  4-byte big-endian length, then NUL-separated fields
            `pycni/<protocol>`, package version, plugin type, `K=V` environment entries, and
            after an empty field the raw stdin; SCM_RIGHTS carries the caller's network namespace
            and, when CNI_NETNS could be opened, the pod's.
  response: 1 byte exit code, then the plugin's stdout; the connection closes.
"""

PROTOCOL = "pycni/1"
DEFAULT_SOCKET = "/run/pycni/pycni.sock"


def spawn(socket_path: str, python: str = ""):
    """Start `pycni daemon` in the background and wait for its socket; the caller stops it by its PID."""
    import os
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([python or sys.executable, "-m", "pycni", "daemon", "--socket", socket_path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        if os.path.exists(socket_path) or proc.poll() is not None:
            break
        time.sleep(0.05)
    if not os.path.exists(socket_path):
        proc.kill()
        error = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"pycni daemon did not start: {error[-500:]}")
    return proc
