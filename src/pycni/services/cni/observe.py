"""What the CNI service tells an operator: a log line per plugin call and Prometheus metrics.

Counters and histograms are counted as calls are served; the node's state (address pools, hostPort
mappings, shaped pods) is read from the real state on every scrape, so it stays true across service
restarts and standalone calls. Label names follow the Kubernetes instrumentation conventions."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger("pycni.service")
log.propagate = False


@dataclass(frozen=True, slots=True)
class Call:
    """One plugin call as the service served it."""

    plugin: str
    command: str
    container_id: str
    ifname: str
    netns: str
    code: int  # 0 on success, else the CNI error code
    seconds: float
    error: str = ""

    @classmethod
    def of(cls, plugin: str, environ: dict[str, str], exit_code: int, output: str, seconds: float) -> Call:
        code, error = 0, ""
        if exit_code != 0:
            try:
                answer = json.loads(output)
                code, error = int(answer.get("code", 999)), str(answer.get("msg", ""))
            except (ValueError, TypeError, AttributeError):
                code, error = 999, output.strip()[:200]
        return cls(plugin, environ.get("CNI_COMMAND", ""), environ.get("CNI_CONTAINERID", ""),
                   environ.get("CNI_IFNAME", ""), environ.get("CNI_NETNS", ""), code, seconds, error)


def setup_log(log_format: str, stream=sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    _format[0] = log_format


_format = ["text"]


def log_call(call: Call) -> None:
    """One line per call (never the config itself: it may hold secrets)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    fields = {"time": now, "plugin": call.plugin, "command": call.command, "containerID": call.container_id,
              "ifname": call.ifname, "netns": call.netns, "code": call.code,
              "durationMs": round(call.seconds * 1000, 2)}
    if call.error:
        fields["error"] = call.error
    if _format[0] == "json":
        log.info(json.dumps(fields))
    else:
        log.info(" ".join(f"{k}={json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v}"
                          for k, v in fields.items()))


class Metrics:
    """The service's Prometheus registry: call counters and durations, and the node's state on scrape."""

    def __init__(self, conf_dir: str, cache_dir: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("pycni_plugin_requests", "Plugin calls served, by plugin, command and CNI result "
                                "code (0: success).", ["plugin", "command", "code"], registry=self.registry)
        self.duration = Histogram("pycni_plugin_request_duration_seconds", "Time to serve a plugin call.",
                                  ["plugin", "command"], registry=self.registry,
                                  buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.registry.register(NodeState(conf_dir, cache_dir))

    def observe(self, call: Call) -> None:
        self.requests.labels(call.plugin, call.command, str(call.code)).inc()
        self.duration.labels(call.plugin, call.command).observe(call.seconds)

    def serve(self, address: str) -> None:
        """Serve /metrics on `host:port` in a thread of its own."""
        from prometheus_client import start_http_server

        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.registry)


class NodeState:
    """A collector reading the node's real state when scraped."""

    def __init__(self, conf_dir: str, cache_dir: str) -> None:
        self.conf_dir, self.cache_dir = conf_dir, cache_dir

    def collect(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        from pycni.node import nodeinfo

        pools = GaugeMetricFamily("pycni_ipam_addresses", "Addresses of a host-local range-set, by state "
                                  "(used, free), read from the store.", labels=["network", "range_set", "state"])
        for _, conflist in nodeinfo.conflists(self.conf_dir):
            for usage in nodeinfo.range_set_usage(conflist):
                pools.add_metric([usage.network, usage.range_set, "used"], usage.used)
                pools.add_metric([usage.network, usage.range_set, "free"], usage.free)
        yield pools
        yield GaugeMetricFamily("pycni_hostport_mappings", "hostPort mappings in portmap's nftables maps.",
                                value=nodeinfo.host_port_elements())
        yield GaugeMetricFamily("pycni_shaped_pods", "Pods whose traffic the bandwidth plugin shapes.",
                                value=nodeinfo.shaped_pod_count())
