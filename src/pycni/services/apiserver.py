"""How a long-lived pycni agent reaches the API server: the official `kubernetes` client's configuration (a
kubeconfig file, or the pod's service account with its token rotation), TLS and connection pool, one per
agent, shared by every API group it uses. Objects go both ways as JSON.

Not the client's typed API classes nor its models: they validate bodies the API server checks anyway, and
the package's `__init__` imports the kubeconfig loader with its OAuth, `requests`, websocket and pydantic
stacks. In a pod (the service account: how pycni runs) only the four modules the calls need are imported —
the client's `Configuration`, its in-cluster loader, its REST layer and its retry policy — measured at
4 MiB against 17 MiB for `import kubernetes`, on an agent whose budget is 60 MiB. A kubeconfig file needs
the client's loader, and so the whole client, as before."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from pycni.imports import forget, without_init

TIMEOUT = (5, 30)  # seconds to connect, to read
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # where the kubelet mounts a pod's token


class APIError(Exception):
    """The API server answered with an error status: its code (`status`), reason and the Status object's
    message."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}: {message}".rstrip(": "))
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Connection:
    """How to reach the API server: a kubeconfig file, or else the pod's service account (in-cluster: the
    token and CA in `service_account`, the address in $KUBERNETES_SERVICE_HOST/PORT)."""

    kubeconfig: str = ""
    service_account: str = SERVICE_ACCOUNT_DIR

    @cached_property
    def configuration(self) -> Any:
        """The client's Configuration (server, TLS, bearer token and its refresh), made once."""
        if self.kubeconfig:
            from kubernetes import client, config  # the kubeconfig loader imports the whole client

            configuration = client.Configuration()
            config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
            return configuration
        _import_client_core()
        from kubernetes.client.configuration import Configuration
        from kubernetes.config.incluster_config import InClusterConfigLoader

        configuration = Configuration()
        InClusterConfigLoader(token_filename=os.path.join(self.service_account, "token"),
                              cert_filename=os.path.join(self.service_account, "ca.crt")).load_and_set(configuration)
        return configuration

    @cached_property
    def _rest(self) -> Any:
        """The client's REST layer: its urllib3 pool with the configuration's TLS, proxy and keepalive."""
        configuration = self.configuration  # first: it chooses how much of the client is imported
        from kubernetes.client.rest import RESTClientObject

        return RESTClientObject(configuration)

    def _send(self, method: str, path: str, body: dict[str, Any] | None, query: dict[str, str] | None,
              timeout: tuple[float, float], content_type: str) -> Any:
        url = self.configuration.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        token = self.configuration.auth_settings().get("BearerToken")  # read again when it is due (rotation)
        if token and token.get("value"):
            headers["Authorization"] = token["value"]
        if body is not None:
            headers["Content-Type"] = content_type
        response = self._rest.request(method, url, headers=headers, body=body, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            raise _refusal(response.status, response.reason or "", response.read())
        return response

    def request(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                query: dict[str, str] | None = None, timeout: tuple[float, float] = TIMEOUT,
                content_type: str = "application/json") -> dict[str, Any]:
        """One API call, its answer as JSON. Raises `APIError` for a refusal, urllib3's errors when the
        server cannot be reached."""
        answer: dict[str, Any] = json.loads(self._send(method, path, body, query, timeout, content_type).read())
        return answer

    @contextmanager
    def lines(self, path: str, *, query: dict[str, str] | None = None,
              timeout: tuple[float, float] = TIMEOUT) -> Iterator[Iterator[str]]:
        """A streamed GET (a watch) as its lines, each read as it arrives; the connection goes back to the
        pool when the block ends. Raises as `request` does."""
        response = self._send("GET", path, None, query, timeout, "application/json").response
        try:
            yield _lines(response)
        finally:
            response.release_conn()


def in_one_line(error: BaseException) -> str:
    """A failed API call as one line for a log or a status: its type and the first line of its text (urllib3's
    errors run over several)."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"[:300].rstrip(": ")


def _refusal(status: int, reason: str, data: bytes) -> APIError:
    """The API server's error answer as an exception, with its Status message when it sent one."""
    try:
        message = json.loads(data).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return APIError(status, reason, str(message))


def _lines(response: Any) -> Iterator[str]:
    """The lines of a chunked answer as they arrive (a watch sends one JSON event per line)."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


def _import_client_core() -> None:
    """Make the client's configuration, in-cluster loader and REST layer importable without the package
    `__init__`s that import all of it (a no-op where the client is already in the process)."""
    registered = without_init("kubernetes", "kubernetes.client", "kubernetes.config", "kubernetes.utils")
    if not registered:
        return
    try:
        from kubernetes.client.configuration import Configuration

        # the in-cluster loader takes it from the package, as the package's own __init__ would give it
        sys.modules["kubernetes.client"].Configuration = Configuration  # type: ignore[attr-defined]
    except ImportError:
        forget(registered)  # another layout of the client: imported whole
