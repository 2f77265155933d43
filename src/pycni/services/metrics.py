"""Prometheus /metrics for every pycni service, on a port bound with SO_REUSEPORT (prometheus_client's
start_http_server does not): during a rolling update the new pod's service binds the port while the old
one still serves, and the kernel spreads scrapes over both until the old one exits."""

from __future__ import annotations


def serve_metrics(registry, address: str) -> None:
    """Serve `registry` on `host:port` in a thread of its own. Raises OSError or ValueError."""
    import socket
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class SharedPortServer(ThreadingWSGIServer):
        address_family = family
        allow_reuse_port = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # a scrape is no news
            pass

    server = make_server(host, int(port), make_wsgi_app(registry), SharedPortServer, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
