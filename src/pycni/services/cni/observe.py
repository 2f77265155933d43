"""What the CNI service tells an operator: a log line per plugin call and Prometheus metrics.

Counters and histograms are counted as calls are served; the node's state (address pools, hostPort
mappings, shaped pods) is read from the real state on every scrape, so it stays true across service
restarts and standalone calls. Label names follow the Kubernetes instrumentation conventions."""

from __future__ import annotations

import json
import logging
import os
import sys

from pycni.protocol.calllog import Call
from pycni.services.metrics import serve_metrics

log = logging.getLogger("pycni.service")
log.propagate = False
_format = ["text"]

__all__ = ["Call", "Metrics", "log_call", "own_counter_directory", "reserved_addresses", "setup_log"]


def setup_log(log_format: str, stream=sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    _format[0] = log_format


def log_call(call: Call) -> None:
    """One line per call (never the config itself: it may hold secrets)."""
    log.info(call.line(as_json=_format[0] == "json"))


class Metrics:
    """The service's Prometheus registry: call counters and durations, and the `collectors` its caller adds
    (the node's state, read when scraped).

    With several worker processes (`multiprocess_dir`), each worker's counters live in files there
    (prometheus_client's multiprocess mode, chosen before it is first imported) and the service process
    serves their sum; a worker that dies keeps its counts."""

    def __init__(self, multiprocess_dir: str = "", collectors: tuple = ()) -> None:
        if multiprocess_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        counted = None if multiprocess_dir else self.registry
        if multiprocess_dir:
            from prometheus_client.multiprocess import MultiProcessCollector

            MultiProcessCollector(self.registry, path=multiprocess_dir)
        self.requests = Counter("pycni_plugin_requests", "Plugin calls served, by plugin, command and CNI result "
                                "code (0: success).", ["plugin", "command", "code"], registry=counted)
        self.duration = Histogram("pycni_plugin_request_duration_seconds", "Time to serve a plugin call.",
                                  ["plugin", "command"], registry=counted,
                                  buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.gc_released = Counter("pycni_gc_released_addresses", "Addresses that GC calls released, by network.",
                                   ["network"], registry=counted)
        for collector in collectors:
            self.registry.register(collector)

    def observe(self, call: Call, released: dict[str, int] | None = None) -> None:
        self.requests.labels(call.plugin, call.command, str(call.code)).inc()
        self.duration.labels(call.plugin, call.command).observe(call.seconds)
        for network, count in (released or {}).items():
            self.gc_released.labels(network).inc(count)

    def serve(self, address: str) -> None:
        serve_metrics(self.registry, address)


def own_counter_directory(run_dir: str) -> str:
    """A directory for the workers' counter files (prometheus_client's multiprocess mode) beside the socket, one
    per service: during a rolling update two serve side by side, in two containers whose PIDs may be equal.
    It is held by a lock for the service's life; those no live service holds (a killed service's) go."""
    import shutil

    from pycni.host import lock

    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if name == "metrics" or (name.startswith("metrics-") and lock.abandoned(os.path.join(path, "owner.lock"))):
            shutil.rmtree(path, ignore_errors=True)
    path = os.path.join(run_dir, f"metrics-{os.urandom(6).hex()}")
    os.makedirs(path, mode=0o700)
    lock.hold(os.path.join(path, "owner.lock"))
    return path


def reserved_addresses(stdin: bytes) -> tuple[str, int] | None:
    """(network, reserved addresses) of the host-local store a call's config uses, None when it uses none.
    Read before and after a GC call, so the metrics say what GC released."""
    try:
        config = json.loads(stdin)
        ipam = config.get("ipam") or {}
        if ipam.get("type") != "host-local" and config.get("type") != "host-local":
            return None
        from pycni.plugins.host_local import DEFAULT_DATA_DIR
        from pycni.plugins.host_local.store import DiskStore

        network = str(config["name"])
        return network, len(DiskStore(ipam.get("dataDir") or DEFAULT_DATA_DIR, network).reservations())
    except (ValueError, TypeError, AttributeError, KeyError, OSError):
        return None
