"""What pycni has on this node: networks, address pools, attachments, hostPorts, shaping, kernel support.

Used by the operator's `pycni status` and `pycni gc`; never on a plugin's hot path.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import asdict, dataclass, field

from pycni.host import nft
from pycni.node.runtime import ConfList, Runtime
from pycni.plugins.portmap import layout as hostport


@dataclass
class Pool:
    network: str
    data_dir: str
    ranges: list[str]
    used: int
    free: int


@dataclass
class AttachmentInfo:
    network: str
    container_id: str
    ifname: str
    netns: str
    alive: bool
    ips: list[str] = field(default_factory=list)
    host_ports: list[str] = field(default_factory=list)
    bandwidth: dict = field(default_factory=dict)


def conflists(conf_dir: str) -> list[tuple[str, ConfList]]:
    found = []
    for path in sorted(glob.glob(os.path.join(conf_dir, "*.conflist"))):
        try:
            found.append((path, ConfList.load(path)))
        except Exception:  # noqa: BLE001 - a broken file is reported, not fatal
            continue
    return found


def _host_local_usage(conflist: ConfList):
    """(data dir, [(range set, used, free)]) of each host-local IPAM section of a conflist."""
    from pycni.plugins.host_local import usage

    return [usage(plugin["ipam"], conflist.name) for plugin in conflist.plugins
            if (plugin.get("ipam") or {}).get("type") == "host-local"]


def pools(conflist: ConfList) -> list[Pool]:
    return [Pool(conflist.name, data_dir, [str(s) for s, _, _ in sets], sum(used for _, used, _ in sets),
                 sum(free for _, _, free in sets)) for data_dir, sets in _host_local_usage(conflist)]


@dataclass(frozen=True)
class RangeSetUsage:
    network: str
    range_set: str
    used: int
    free: int


def range_set_usage(conflist: ConfList) -> list[RangeSetUsage]:
    """Used and free addresses of every host-local range-set of a conflist, from the store."""
    return [RangeSetUsage(conflist.name, str(s), used, free)
            for _, sets in _host_local_usage(conflist) for s, used, free in sets]


def is_netns(path: str) -> bool:
    from pycni.host.netns import NetnsGone, open_netns

    if not path:
        return False
    try:
        os.close(open_netns(path))
    except (NetnsGone, Exception):  # noqa: BLE001
        return False
    return True


def attachments(runtime: Runtime, conflist: ConfList) -> list[AttachmentInfo]:
    out = []
    for entry in runtime.cached_attachments(conflist.name):
        result = entry.get("result") or {}
        caps = entry.get("capabilityArgs") or {}
        ports = [f"{p.get('hostIP') or '*'}:{p['hostPort']}->{p['containerPort']}/{p.get('protocol', 'tcp')}"
                 for p in caps.get("portMappings") or []]
        netns = cached_netns(entry)
        out.append(AttachmentInfo(conflist.name, entry["containerId"], entry["ifName"], netns,
                                  is_netns(netns) if netns else True, [ip["address"] for ip in result.get("ips", [])],
                                  ports, caps.get("bandwidth") or {}))
    return out


def cached_netns(entry: dict) -> str:
    """The pod's network namespace path a libcni cache entry records: its own "netns" (libcni 1.2 and
    `pycni run`), else the sandbox of the result's interface (older libcni: containerd 1.6/1.7, CRI-O's);
    "" when neither says, and such an attachment is kept: unknown is not gone."""
    if entry.get("netns"):
        return entry["netns"]
    interfaces = (entry.get("result") or {}).get("interfaces") or []
    sandboxes = [i.get("sandbox", "") for i in interfaces if i.get("sandbox")]
    named = [i["sandbox"] for i in interfaces if i.get("sandbox") and i.get("name") == entry.get("ifName")]
    return (named or sandboxes or [""])[0]


def host_port_elements() -> int:
    if not hostport.table_exists():
        return 0
    names = [item["map"]["name"] for item in nft.run([{"list": {"maps": {"family": "inet"}}}]).get("nftables", [])
             if "map" in item and item["map"]["table"] == hostport.TABLE]
    return sum(len(nft.set_elements(hostport.FAMILY, hostport.TABLE, n)) for n in names)


# Runtimes that program hostPorts themselves and pass no portMappings to CNI: CRI-O's nftables hostport
# manager (its tables `ip crio-hostports` and `ip6 crio-hostports`; maps from [hostIP .] protocol . port to
# podIP . podPort, each element commented with a hash of its sandbox).
RUNTIME_HOSTPORT_TABLES = (("CRI-O", "ip", "crio-hostports"), ("CRI-O", "ip6", "crio-hostports"))


@dataclass(frozen=True, kw_only=True)
class RuntimeHostPort:
    """A hostPort the container runtime programmed itself (not portmap's)."""

    runtime: str
    table: str  # "ip crio-hostports"
    host_ip: str  # "" for every address of the node
    protocol: str
    host_port: int
    pod_ip: str
    pod_port: int

    def __str__(self) -> str:
        host = self.host_ip or "*"
        if ":" in host:
            host = f"[{host}]"
        pod = f"[{self.pod_ip}]" if ":" in self.pod_ip else self.pod_ip
        return f"{host}:{self.host_port}/{self.protocol} -> {pod}:{self.pod_port}"


def runtime_host_ports() -> list[RuntimeHostPort]:
    """The hostPorts a runtime keeps in its own nftables tables (CRI-O), read only."""
    found = []
    for runtime, family, table in RUNTIME_HOSTPORT_TABLES:
        for name, with_host_ip in (("hostports", False), ("hostipports", True)):
            for key, value, _ in nft.map_entries(family, table, name):
                keys = key.get("concat") if isinstance(key, dict) else None
                values = value.get("concat") if isinstance(value, dict) else None
                if not keys or not values or len(keys) != (3 if with_host_ip else 2) or len(values) != 2:
                    continue
                host_ip = str(keys[0]) if with_host_ip else ""
                protocol, port = keys[-2], keys[-1]
                found.append(RuntimeHostPort(runtime=runtime, table=f"{family} {table}", host_ip=host_ip,
                                             protocol=str(protocol), host_port=int(port), pod_ip=str(values[0]),
                                             pod_port=int(values[1])))
    return found


def runtime_programming_host_ports() -> str:
    """The table where the node's runtime keeps the hostPorts it programs itself ("" when none does)."""
    for runtime, family, table in RUNTIME_HOSTPORT_TABLES:
        if nft.chain_exists(family, table, "hostports"):
            return f"{runtime} (nftables table {family} {table})"
    return ""


def shaping() -> list[dict]:
    from pycni.host import netlink
    from pycni.plugins.bandwidth import shaper

    out = []
    with netlink.session() as nl:
        shaped = shaper.installed_on_every_link(nl)
        for link in nl.links():
            state = shaped.get(link.index)
            if state is not None and state.bucket is not None:
                out.append({"link": link.name, "kind": link.kind, "rate_bits": state.bucket.rate * 8,
                            "queue": state.queue, "limit_bytes": state.bucket.limit})
    return out


def device_holdings(pod_resources_socket: str) -> dict:
    """From the kubelet's PodResources, when its socket exists: the allocatable devices per resource and
    which pod holds which (empty when there is no kubelet here)."""
    if not os.path.exists(pod_resources_socket):
        return {}
    try:
        from pycni.kubelet.podresources import PodResourcesClient, PodResourcesError, held_devices
    except ImportError:
        return {"error": "grpcio is not installed (pip install 'pycni[devices]')"}
    try:
        held = [{"namespace": h.namespace, "pod": h.pod, "container": h.container, "resource": h.resource_name,
                 "devices": list(h.device_ids)} for h in held_devices(pod_resources_socket)]
        with PodResourcesClient(pod_resources_socket) as client:
            return {"allocatable": client.allocatable(), "held": held}
    except PodResourcesError as e:
        return {"error": str(e)}


def daemon_state_of(path: str) -> dict | None:
    """The state a daemon keeps for `status` (`pycni device-plugin`: its resources, their devices, what each
    keeps back and why; `pycni routes`: its peers), with `alive` (whether the daemon that wrote it still
    runs: it holds the lock beside the file while it lives) and `ageSeconds` (since it was written); None
    when there is none, or it cannot be read."""
    import calendar
    import time

    from pycni.host import lock

    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    state["alive"] = not lock.abandoned(lock.lock_path_of(path))
    try:
        state["ageSeconds"] = round(time.time() - calendar.timegm(time.strptime(state["updated"],
                                                                                "%Y-%m-%dT%H:%M:%SZ")))
    except (KeyError, TypeError, ValueError):
        state["ageSeconds"] = None
    return state


def shaped_pod_count() -> int:
    """Pods the bandwidth plugin shapes: host veths with a token bucket or an ingress redirect to an ifb."""
    from pycni.host import netlink
    from pycni.plugins.bandwidth import shaper

    with netlink.session() as nl:
        shaped = shaper.installed_on_every_link(nl)
        return sum(1 for link in nl.links() if link.kind == "veth" and link.index in shaped and (
            shaped[link.index].bucket is not None or shaped[link.index].has_ingress))


PROBE_SECONDS = 10.0


def kernel_support() -> dict[str, bool]:
    """Probe, in a throwaway network namespace of a child process, for what the plugins need; "fq_codel"
    says which bulk queue the bandwidth plugin's shaper gets (fq_codel, else a short bfifo).

    The child writes only to its pipe (its stdout and stderr are /dev/null, so it never holds a caller's
    pipes open), is given PROBE_SECONDS, and is killed and reaped whatever happens here, a Ctrl-C included:
    `pycni status --watch` interrupted during the probe exits at once."""
    import json
    import select
    import signal

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a private network namespace, gone when the child exits
        try:
            os.close(read_fd)
            quiet = os.open(os.devnull, os.O_RDWR)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            found = _probe_in_private_namespace()
            os.write(write_fd, json.dumps(found).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    data = b""
    try:
        deadline = time.monotonic() + PROBE_SECONDS
        while (left := deadline - time.monotonic()) > 0 and select.select([read_fd], [], [], left)[0]:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_fd)
        try:
            os.kill(pid, signal.SIGKILL)  # done already, or stuck: either way gone
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    try:
        found = json.loads(data or b"{}")
    except ValueError:
        found = {}
    found["bridge-nf-call-iptables"] = os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables")
    return found


def _probe_in_private_namespace() -> dict[str, bool]:
    import ctypes

    found = {"netns": False, "bridge": False, "veth": False, "ifb": False, "tbf": False, "htb": False,
             "fq_codel": False, "nftables": False}
    try:
        from pycni.host.netns import CLONE_NEWNET

        if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
            return found
        found["netns"] = True
        from pycni.host import netlink, tc
        from pycni.plugins.bandwidth import shaper

        with netlink.session() as nl:
            for kind, key in (("bridge", "bridge"), ("ifb", "ifb")):
                try:
                    nl.add_link(f"probe{kind}", kind)
                    found[key] = True
                except Exception:  # noqa: BLE001
                    pass
            try:
                nl.add_veth("probeveth", "probepeer")
                found["veth"] = True
                bucket = shaper.TokenBucket.from_bits(1_000_000, 100_000, 1500)
                queue = shaper.shape(nl, nl.link_index("probeveth"), bucket)
                found["htb"], found["fq_codel"] = True, queue == "fq_codel"
                tc.add_tbf(nl, nl.link_index("probepeer"), shaper.ROOT_HANDLE, tc.TC_H_ROOT, rate=125000, burst=2000,
                           limit=5000)
                found["tbf"] = True  # the bulk class's segmenter
            except Exception:  # noqa: BLE001
                pass
        found["nftables"] = nft.try_run([{"list": {"tables": {}}}])
    except Exception:  # noqa: BLE001
        pass
    return found


def snapshot(runtime: Runtime, conf_dir: str) -> dict:
    networks = []
    for path, conflist in conflists(conf_dir):
        networks.append({"name": conflist.name, "file": path,
                         "plugins": [p.get("type") for p in conflist.plugins],
                         "pools": [asdict(p) for p in pools(conflist)],
                         "attachments": [asdict(a) for a in attachments(runtime, conflist)]})
    return {"networks": networks, "hostPortEntries": host_port_elements(),
            "runtimeHostPorts": [{**asdict(p), "mapping": str(p)} for p in runtime_host_ports()],
            "shaping": shaping()}


class NodeStateCollector:
    """A Prometheus collector of the node's state, read when scraped (the service's metrics carry it)."""

    def __init__(self, conf_dir: str) -> None:
        self.conf_dir = conf_dir

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        pools = GaugeMetricFamily("pycni_ipam_addresses", "Addresses of a host-local range-set, by state "
                                  "(used, free), read from the store.", labels=["network", "range_set", "state"])
        for _, conflist in conflists(self.conf_dir):
            for usage in range_set_usage(conflist):
                pools.add_metric([usage.network, usage.range_set, "used"], usage.used)
                pools.add_metric([usage.network, usage.range_set, "free"], usage.free)
        yield pools
        yield GaugeMetricFamily("pycni_hostport_mappings", "hostPort mappings in portmap's nftables maps.",
                                value=host_port_elements())
        yield GaugeMetricFamily("pycni_shaped_pods", "Pods whose traffic the bandwidth plugin shapes.",
                                value=shaped_pod_count())


def dra_claims(checkpoint: str) -> dict:
    """The claims `pycni dra` prepared on this node, from its checkpoint: `{"claims": [{"namespace", "name",
    "uid", "devices": [{"pool", "device"}]}]}`, empty without one, `{"error": ...}` for one it cannot read."""
    from pycni.services.dra.checkpoint import Checkpoint

    if not checkpoint:
        return {"claims": []}
    try:
        prepared = Checkpoint(checkpoint).claims
    except ValueError as e:
        return {"claims": [], "error": str(e)}
    return {"claims": [{"namespace": claim.namespace, "name": claim.name, "uid": uid,
                        "devices": [{"pool": d.pool, "device": d.device} for d in devices]}
                       for uid, (claim, devices) in sorted(prepared.items())]}
