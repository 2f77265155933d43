"""The Node objects, listed and watched from the API server with the official `kubernetes` client (its
kubeconfig and in-cluster configuration, token rotation, TLS and HTTP), and this node's VTEP MAC published
on its own Node object.

What the client leaves to its users is done here: a watch resumes from the last resourceVersion it saw
(bookmarks included); `410 Gone`, as an HTTP status or as an ERROR event, leads to a fresh list; any
other failure (the API server away for minutes) is retried with a bounded backoff. Nothing is ever
flushed because the API cannot be reached: the last list stays the truth until a new one arrives.
Objects are read as JSON (`Connection`): no model objects are built for 1,000 nodes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from pycni.services.apiserver import Connection, in_one_line
from pycni.services.routes.peers import VTEP_ANNOTATION, NodeView

LOG = logging.getLogger("pycni.routes")

WATCH_SECONDS = 290  # the API server ends a watch after this; the agent watches again from where it was
BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
NODES = "/api/v1/nodes"


class Gone(Exception):
    """The resourceVersion the watch resumed from is too old (410): list again."""


class NodeWatch:
    """Lists, then watches, the Node objects until `stop` is set, telling `listed(nodes)` after each list
    and `changed(node, deleted)` after each event. `restarts` counts the fresh lists after the first."""

    def __init__(self, connection: Connection, listed: Callable[[list[NodeView]], None],
                 changed: Callable[[NodeView, bool], None], restarted: Callable[[str], None] = lambda why: None,
                 reachable: Callable[[], None] = lambda: None,
                 watch_seconds: int = WATCH_SECONDS) -> None:
        self.connection = connection
        self.listed = listed
        self.changed = changed
        self.restarted = restarted
        self.reachable = reachable  # told when the API server becomes unreachable or reachable again
        self.watch_seconds = watch_seconds
        self.resource_version = ""
        self.last_error = ""

    def run(self, stop: threading.Event) -> None:
        failures = 0
        must_list = True
        while not stop.is_set():
            try:
                if must_list:
                    self._list()
                    must_list = False
                self._watch(stop)
                failures = 0
            except Exception as e:  # noqa: BLE001 - the API away, TLS, a broken stream: said, retried, never fatal
                if isinstance(e, Gone) or getattr(e, "status", None) == 410:  # as an HTTP status: APIError
                    LOG.info("watch from resourceVersion %s: 410 Gone, listing the nodes again",
                             self.resource_version)
                    self.restarted("gone")
                    must_list = True
                    continue
                self._say(in_one_line(e))
                LOG.warning("API server: %s; retrying", self.last_error)
                stop.wait(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)])
                failures += 1
                if failures == 3:  # once per outage
                    self.restarted("error")
                    must_list = True  # a long outage: what changed meanwhile comes in one list

    def _list(self) -> None:
        body = self.connection.request("GET", NODES, timeout=(10, 60))
        if body.get("kind", "NodeList") != "NodeList":
            raise OSError("the API server's answer to a node list is not a NodeList")
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        self.listed([NodeView.from_api(item) for item in body.get("items") or []])
        self._say("")

    def _watch(self, stop: threading.Event) -> None:
        query = {"watch": "true", "resourceVersion": self.resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(self.watch_seconds)}
        with self.connection.lines(NODES, query=query, timeout=(10, self.watch_seconds + 30)) as lines:
            for line in lines:
                if stop.is_set():
                    return
                if line.strip():
                    self._event(json.loads(line))

    def _event(self, event: dict) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise OSError(f"watch error {obj.get('code')}: {obj.get('message', '')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.changed(NodeView.from_api(obj), kind == "DELETED")
        self._say("")

    def _say(self, error: str) -> None:
        """Keep the last error ('' once the API answers again), telling `reachable` when that changes."""
        if error != self.last_error:
            self.last_error = error
            self.reachable()


def publish_vtep(connection: Connection, node_name: str, mac: str) -> None:
    """Put this node's VTEP MAC on its Node object (a merge patch of one annotation: the least the RBAC
    must allow). Raises on failure."""
    body = {"metadata": {"annotations": {VTEP_ANNOTATION: mac}}}
    connection.request("PATCH", f"{NODES}/{node_name}", body=body, content_type="application/merge-patch+json",
                       timeout=(10, 30))
