"""A gRPC server on a unix socket, as the kubelet's plugin APIs want one: a stale socket of an earlier run
replaced, and a bind that fails said in words (grpc only raises RuntimeError). The device plugins and the DRA
driver serve this way."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from pycni.host.files import remove_file


def unix_server(path: str, what: str, add_servicers: Callable[[Any], None], *, workers: int,
                thread_prefix: str) -> grpc.Server:
    """A started server of `what` on the socket `path`, its services added by `add_servicers(server)`.
    Raises OSError when the socket cannot be bound."""
    remove_file(path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_prefix))
    add_servicers(server)
    try:
        server.add_insecure_port(f"unix://{path}")
    except RuntimeError:  # grpc's word for any bind failure
        server.stop(0)
        raise OSError(f"cannot serve {what} on {path} (the directory is not writable, or the path is longer "
                      "than a unix socket allows)") from None
    server.start()
    return server
