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
