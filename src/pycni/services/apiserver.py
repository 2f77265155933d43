"""How a long-lived pycni agent reaches the API server: the official `kubernetes` client, configured from a
kubeconfig file or the pod's service account (its token rotation, TLS and HTTP), one connection pool per
agent shared by every API group it uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

TIMEOUT = (5, 30)  # seconds to connect, to read


@dataclass(frozen=True)
class Connection:
    """How to reach the API server: a kubeconfig file, or the pod's service account (in-cluster)."""

    kubeconfig: str = ""

    @cached_property
    def client(self) -> Any:
        """The ApiClient, made once."""
        from kubernetes import client, config

        configuration = client.Configuration()
        if self.kubeconfig:
            config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)

    @cached_property
    def api(self) -> Any:
        """The core group (CoreV1Api)."""
        from kubernetes import client

        return client.CoreV1Api(self.client)

    def request(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                query: dict[str, str] | None = None, timeout: tuple[float, float] = TIMEOUT) -> dict[str, Any]:
        """One API call as JSON, through the client's own request path (its configuration, bearer token, TLS
        and connection pool). Not its typed methods: they validate a body against the API's pydantic models,
        and building those models' validators at the first call costs a long-lived agent ~28 MiB (measured:
        a driver's first ResourceSlice write) for checks the API server makes anyway. Raises the client's
        ApiException (`.status`, `.reason`) for a refusal, urllib3's errors when the server is away."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        serialized = self.client.param_serialize(method, path, query_params=list((query or {}).items()),
                                                 header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.client.call_api(*serialized, _request_timeout=timeout)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        answer: dict[str, Any] = json.loads(response.data)
        return answer
