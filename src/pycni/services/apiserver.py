"""How a long-lived pycni agent reaches the API server: the official `kubernetes` client, configured from a
kubeconfig file or the pod's service account (its token rotation, TLS and HTTP), one connection pool per
agent shared by every API group it uses."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any


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

    @cached_property
    def resource(self) -> Any:
        """Dynamic Resource Allocation (ResourceV1Api: resource.k8s.io/v1)."""
        from kubernetes import client

        return client.ResourceV1Api(self.client)
