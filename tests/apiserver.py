"""A stand-in Kubernetes API server for Node objects, over HTTPS, speaking the real list/watch protocol:
`GET /api/v1/nodes` (a NodeList with its resourceVersion), `?watch=1&resourceVersion=N` (a chunked stream
of ADDED/MODIFIED/DELETED/BOOKMARK events, one JSON object per line, ended after timeoutSeconds), `410
Gone` for a resourceVersion older than its history (as an HTTP status, or as an ERROR event with a Status
of code 410, as real servers do both), `GET`/`PATCH /api/v1/nodes/NAME` (merge patch), `GET
/apis/resource.k8s.io/v1/namespaces/NS/resourceclaims/NAME` (the claims a DRA driver reads), ResourceSlices
(`/apis/resource.k8s.io/v1/resourceslices`: list with a field selector on `spec.nodeName` and `spec.driver`,
create (409 AlreadyExists), replace (409 Conflict on a stale resourceVersion) and delete, each write
recorded with its time), and a bearer token checked on every request.

It listens inside a network namespace of the test's (the nodes reach it over their underlay), and can be
stopped (every connection cut, the port closed) and started again on the same address.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = "standin-token"


def node_object(name: str, pod_cidrs: list[str], addresses: list[str], annotations: dict | None = None) -> dict:
    return {"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "uid": f"uid-{name}", "annotations": dict(annotations or {}), "labels": {}},
            "spec": {"podCIDR": pod_cidrs[0] if pod_cidrs else "", "podCIDRs": list(pod_cidrs)},
            "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addresses]
                       + [{"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class StandinAPI:
    def __init__(self, netns: str, host: str, port: int, directory: str) -> None:
        self.netns, self.host, self.port, self.directory = netns, host, port, directory
        self.nodes: dict[str, dict] = {}
        self.claims: dict[tuple[str, str], dict] = {}  # (namespace, name): ResourceClaim
        self.slices: dict[str, dict] = {}  # name: ResourceSlice
        self.slice_writes: list[tuple[float, str, str, dict]] = []  # (monotonic time, verb, name, object)
        self.version = 100
        self.history: list[tuple[int, int, str, dict]] = []  # (sequence, resourceVersion, type, object)
        self.sequence = 0
        self.oldest = self.version  # a watch from before this gets 410
        self.gone_as_event = False
        self.lock = threading.Condition()
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.patches: list[tuple[str, dict]] = []
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self.ca = os.path.join(directory, "ca.crt")
        self._key = os.path.join(directory, "server.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", self._key, "-out", self.ca, "-days", "2", "-subj", "/CN=standin-api",
                        "-addext", f"subjectAltName=IP:{host}"], check=True, capture_output=True)

    # ------------------------------------------------------------ the cluster's side

    def kubeconfig(self, path: str) -> str:
        server = f"https://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}"
        with open(path, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "standin",
                       "clusters": [{"name": "standin", "cluster": {"server": server,
                                                                    "certificate-authority": self.ca}}],
                       "users": [{"name": "agent", "user": {"token": TOKEN}}],
                       "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "agent"}}]}, f)
        return path

    def service_account(self, directory: str) -> dict[str, str]:
        """A pod's service account in `directory` (its token, the CA), as the kubelet mounts it, and the
        environment a pod gets: what an agent in a pod reaches the API server with."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "token"), "w") as f:
            f.write(TOKEN)
        with open(self.ca) as source, open(os.path.join(directory, "ca.crt"), "w") as f:
            f.write(source.read())
        return {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": str(self.port)}

    def put(self, node: dict) -> None:
        """Create or update a node (as kube-controller-manager or a kubelet would)."""
        with self.lock:
            name = node["metadata"]["name"]
            kind = "MODIFIED" if name in self.nodes else "ADDED"
            self._record(kind, copy.deepcopy(node))

    def put_claim(self, claim: dict) -> None:
        """Create or replace a ResourceClaim (as the scheduler does when it writes the allocation)."""
        with self.lock:
            self.version += 1
            claim = copy.deepcopy(claim)
            claim["metadata"]["resourceVersion"] = str(self.version)
            self.claims[(claim["metadata"]["namespace"], claim["metadata"]["name"])] = claim

    def pool(self, driver: str, node: str) -> tuple[int, list[dict]]:
        """The newest complete generation of `driver`'s pool on `node` and its devices (0, [] for none), as
        the scheduler reads a pool: only when every one of its `resourceSliceCount` slices is there."""
        with self.lock:
            ours = [s["spec"] for s in self.slices.values()
                    if s["spec"].get("driver") == driver and s["spec"].get("nodeName") == node]
        if not ours:
            return 0, []
        generation = max(spec["pool"]["generation"] for spec in ours)
        current = [spec for spec in ours if spec["pool"]["generation"] == generation]
        if len(current) != current[0]["pool"]["resourceSliceCount"]:
            return 0, []
        return generation, sorted((d for spec in current for d in spec.get("devices", [])), key=lambda d: d["name"])

    def delete(self, name: str) -> None:
        with self.lock:
            node = self.nodes[name]
            self._record("DELETED", node)

    def compact(self) -> None:
        """Forget the history (etcd compaction): a watch resuming from before now gets 410 Gone."""
        with self.lock:
            self.history.clear()
            self.oldest = self.version

    def bookmark(self) -> None:
        with self.lock:
            self.sequence += 1
            marker = {"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.version)}}
            self.history.append((self.sequence, self.version, "BOOKMARK", marker))
            self.lock.notify_all()

    def _write_slice(self, verb: str, name: str, body: dict) -> dict:
        """Store a ResourceSlice written by a client (under the lock): a new resourceVersion, and a uid at create."""
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        stored["metadata"].setdefault("uid", f"slice-{self.version}")
        self.slices[name] = stored
        self.slice_writes.append((time.monotonic(), verb, name, copy.deepcopy(stored)))
        return copy.deepcopy(stored)

    def _record(self, kind: str, node: dict) -> None:
        self.version += 1
        node["metadata"]["resourceVersion"] = str(self.version)
        if kind == "DELETED":
            del self.nodes[node["metadata"]["name"]]
        else:
            self.nodes[node["metadata"]["name"]] = node
        self.sequence += 1
        self.history.append((self.sequence, self.version, kind, copy.deepcopy(node)))
        self.lock.notify_all()

    # ------------------------------------------------------------ serving

    def start(self) -> None:
        from pycni.host import netns

        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            with netns.entered(fd):
                family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
        finally:
            os.close(fd)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca, self._key)
        api = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            address_family = family

            def get_request(self):
                conn, address = self.socket.accept()
                # as the real API server (Go sets it on every TCP connection): without it a response's headers
                # and body, written apart, wait for the client's delayed ACK (40 ms) between them
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with api.lock:
                    api._connections.add(conn)
                return conn, address

        server = Server((self.host, self.port), _handler(self), bind_and_activate=False)
        server.socket.close()
        server.socket = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        """The API server goes away: the port closed, every open connection (watches) cut."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.socket.close()
        with self.lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()
            self.lock.notify_all()

    @property
    def running(self) -> bool:
        return self._server is not None

    def lists(self) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and "watch=" not in path
                   and path.startswith("/api/v1/nodes") and path.count("/") == 3)


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _handler(api: StandinAPI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            api.requests.append((self.command, self.path))
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or token.strip() != TOKEN:  # the scheme's case is free (RFC 9110)
                self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                return False
            return True

        def do_GET(self):  # noqa: N802
            if not self._authorized():
                return
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/api/v1/nodes":
                if query.get("watch") in ("1", "true", "True"):
                    return self._watch(query)
                with api.lock:
                    body = {"kind": "NodeList", "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(api.version)},
                            "items": [copy.deepcopy(n) for n in api.nodes.values()]}
                return self._send(200, body)
            parts = url.path.strip("/").split("/")
            if parts == ["apis", "resource.k8s.io", "v1", "resourceslices"]:
                wanted = dict(term.split("=", 1) for term in query.get("fieldSelector", "").split(",") if term)
                with api.lock:
                    items = [copy.deepcopy(s) for s in api.slices.values()
                             if all(_field(s, key) == value for key, value in wanted.items())]
                    version = str(api.version)
                return self._send(200, {"kind": "ResourceSliceList", "apiVersion": "resource.k8s.io/v1",
                                        "metadata": {"resourceVersion": version}, "items": items})
            if parts[:3] == ["apis", "resource.k8s.io", "v1"] and len(parts) == 7 and parts[5] == "resourceclaims":
                with api.lock:
                    claim = copy.deepcopy(api.claims.get((parts[4], parts[6])))
                if claim is None:
                    return self._send(404, _status(404, "NotFound", f'resourceclaims.resource.k8s.io "{parts[6]}" '
                                                                    "not found"))
                return self._send(200, claim)
            name = url.path.rsplit("/", 1)[-1]
            with api.lock:
                node = copy.deepcopy(api.nodes.get(name))
            if node is None:
                return self._send(404, _status(404, "NotFound", f'nodes "{name}" not found'))
            return self._send(200, node)

        def do_PATCH(self):  # noqa: N802
            if not self._authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            if self.headers.get("Content-Type") not in ("application/merge-patch+json",
                                                        "application/strategic-merge-patch+json"):
                return self._send(415, _status(415, "UnsupportedMediaType", self.headers.get("Content-Type", "")))
            name = urlparse(self.path).path.rsplit("/", 1)[-1]
            with api.lock:
                if name not in api.nodes:
                    return self._send(404, _status(404, "NotFound", f'nodes "{name}" not found'))
                node = copy.deepcopy(api.nodes[name])
                _merge(node, body)
                api.patches.append((name, body))
                api._record("MODIFIED", node)
                answer = copy.deepcopy(api.nodes[name])
            return self._send(200, answer)

        def _body(self) -> dict:
            return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

        def do_POST(self):  # noqa: N802
            if not self._authorized():
                return
            if urlparse(self.path).path != "/apis/resource.k8s.io/v1/resourceslices":
                return self._send(404, _status(404, "NotFound", self.path))
            body = self._body()
            name = body["metadata"]["name"]
            with api.lock:
                if name in api.slices:
                    return self._send(409, _status(409, "AlreadyExists",
                                                   f'resourceslices.resource.k8s.io "{name}" already exists'))
                stored = api._write_slice("create", name, body)
            return self._send(201, stored)

        def do_PUT(self):  # noqa: N802
            if not self._authorized():
                return
            path = urlparse(self.path).path
            name = path.rsplit("/", 1)[-1]
            if path != f"/apis/resource.k8s.io/v1/resourceslices/{name}":
                return self._send(404, _status(404, "NotFound", self.path))
            body = self._body()
            with api.lock:
                existing = api.slices.get(name)
                if existing is None:
                    return self._send(404, _status(404, "NotFound", f'resourceslices.resource.k8s.io "{name}" '
                                                                    "not found"))
                if body["metadata"].get("resourceVersion") != existing["metadata"]["resourceVersion"]:
                    return self._send(409, _status(409, "Conflict", f'Operation cannot be fulfilled on '
                                                                    f'resourceslices.resource.k8s.io "{name}": the '
                                                                    "object has been modified"))
                stored = api._write_slice("replace", name, body)
            return self._send(200, stored)

        def do_DELETE(self):  # noqa: N802
            if not self._authorized():
                return
            name = urlparse(self.path).path.rsplit("/", 1)[-1]
            with api.lock:
                gone = api.slices.pop(name, None)
                if gone is not None:
                    api.version += 1
                    api.slice_writes.append((time.monotonic(), "delete", name, gone))
            if gone is None:
                return self._send(404, _status(404, "NotFound", f'resourceslices.resource.k8s.io "{name}" not found'))
            return self._send(200, _status(200, "Success", "deleted") | {"status": "Success"})

        def _watch(self, query: dict) -> None:
            since = int(query.get("resourceVersion") or api.version)
            deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
            with api.lock:
                expired = since < api.oldest
                as_event = api.gone_as_event
            if expired and not as_event:
                return self._send(410, _status(410, "Expired", f"too old resource version: {since} ({api.oldest})"))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if expired:
                self._chunk({"type": "ERROR", "object": _status(410, "Expired", f"too old resource version: "
                                                                                 f"{since} ({api.oldest})")})
                self._chunk(None)
                return
            server = api._server
            with api.lock:
                pending = [(q, k, o) for q, v, k, o in api.history if v > since and k != "BOOKMARK"]
                seen = api.sequence
            try:
                while time.monotonic() < deadline and api._server is server and server is not None:
                    for _, kind, obj in pending:
                        self._chunk({"type": kind, "object": obj})
                    with api.lock:
                        pending = [(q, k, o) for q, v, k, o in api.history if q > seen]
                        if not pending:
                            api.lock.wait(timeout=0.2)
                            continue
                        seen = pending[-1][0]
                self._chunk(None)
            except OSError:
                return

        def _chunk(self, event: dict | None) -> None:
            if event is None:
                self.wfile.write(b"0\r\n\r\n")
            else:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


def _field(obj: dict, path: str) -> str:
    """A field selector's field of an object (`spec.nodeName`)."""
    value: object = obj
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _merge(target: dict, patch: dict) -> None:
    """RFC 7386 merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
