"""`pycni routes`: the agent that makes every other node's pods reachable from this one, and keeps it so.

Three threads feed one reconciler:
- the API watch (`api.NodeWatch`): the Node objects, listed and then watched;
- the kernel's notifications (`routing.Routing.notifications`): an entry of the agent's removed or changed
  by someone else, the VXLAN device gone, a lost notification;
- a slow timer (`resync_seconds`), the backstop: the whole kernel side read again.

The reconciler compares what the plan wants with what the kernel has of the agent's (a mirror kept
current by the notifications) and writes only the difference, so a change to one node touches only that
node's entries and a restart changes nothing that is right. Entries are removed only on the word of a
list from the API server: at a start with the API away, the last list (cached on disk) restores what is
missing and nothing is taken away.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from pycni.host import files, lock
from pycni.host.routing import Entries, Forwarding, Neighbour, Route, Routing, describe
from pycni.services.apiserver import Connection
from pycni.services.metrics import serve_metrics
from pycni.services.routes import ROUTE_PROTOCOL, api, firewall
from pycni.services.routes.peers import (
    VXLAN,
    WAITING,
    NodeView,
    Plan,
    Settings,
    changes,
    plan,
)

LOG = logging.getLogger("pycni.routes")
RESYNC_SECONDS = 60.0
RETRY_SECONDS = 2.0  # an entry the kernel refused is tried again this often
SAID_ONE_BY_ONE = 20  # more entries made at once are logged as counts


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    node_name: str
    connection: Connection
    cluster_cidrs: tuple[str, ...] = ()
    conflist: str = ""  # the rendered conflist whose bridge MTU the agent keeps right ('' for none)
    state_file: str = ""
    cache_file: str = ""
    settings: Settings = field(default_factory=Settings)
    resync_seconds: float = RESYNC_SECONDS
    publish: bool = True  # put this node's VTEP MAC on its Node object


class AgentMetrics:
    """Prometheus: peers by state, repairs, watch restarts, and the time from a node's update (as the
    watch delivered it) to its entries in place."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.peers = Gauge("pycni_routes_peers", "Other nodes' pod CIDRs by how they are reached (direct, vxlan) "
                           "or why not (waiting, failed).", ["state"], registry=self.registry)
        self.repairs = Counter("pycni_routes_repairs", "Entries of the agent's made again after someone removed or "
                               "changed them.", ["kind"], registry=self.registry)
        self.watch_restarts = Counter("pycni_routes_watch_restarts", "Fresh lists of the nodes after the first "
                                      "(410 Gone, or the API server away).", ["reason"], registry=self.registry)
        self.update_seconds = Histogram("pycni_routes_update_seconds", "From a node's change arriving on the watch "
                                        "to its entries in place.", registry=self.registry,
                                        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.last_sync = Gauge("pycni_routes_last_sync_timestamp_seconds", "When the kernel last matched the plan.",
                               registry=self.registry)

    def serve(self, address: str) -> None:
        serve_metrics(self.registry, address)


class RoutesAgent:
    def __init__(self, config: AgentConfig, metrics: AgentMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or AgentMetrics()
        self.routing = Routing(ROUTE_PROTOCOL, config.settings.vxlan_device)
        self.nodes: dict[str, NodeView] = {}
        self.source = ""  # "api" once a list arrived, "cache" from the last one on disk, "" none yet
        self.present = Entries()
        self.failed: dict[object, str] = {}  # entry key -> the kernel's refusal
        self.pending: dict[str, float] = {}  # node -> when its change arrived, until its entries are in place
        self.made: dict = {}  # key -> the entry last in place: putting the same one again is a repair
        self.repairs = 0
        self.watch_restarts = 0
        self.published = ""
        self.forward_accepts: list[str] = []
        self.problems: dict[str, str] = {}  # what else went wrong in the last reconcile (publishing, FORWARD)
        self.uplinks: list | None = None  # the real interfaces; read again when an address or one of them changes
        self.last_sync = 0.0
        self._vxlan_in_place: object = None  # the device as last made right; made right again on a full read
        self._cached: dict[str, NodeView] | None = None  # the nodes as last written to the cache file
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._resync = True
        self._holder: int | None = None  # the state file's lock, once this agent holds it
        self._first_list: float | None = None  # when the first list arrived, until the kernel matched it
        self.watch = api.NodeWatch(config.connection, self._listed, self._changed, self._restarted,
                                   reachable=self._wake.set)  # the state says whether the API answers

    # ---------------------------------------------------------------- feeds

    def _listed(self, nodes: list[NodeView]) -> None:
        now = time.monotonic()
        if self._first_list is None:
            self._first_list = now
        with self._lock:
            before = self.nodes
            self.nodes = {n.name: n for n in nodes if n.name}
            for name in set(before) | set(self.nodes):
                if before.get(name) != self.nodes.get(name):
                    self.pending.setdefault(name, now)
            self.source = "api"
        self._wake.set()

    def _changed(self, node: NodeView, deleted: bool) -> None:
        with self._lock:
            if self.nodes.get(node.name) == (None if deleted else node):
                return  # a heartbeat, a condition: nothing routing reads changed
            if deleted:
                self.nodes.pop(node.name, None)
            else:
                self.nodes[node.name] = node
            self.pending.setdefault(node.name, time.monotonic())
        self._wake.set()

    def _restarted(self, reason: str) -> None:
        self.watch_restarts += 1
        self.metrics.watch_restarts.labels(reason).inc()

    def _kernel_changed(self, stop: threading.Event) -> None:
        """The notifications thread: keep the mirror true, and wake the reconciler when an entry of the
        agent's differs from it (removed or changed by someone else)."""
        while not stop.is_set():
            try:
                for change in self.routing.notifications(stop):
                    if self._note(change):
                        self._wake.set()
            except Exception as e:  # noqa: BLE001 - a broken subscription is made again, after a full read
                LOG.warning("kernel notifications: %s; subscribing again", e)
                self._resync = True
                self._wake.set()
                stop.wait(1.0)

    def _note(self, change) -> bool:
        if change.kind in ("overrun", "device"):
            self._resync = True
            return True
        if change.kind == "address" or (change.kind == "link" and self.uplinks is not None
                                         and any(u.name == change.link for u in self.uplinks)):
            self.uplinks = None  # read again: an address, an MTU or an uplink's state changed
            return True
        entry = change.entry
        if entry is None:
            return False
        table, key = self._slot(entry)
        with self._lock:
            if change.removed:
                if key in table and (not isinstance(entry, Forwarding) or table[key] == entry):
                    del table[key]
                    return True
                return False
            if table.get(key) != entry:
                table[key] = entry
                return True
        return False

    def _slot(self, entry: Route | Neighbour | Forwarding) -> tuple[dict, object]:
        if isinstance(entry, Route):
            return self.present.routes, entry.dst
        if isinstance(entry, Neighbour):
            return self.present.neighbours, entry.address
        return self.present.forwardings, entry.mac

    # ---------------------------------------------------------------- the loop

    def stop(self, stop: threading.Event) -> None:
        """End `run` (from a signal handler): the entries stay in place."""
        stop.set()
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        try:
            self._load_cache()
            threading.Thread(target=self.watch.run, args=(stop,), name="api-watch", daemon=True).start()
            threading.Thread(target=self._kernel_changed, args=(stop,), name="kernel-events", daemon=True).start()
            while not stop.is_set():
                waiting = self.failed or (self.config.state_file and self._holder is None)
                self._wake.wait(timeout=RETRY_SECONDS if waiting else self.config.resync_seconds)
                if stop.is_set():
                    break
                if not self._wake.is_set():
                    self._resync = True  # the slow backstop: read the kernel whole
                self._wake.clear()
                try:
                    self.reconcile()
                except Exception as e:  # noqa: BLE001 - said, and tried again; the agent does not exit
                    LOG.exception("reconcile: %s", e)
                    self._resync = True
                    stop.wait(RETRY_SECONDS)
                    self._wake.set()
        finally:
            if self._holder is not None:  # the state is this agent's: it goes with it
                try:
                    os.unlink(self.config.state_file)
                except OSError:
                    pass
                os.close(self._holder)
            self.routing.close()

    def reconcile(self) -> None:
        """Bring the kernel to the plan: write what is missing or wrong, remove what is the agent's and no
        longer wanted (only on the word of a list from the API server)."""
        with self._lock:
            nodes = dict(self.nodes)
            pending = dict(self.pending)
            source = self.source
        own = nodes.get(self.config.node_name)
        self.problems = {}
        resync, self._resync = self._resync, False
        if self.uplinks is None or resync:
            self.uplinks = self.routing.uplinks()
        wanted = plan(own, nodes.values(), self.uplinks, self.config.settings)
        if resync:
            present = self.routing.entries()
            with self._lock:
                self.present = present
        if wanted.vxlan is not None:
            if resync or wanted.vxlan != self._vxlan_in_place:  # its own notifications say when it changes
                _, remade = self.routing.ensure_vxlan(wanted.vxlan)
                self._vxlan_in_place = wanted.vxlan
                if remade:
                    with self._lock:
                        self.present = self.routing.entries()
            self._publish(wanted)
        if source == "api" and nodes != self._cached:
            self._save_cache(nodes)
        self._firewall()
        self._pod_mtu(wanted.pod_mtu)
        with self._lock:
            todo = changes(wanted.entries, self.present)
        failed: dict[object, str] = {}
        removals = todo.remove if source == "api" else ()
        refused = self.routing.remove_many(removals)
        for entry in removals:
            table, key = self._slot(entry)
            if entry in refused:
                failed[key] = refused[entry]
                continue
            with self._lock:
                table.pop(key, None)
            self.made.pop(key, None)
        self._say("removed", [e for e in removals if e not in refused])
        refused = self.routing.put_many(todo.put)
        made = []
        for entry in todo.put:
            table, key = self._slot(entry)
            if entry in refused:
                failed[key] = refused[entry]
                continue
            with self._lock:
                table[key] = entry
            if self.made.get(key) == entry:  # the same entry was in place: someone removed or changed it
                self.repairs += 1
                self.metrics.repairs.labels(type(entry).__name__.lower()).inc()
                LOG.info("repaired %s", describe(entry))
            else:
                made.append(entry)
        self._say("made", made)
        for key, reason in failed.items():
            if self.failed.get(key) != reason:
                LOG.warning("%s (tried again every %g s)", reason, RETRY_SECONDS)
        for table in (wanted.entries.routes, wanted.entries.neighbours, wanted.entries.forwardings):
            self.made.update((k, v) for k, v in table.items() if k not in failed)
        self.failed = failed
        now = time.monotonic()
        with self._lock:
            for name, since in pending.items():
                if self.pending.get(name) == since:
                    del self.pending[name]
                    if not failed:
                        self.metrics.update_seconds.observe(now - since)
        if self._first_list is not None and self._first_list >= 0 and source == "api" and not failed:
            LOG.info("synced %d entries in %.3f s after the first list (%d nodes)", wanted.entries.count(),
                     now - self._first_list, len(nodes))
            self._first_list = -1.0  # said once
        self.last_sync = time.time()
        self.metrics.last_sync.set(self.last_sync)
        self._count_peers(wanted)
        self._write_state(wanted, source)

    @staticmethod
    def _say(what: str, entries: list) -> None:
        """Each entry made or removed, in the log; a burst (a first sync, a node's subnet renumbered) as
        counts, not thousands of lines."""
        if len(entries) <= SAID_ONE_BY_ONE:
            for entry in entries:
                LOG.info("%s %s", what, describe(entry))
        else:
            kinds = ", ".join(f"{sum(isinstance(e, k) for e in entries)} {k.__name__.lower()}s"
                              for k in (Route, Neighbour, Forwarding))
            LOG.info("%s %d entries (%s)", what, len(entries), kinds)

    # ---------------------------------------------------------------- around the entries

    def _publish(self, wanted: Plan) -> None:
        own = self.nodes.get(self.config.node_name)
        assert wanted.vxlan is not None
        if not self.config.publish or own is None or own.vtep_mac == wanted.vxlan.mac or \
                self.published == wanted.vxlan.mac:
            return
        try:
            api.publish_vtep(self.config.connection, self.config.node_name, wanted.vxlan.mac)
            self.published = wanted.vxlan.mac
            LOG.info("published VTEP MAC %s on node %s", wanted.vxlan.mac, self.config.node_name)
        except Exception as e:  # noqa: BLE001 - tried again at the next reconcile
            LOG.warning("cannot publish the VTEP MAC on node %s: %s", self.config.node_name, e)
            self.problems["publish"] = str(e)

    def _firewall(self) -> None:
        if not self.config.cluster_cidrs:
            return
        try:
            self.forward_accepts = firewall.forward_accepts(self.config.cluster_cidrs)
        except Exception as e:  # noqa: BLE001 - said in the state; pods on this node still work
            LOG.warning("FORWARD policy: %s", e)
            self.problems["forward"] = str(e)

    def _pod_mtu(self, mtu: int) -> None:
        """The bridge MTU in the rendered conflist: new pods get it (pods already running keep theirs)."""
        if not self.config.conflist or mtu <= 0:
            return
        try:
            with open(self.config.conflist, encoding="utf-8") as f:
                conflist = json.load(f)
            bridges = [p for p in conflist.get("plugins", []) if p.get("type") == "bridge"]
            if all(p.get("mtu") == mtu for p in bridges):
                return
            for p in bridges:
                p["mtu"] = mtu
            files.replace_file(self.config.conflist, (json.dumps(conflist, indent=2) + "\n").encode(), 0o644)
            LOG.info("pod MTU %d in %s", mtu, self.config.conflist)
        except (OSError, ValueError, AttributeError) as e:
            LOG.warning("cannot set the pod MTU in %s: %s", self.config.conflist, e)

    def _count_peers(self, wanted: Plan) -> None:
        counts = {"direct": 0, "vxlan": 0, "waiting": 0, "failed": 0}
        for paths in wanted.paths.values():
            for p in paths:
                counts["failed" if p.cidr in self.failed else p.via] += 1
        for state, count in counts.items():
            self.metrics.peers.labels(state).set(count)

    # ---------------------------------------------------------------- files

    def _owns_state(self) -> bool:
        """Whether this agent holds the state file's lock: during a rolling update the old agent keeps it
        (and writes the state) until it exits; both make the same entries meanwhile."""
        if self._holder is None and self.config.state_file:
            try:
                self._holder = lock.hold(lock.lock_path_of(self.config.state_file))
            except BlockingIOError:
                return False
        return self._holder is not None

    def _write_state(self, wanted: Plan, source: str) -> None:
        if not self._owns_state():
            return
        peers = []
        for name, paths in wanted.paths.items():
            peers.append({"node": name, "podCIDRs": [str(p.cidr) for p in paths], "paths": [
                {"cidr": str(p.cidr), "via": p.via, "gateway": p.gateway,
                 "state": (f"waiting: {p.reason}" if p.via == WAITING else
                           f"failed: {self.failed[p.cidr]}" if p.cidr in self.failed else "ok")}
                for p in paths]})
        state = {
            "pid": os.getpid(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "node": self.config.node_name,
            "waiting": wanted.waiting,
            "vxlan": None if wanted.vxlan is None else {
                "device": wanted.vxlan.name, "vni": wanted.vxlan.vni, "port": wanted.vxlan.port,
                "mac": wanted.vxlan.mac, "local": str(wanted.vxlan.local), "uplink": wanted.vxlan.uplink,
                "mtu": wanted.vxlan.mtu, "inUse": any(p.via == VXLAN for ps in wanted.paths.values() for p in ps)},
            "podMtu": wanted.pod_mtu,
            "api": {"source": source or "none", "resourceVersion": self.watch.resource_version,
                    "lastError": self.watch.last_error, "watchRestarts": self.watch_restarts},
            "lastSync": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_sync)),
            "repairs": self.repairs,
            "forwardAccepts": self.forward_accepts,
            "problems": dict(self.problems),
            "peers": peers,
        }
        try:
            files.replace_file(self.config.state_file, json.dumps(state, indent=2).encode(), 0o644)
        except OSError as e:
            LOG.warning("cannot write %s: %s", self.config.state_file, e)

    def _save_cache(self, nodes: dict[str, NodeView]) -> None:
        """The nodes as the API last said (a list, and every watch event since that routing reads)."""
        if not self.config.cache_file:
            return
        items = [n.to_json() for n in nodes.values()]
        try:
            files.replace_file(self.config.cache_file, json.dumps({"items": items}).encode(), 0o600, durable=True)
            self._cached = nodes
        except OSError as e:
            LOG.warning("cannot write %s: %s", self.config.cache_file, e)

    def _load_cache(self) -> None:
        """The last list, from before a restart or a reboot: what is missing is made again at once, even with
        the API away; nothing is removed on its word."""
        if not self.config.cache_file:
            return
        try:
            with open(self.config.cache_file, encoding="utf-8") as f:
                items = json.load(f)["items"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        with self._lock:
            if not self.source:
                self.nodes = {n.name: n for n in map(NodeView.from_api, items) if n.name}
                self.source = "cache"
        self._wake.set()
