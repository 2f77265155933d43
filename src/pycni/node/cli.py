"""`pycni`: the node operator's command (click). Never on a plugin's hot path."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import click

from pycni import __version__
from pycni.kubelet import PODRESOURCES_SOCKET
from pycni.services.apiserver import SERVICE_ACCOUNT_DIR
from pycni.services.cni import DEFAULT_SOCKET
from pycni.services.devices import paths as device_paths
from pycni.services.dra.names import DRIVER_NAME
from pycni.services.dra.paths import REGISTRY_DIR, PluginPaths
from pycni.services.routes import VXLAN_DEVICE, VXLAN_PORT, VXLAN_VNI

DRA_PATHS = PluginPaths.for_driver(DRIVER_NAME)  # `pycni dra`'s default socket and checkpoint

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CACHE_DIR = "/var/lib/cni"


def _emit(as_json: bool, data, human) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        human(data)


def _fail(as_json: bool, message: str, error: dict | None = None) -> None:
    if as_json:
        click.echo(json.dumps(error or {"error": message}, indent=2))
    else:
        click.echo(f"pycni: {message}", err=True)
    sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="pycni")
def main() -> None:
    """pycni: CNI plugins in Python, and the tools to run them on a node."""


# ------------------------------------------------------------------ install


@main.command()
@click.option("--bin-dir", default=DEFAULT_BIN_DIR, show_default=True, help="where runtimes look for CNI plugins")
@click.option("--conf-dir", default=DEFAULT_CONF_DIR, show_default=True, help="where runtimes read network configs")
@click.option("--conflist", "conflist_path", type=click.Path(exists=True, dir_okay=False),
              help="conflist template to place in --conf-dir (default: none)")
@click.option("--pod-cidr", "pod_cidrs", multiple=True, help="this node's pod CIDR; twice for dual-stack")
@click.option("--cluster-cidr", "cluster_cidrs", multiple=True,
              help="the cluster's pod CIDR: pods reach other nodes' pods there without masquerade (dual-stack: "
                   "twice, or comma-separated as kube-controller-manager's --cluster-cidr)")
@click.option("--daemon-socket", default=DEFAULT_SOCKET, show_default=True,
              help="the pycni service the plugins ask first ('none': always run standalone)")
@click.option("--call-log", default="", help="append a JSON line per standalone plugin call to this file")
@click.option("--python-launchers", is_flag=True,
              help="Python launchers even where a C compiler could build the faster compiled ones")
@click.option("--static", is_flag=True,
              help="statically linked launchers with no Python behind them (the image's: nodes need nothing)")
@click.option("--from", "launchers_from", type=click.Path(exists=True, file_okay=False),
              help="copy the prebuilt launchers in this directory (the image's) instead of writing new ones")
@click.option("--node", "node_name", default="",
              help="read this node's pod CIDRs from the API server (in a pod: its service account) "
                   "when no --pod-cidr is given")
def install(bin_dir: str, conf_dir: str, conflist_path: str | None, pod_cidrs: tuple[str, ...],
            cluster_cidrs: tuple[str, ...], daemon_socket: str, call_log: str, python_launchers: bool,
            static: bool, launchers_from: str | None, node_name: str) -> None:
    """Write one launcher per plugin type into BIN_DIR (and the conflist into CONF_DIR)."""
    from pycni.node.install import copy_launchers, install_conflist, install_launchers, node_pod_cidrs

    try:
        if launchers_from:
            written = copy_launchers(launchers_from, bin_dir)
        else:
            written = install_launchers(bin_dir, daemon_socket="" if daemon_socket == "none" else daemon_socket,
                                        call_log=os.path.abspath(call_log) if call_log else "",
                                        compiled=not python_launchers, static=static)
        for path in written:
            click.echo(f"installed {path}")
        if conflist_path:
            cidrs = list(pod_cidrs) or (node_pod_cidrs(node_name) if node_name else [])
            cluster = [cidr.strip() for given in cluster_cidrs for cidr in given.split(",") if cidr.strip()]
            click.echo(f"installed {install_conflist(conflist_path, conf_dir, cidrs, cluster)}")
    except (OSError, ValueError) as e:
        _fail(False, str(e))


# ------------------------------------------------------------------ run


def parse_port(spec: str) -> dict:
    """`8080:80/tcp@10.0.0.1` (protocol and host IP optional) as a portMappings entry."""
    rest, _, host_ip = spec.partition("@")
    ports, _, protocol = rest.partition("/")
    host, sep, container = ports.partition(":")
    try:
        mapping = {"hostPort": int(host), "containerPort": int(container if sep else host),
                   "protocol": (protocol or "tcp").lower()}
    except ValueError:
        raise click.BadParameter(f"{spec!r}: expected HOSTPORT:CONTAINERPORT[/tcp|udp|sctp][@HOSTIP]") from None
    if host_ip:
        mapping["hostIP"] = host_ip
    return mapping


def _conflist_path(conf: str | None, conf_dir: str) -> str:
    if conf:
        return conf
    from pycni.node.nodeinfo import conflists

    found = conflists(conf_dir)
    if not found:
        raise click.UsageError(f"no .conflist in {conf_dir}; give one with --conf")
    return found[0][0]  # as runtimes do: the first in lexical order


def _describe_result(result: dict) -> None:
    ifaces = result.get("interfaces", [])
    for ip in result.get("ips", []):
        where = ifaces[ip["interface"]]["name"] if "interface" in ip and ip["interface"] < len(ifaces) else "?"
        click.echo(f"  {where}: {ip['address']}" + (f" via gateway {ip['gateway']}" if ip.get("gateway") else ""))
    for iface in ifaces:
        side = f"in {iface['sandbox']}" if iface.get("sandbox") else "on the node"
        click.echo(f"  interface {iface['name']} {iface.get('mac', '')} {side}")
    for route in result.get("routes", []):
        click.echo(f"  route {route['dst']} via {route.get('gw', 'link')}")


@main.command()
@click.argument("verb", type=click.Choice(["add", "check", "del", "gc", "status"]))
@click.option("--conf", help="conflist file (default: the first in --conf-dir)")
@click.option("--conf-dir", default=DEFAULT_CONF_DIR, show_default=True)
@click.option("--bin-dir", default=DEFAULT_BIN_DIR, show_default=True, help="CNI_PATH, ':'-separated")
@click.option("--cache-dir", default=DEFAULT_CACHE_DIR, show_default=True, help="libcni-format result cache")
@click.option("--netns", default="", help="the pod's network namespace path")
@click.option("--container-id", default="", help="the pod sandbox ID")
@click.option("--ifname", default="eth0", show_default=True)
@click.option("--port", "ports", multiple=True, help="hostPort mapping HOST:CONTAINER[/PROTO][@HOSTIP]")
@click.option("--annotation", "annotations", multiple=True,
              help="pod annotation KEY=VALUE, e.g. kubernetes.io/ingress-bandwidth=10M")
@click.option("--ip", "ips", multiple=True, help="request this IP (CNI_ARGS IP=)")
@click.option("--mac", default="", help="request this MAC for the pod interface")
@click.option("--device-id", default="", help="the deviceID capability (the device a device plugin allocated)")
@click.option("--valid", "valid", multiple=True, help="gc: CONTAINERID/IFNAME still in use (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def run(verb, conf, conf_dir, bin_dir, cache_dir, netns, container_id, ifname, ports, annotations, ips, mac,
        device_id, valid, as_json) -> None:
    """Drive a conflist against a network namespace exactly as a container runtime does."""
    from pycni.node.quantity import bandwidth_from_annotations
    from pycni.node.runtime import Attachment, ConfList, PluginFailed, Runtime

    try:
        conflist = ConfList.load(_conflist_path(conf, conf_dir))
    except Exception as e:  # noqa: BLE001
        _fail(as_json, f"cannot load conflist: {e}")
    runtime = Runtime(bin_dir.split(":"), cache_dir)
    capability_args: dict = {}
    if ports:
        capability_args["portMappings"] = [parse_port(p) for p in ports]
    try:
        bandwidth = bandwidth_from_annotations(dict(a.split("=", 1) for a in annotations if "=" in a))
    except ValueError as e:
        _fail(as_json, str(e))
    if bandwidth:
        capability_args["bandwidth"] = bandwidth
    if mac:
        capability_args["mac"] = mac
    if device_id:
        capability_args["deviceID"] = device_id
    cni_args = [("IgnoreUnknown", "1")] + [("IP", ",".join(ips))] * bool(ips) + [("MAC", mac)] * bool(mac)
    attachment = Attachment(container_id, netns, ifname, cni_args, capability_args)
    if verb in ("add", "check", "del") and not container_id:
        raise click.UsageError("--container-id is required")
    try:
        if verb == "add":
            result = runtime.add(conflist, attachment)
            def describe(r: dict) -> None:
                click.echo(f"{conflist.name}: {container_id}/{ifname} attached")
                _describe_result(r)

            _emit(as_json, result, describe)
        elif verb == "check":
            runtime.check(conflist, attachment)
            _emit(as_json, {"check": "ok"}, lambda _: click.echo(f"{conflist.name}: {container_id}/{ifname} ok"))
        elif verb == "del":
            runtime.delete(conflist, attachment)
            _emit(as_json, {"del": "ok"}, lambda _: click.echo(f"{conflist.name}: {container_id}/{ifname} removed"))
        elif verb == "gc":
            pairs = [tuple(v.split("/", 1)) for v in valid]
            runtime.gc(conflist, pairs)
            _emit(as_json, {"gc": "ok", "valid": [list(p) for p in pairs]},
                  lambda _: click.echo(f"{conflist.name}: garbage collected, {len(pairs)} attachments kept"))
        else:
            runtime.status(conflist)
            _emit(as_json, {"status": "ok"}, lambda _: click.echo(f"{conflist.name}: ready"))
    except PluginFailed as e:
        _fail(as_json, f"{e.plugin_type} {e.command} failed: {e.msg}" + (f" ({e.details})" if e.details else "")
              + f" [CNI error {e.code}]", {"code": e.code, "msg": e.msg, "details": e.details,
                                           "plugin": e.plugin_type, "command": e.command})
    except Exception as e:  # noqa: BLE001
        _fail(as_json, str(e))


# ------------------------------------------------------------------ status / gc


@main.command()
@click.option("--conf-dir", default=DEFAULT_CONF_DIR, show_default=True)
@click.option("--cache-dir", default=DEFAULT_CACHE_DIR, show_default=True)
@click.option("--pod-resources-socket", default=PODRESOURCES_SOCKET, show_default=True,
              help="the kubelet's PodResources: which pod holds which device")
@click.option("--device-plugin-state", default=device_paths.STATE_FILE, show_default=True,
              help="the state file `pycni device-plugin` keeps")
@click.option("--routes-state", default="/run/pycni/routes.json", show_default=True,
              help="the state file `pycni routes` keeps")
@click.option("--dra-checkpoint", default=DRA_PATHS.checkpoint, show_default=True,
              help="the claims `pycni dra` prepared")
@click.option("--json", "as_json", is_flag=True, help="the stable JSON shape documented in the README")
@click.option("--watch", "interval", type=float, default=0, help="show it again every INTERVAL seconds (Ctrl-C ends)")
def status(conf_dir: str, cache_dir: str, pod_resources_socket: str, device_plugin_state: str, routes_state: str,
           dra_checkpoint: str, as_json: bool, interval: float) -> None:
    """Networks and address pools, attachments, hostPorts, shaping, devices, and kernel support on this node."""
    from pycni.node.nodeinfo import kernel_support

    if interval > 0:
        import signal

        signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends a watch as Ctrl-C does
    try:
        kernel = kernel_support()

        def collect() -> dict:
            return _status_data(conf_dir, cache_dir, pod_resources_socket, device_plugin_state, routes_state,
                                dra_checkpoint, kernel)

        if interval <= 0:
            _show_status(collect(), conf_dir, as_json)
            return
        _watch_status(collect, lambda data: _show_status(data, conf_dir, as_json), interval, as_json)
    except KeyboardInterrupt:
        pass


SLOW_REFRESH_SECONDS = 2.0  # a refresh taking longer is said so on stderr (the kernel is slow to answer)


def _watch_status(collect, show, interval: float, as_json: bool) -> None:
    """Show `collect()` every `interval` seconds until Ctrl-C or SIGTERM, which end it at once whatever the
    kernel is doing: each refresh reads the kernel in a thread of its own (a read can wait seconds on the
    kernel's locks on a node busy tearing namespaces down), while this thread only waits and prints."""
    import queue
    import threading
    import time

    try:
        while True:
            answers: queue.Queue = queue.Queue()
            started = time.monotonic()
            threading.Thread(target=_answer_into, args=(answers, collect), name="refresh", daemon=True).start()
            said = False
            while True:
                try:
                    data = answers.get(timeout=0.25)
                    break
                except queue.Empty:
                    if not said and time.monotonic() - started >= SLOW_REFRESH_SECONDS:
                        click.echo(f"pycni status: still reading the node after {SLOW_REFRESH_SECONDS:g} s (the "
                                   "kernel is slow to answer); Ctrl-C ends", err=True)
                        said = True
            if isinstance(data, BaseException):
                raise data
            if not as_json:
                click.clear()
                click.echo(f"pycni status, every {interval:g}s ({time.strftime('%H:%M:%S')}"
                           f"{f', read in {time.monotonic() - started:.1f} s' if said else ''}); Ctrl-C ends")
            show(data)
            time.sleep(interval)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # a refresh stuck in the kernel must not hold the exit


def _answer_into(answers, collect) -> None:
    """Put what `collect()` returns, or the exception it raised, into `answers` (from the refresh thread to the
    printer)."""
    try:
        answers.put(collect())
    except Exception as e:  # noqa: BLE001
        answers.put(e)


def _status_data(conf_dir: str, cache_dir: str, pod_resources_socket: str, device_plugin_state: str,
                 routes_state: str, dra_checkpoint: str, kernel: dict) -> dict:
    from pycni.node.nodeinfo import daemon_state_of, device_holdings, dra_claims, snapshot
    from pycni.node.runtime import Runtime

    data = snapshot(Runtime([], cache_dir), conf_dir)
    data["devices"] = device_holdings(pod_resources_socket)
    data["devicePlugin"] = daemon_state_of(device_plugin_state)
    data["routes"] = daemon_state_of(routes_state)
    data["draClaims"] = dra_claims(dra_checkpoint)
    data["kernel"] = {k: v for k, v in kernel.items() if k != "fq_codel"}
    data["shaperQueue"] = "fq_codel" if kernel.get("fq_codel") else "bfifo"
    return data


def _show_status(data: dict, conf_dir: str, as_json: bool) -> None:
    def human(d):
        if not d["networks"]:
            click.echo(f"no networks in {conf_dir}")
        for net in d["networks"]:
            click.echo(f"network {net['name']} ({' -> '.join(net['plugins'])}) from {net['file']}")
            for pool in net["pools"]:
                click.echo(f"  pool {', '.join(pool['ranges'])}: {pool['used']} used, {pool['free']} free "
                           f"({pool['data_dir']})")
            for a in net["attachments"]:
                state = "" if a["alive"] else "  [netns gone: `pycni gc` reclaims it]"
                extra = "".join([f" ports {', '.join(a['host_ports'])}" if a["host_ports"] else "",
                                 _describe_bandwidth(a["bandwidth"])])
                click.echo(f"  pod {a['container_id']}/{a['ifname']} {' '.join(a['ips'])}{extra}{state}")
        click.echo(f"hostPort entries: {d['hostPortEntries']}")
        by_table: dict[str, list[str]] = {}
        for p in d.get("runtimeHostPorts") or []:
            by_table.setdefault(f"{p['runtime']} (nftables table {p['table']})", []).append(p["mapping"])
        for table, mappings in by_table.items():
            click.echo(f"hostPorts programmed by the runtime, {table}: {len(mappings)}")
            for mapping in mappings:
                click.echo(f"  {mapping}")
        for s in d["shaping"]:
            click.echo(f"shaping: {s['link']} ({s['kind']}) at {s['rate_bits'] / 1e6:.2f} Mbit/s, {s['queue']} queue"
                       + (f" of {s['limit_bytes']} bytes" if s["queue"] == "bfifo" else ""))
        click.echo("shaper queue on this kernel: " + ("fq_codel" if d["shaperQueue"] == "fq_codel" else
                                                      "bfifo sized by queueLatencyMs (no fq_codel in this kernel)"))
        devices = d["devices"]
        if devices.get("error"):
            click.echo(f"devices: {devices['error']}")
        for resource, ids in sorted(devices.get("allocatable", {}).items()):
            click.echo(f"devices {resource}: allocatable {', '.join(ids) or 'none'}")
        for held in devices.get("held", []):
            click.echo(f"  {held['resource']} {', '.join(held['devices'])} held by pod "
                       f"{held['namespace']}/{held['pod']} container {held['container']}")
        plugin_state = d["devicePlugin"] or {}
        if plugin_state and not plugin_state.get("alive"):
            click.echo(f"device plugin: NOT RUNNING (pid {plugin_state.get('pid')} is gone); what it last wrote, "
                       f"{_age(plugin_state.get('ageSeconds'))} ago, is not served:")
        for resource in plugin_state.get("resources", []):
            healthy = sum(1 for h in resource["devices"].values() if h == "Healthy")
            served = "" if plugin_state.get("alive") else " (not served)"
            click.echo(f"device plugin {resource['name']}: {len(resource['devices'])} devices, {healthy} healthy"
                       f"{served}")
            for device, reason in sorted(resource["excluded"].items()):
                click.echo(f"  not offered: {device}: {reason}")
        _show_dra_claims(d["draClaims"])
        _show_routes(d["routes"])
        missing = [k for k, ok in d["kernel"].items() if not ok]
        click.echo("kernel: " + ("everything pycni needs is there" if not missing else f"missing {', '.join(missing)}"))

    _emit(as_json, data, human)


def _show_dra_claims(claims: dict) -> None:
    if claims.get("error"):
        click.echo(f"DRA claims: {claims['error']}")
    for claim in claims.get("claims", []):
        devices = ", ".join(f"{d['pool']}/{d['device']}" for d in claim["devices"]) or "no device of this driver"
        click.echo(f"DRA claim {claim['namespace']}/{claim['name']} ({claim['uid']}) prepared: {devices}")


def _show_routes(routes: dict | None) -> None:
    """What `pycni routes` last wrote: how each other node's pod CIDRs are reached, and whether it runs."""
    if not routes:
        return
    if not routes.get("alive"):
        click.echo(f"routes agent: NOT RUNNING (pid {routes.get('pid')} is gone); the routes it made stay, "
                   f"nothing keeps them right; what it last wrote, {_age(routes.get('ageSeconds'))} ago:")
    api = routes.get("api") or {}
    vxlan = routes.get("vxlan") or {}
    click.echo(f"routes agent on node {routes.get('node')}: nodes from {api.get('source')} "
               f"(resourceVersion {api.get('resourceVersion') or '-'}, {api.get('watchRestarts', 0)} watch restarts"
               f"{', API: ' + api['lastError'] if api.get('lastError') else ''}), last sync {routes.get('lastSync')}, "
               f"{routes.get('repairs', 0)} repairs")
    if routes.get("waiting"):
        click.echo(f"  waiting: {routes['waiting']}")
    if vxlan:
        unused = "" if vxlan.get("inUse") else " (no peer uses it)"
        click.echo(f"  vxlan {vxlan.get('device')} VNI {vxlan.get('vni')} UDP {vxlan.get('port')} "
                   f"MAC {vxlan.get('mac')} on {vxlan.get('uplink')}, MTU {vxlan.get('mtu')}{unused}; "
                   f"pods' MTU {routes.get('podMtu')}")
    for rule in routes.get("forwardAccepts") or []:
        click.echo(f"  FORWARD policy drop: {rule}")
    for what, problem in (routes.get("problems") or {}).items():
        click.echo(f"  problem ({what}): {problem}")
    for peer in routes.get("peers") or []:
        paths = peer.get("paths") or []
        if not paths:
            click.echo(f"  peer {peer.get('node')}: no pod CIDR yet")
        for path in paths:
            via = f" via {path['gateway']}" if path.get("gateway") else ""
            click.echo(f"  peer {peer.get('node')}: {path['cidr']} by {path['via']}{via} ({path['state']})")


def _age(seconds: int | None) -> str:
    """`3 s`, `45 min`, `2 h`: how long ago something was written."""
    if seconds is None:
        return "an unknown time"
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"


def _describe_bandwidth(bandwidth: dict) -> str:
    limits = [f"{direction} {bandwidth[f'{direction}Rate'] / 1e6:g} Mbit/s" for direction in ("ingress", "egress")
              if bandwidth.get(f"{direction}Rate")]
    return f" shaped ({', '.join(limits)})" if limits else ""


@main.command()
@click.option("--conf-dir", default=DEFAULT_CONF_DIR, show_default=True)
@click.option("--bin-dir", default=DEFAULT_BIN_DIR, show_default=True)
@click.option("--cache-dir", default=DEFAULT_CACHE_DIR, show_default=True)
@click.option("--valid", "valid", multiple=True,
              help="CONTAINERID/IFNAME still in use; without it, attachments whose netns still exists are kept")
@click.option("--json", "as_json", is_flag=True)
@click.option("--every", "every", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="run again every SECONDS until SIGTERM or Ctrl-C, which end it at once (a DaemonSet's container)")
def gc(conf_dir: str, bin_dir: str, cache_dir: str, valid: tuple[str, ...], as_json: bool,
       every: float | None) -> None:
    """Reclaim what pods that are gone left behind: addresses, hostPorts, masquerade entries, ifb devices, veths."""
    if every is None:
        if not _gc_once(conf_dir, bin_dir, cache_dir, valid, as_json):
            sys.exit(1)
        return
    import signal
    import time

    def end(signum, frame) -> None:  # PID 1 of a container ignores SIGTERM unless it has a handler
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    while True:
        _gc_once(conf_dir, bin_dir, cache_dir, valid, as_json)
        sys.stdout.flush()
        time.sleep(every)


def _gc_once(conf_dir: str, bin_dir: str, cache_dir: str, valid: tuple[str, ...], as_json: bool) -> bool:
    """One GC pass over every network, reported; whether every network's GC succeeded."""
    from pycni.node.nodeinfo import attachments, conflists, snapshot
    from pycni.node.runtime import Runtime

    runtime = Runtime(bin_dir.split(":"), cache_dir)
    before = snapshot(runtime, conf_dir)
    report = []
    for _, conflist in conflists(conf_dir):
        if valid:
            keep = [(v.partition("/")[0], v.partition("/")[2]) for v in valid]
        else:
            keep = [(a.container_id, a.ifname) for a in attachments(runtime, conflist) if a.alive]
        try:
            runtime.gc(conflist, keep)
            report.append({"network": conflist.name, "kept": [list(k) for k in keep], "ok": True})
        except Exception as e:  # noqa: BLE001
            report.append({"network": conflist.name, "kept": [list(k) for k in keep], "ok": False, "error": str(e)})
    after = snapshot(runtime, conf_dir)
    def used(snap):
        return {n["name"]: sum(p["used"] for p in n["pools"]) for n in snap["networks"]}

    used_before, used_after = used(before), used(after)
    for entry in report:
        entry["addresses_released"] = used_before.get(entry["network"], 0) - used_after.get(entry["network"], 0)
    data = {"networks": report, "hostPortEntriesRemoved": before["hostPortEntries"] - after["hostPortEntries"],
            "shapedLinksRemoved": len(before["shaping"]) - len(after["shaping"])}

    def human(d):
        for n in d["networks"]:
            status = "ok" if n["ok"] else f"failed: {n['error']}"
            click.echo(f"{n['network']}: kept {len(n['kept'])} attachments, released {n['addresses_released']} "
                       f"addresses ({status})")
        click.echo(f"hostPort entries removed: {d['hostPortEntriesRemoved']}; "
                   f"shaped links removed: {d['shapedLinksRemoved']}")

    _emit(as_json, data, human)
    return all(n["ok"] for n in report)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--cni-bin-dir", "bin_dirs", multiple=True,
              help="where the runtime finds plugins (repeatable; default: $CNI_PATH, else /opt/cni/bin)")
@click.option("--strict", is_flag=True, help="warnings (unknown keys, unused capabilities) fail too")
@click.option("--json", "as_json", is_flag=True, help="the findings as JSON")
def validate(path: str, bin_dirs: tuple[str, ...], strict: bool, as_json: bool) -> None:
    """Check a conflist, a plugin config or the device plugin's config the way the node would use it.

    Errors (exit 1): what the JSON Schemas refuse, a plugin type with no executable, a cniVersion a plugin
    does not speak, overlapping ranges, a gateway outside its subnet. Warnings (exit 0, or 1 with --strict):
    keys no schema knows, with the closest known key, and capabilities that nothing reads.
    """
    from pycni.node.validate import default_bin_dirs, validate_file

    report = validate_file(path, list(bin_dirs) or default_bin_dirs())

    def human(_):
        for line in report.checked:
            click.echo(line)
        for finding in report.findings:
            click.echo(f"{finding.severity}: {finding}")
        click.echo(f"{report.file}: {report.kind}, {len(report.errors())} errors, "
                   f"{len(report.warnings())} warnings")

    _emit(as_json, report.as_dict(), human)
    sys.exit(report.exit_code(strict))


@main.command()
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True)
@click.option("--metrics-address", default="", help="serve Prometheus metrics on HOST:PORT (off by default)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="the line logged for every plugin call (stderr)")
@click.option("--conf-dir", default=DEFAULT_CONF_DIR, show_default=True, help="conflists, for the pool metrics")
@click.option("--cache-dir", default=DEFAULT_CACHE_DIR, hidden=True, help="unused; accepted so older units start")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="processes serving calls, each with its threads (default: the number of CPUs)")
@click.option("--ready-file", default="", metavar="PATH",
              help="made once the socket's path is this service's, removed at exit (a readiness probe's)")
def daemon(socket_path: str, metrics_address: str, log_format: str, conf_dir: str, cache_dir: str,
           workers: int | None, ready_file: str) -> None:
    """Serve the plugins from warm processes (the launchers in the CNI bin dir become their clients)."""
    import shutil

    from pycni.services.cni import observe
    from pycni.services.cni.server import serve

    workers = workers or len(os.sched_getaffinity(0))
    observe.setup_log(log_format)
    metrics = None
    multiprocess_dir = ""
    if metrics_address and workers > 1:
        multiprocess_dir = observe.own_counter_directory(os.path.dirname(os.path.abspath(socket_path)))
    if metrics_address:
        try:
            from pycni.node.nodeinfo import NodeStateCollector

            metrics = observe.Metrics(multiprocess_dir, (NodeStateCollector(conf_dir),))
            metrics.serve(metrics_address)
        except (ImportError, OSError, ValueError) as e:
            click.echo(f"pycni daemon: cannot serve metrics on {metrics_address!r}: {e}", err=True)
            sys.exit(2)
    def ready() -> None:
        click.echo(f"pycni {__version__} serving on {socket_path} with {workers} worker{'s' if workers > 1 else ''}"
                   + (f", metrics on {metrics_address}" if metrics else ""), err=True)
        if ready_file:
            with open(ready_file, "w") as f:
                f.write(f"{socket_path}\n")

    try:
        serve(socket_path, metrics=metrics, workers=workers, ready=ready)
    finally:
        if multiprocess_dir:
            shutil.rmtree(multiprocess_dir, ignore_errors=True)
        if ready_file and os.path.exists(ready_file):
            os.unlink(ready_file)


def _resource_options(command):
    """The options `device-plugin` and `dra` share: the resources' config and where they read the node."""
    for option in reversed((
            click.option("--config", "config_path", required=True,
                         help="the resources to offer (JSON: pycni's `resources`, the SR-IOV device plugin's "
                              "`resourceList`)"),
            click.option("--pod-resources-socket", default=PODRESOURCES_SOCKET, show_default=True,
                         help="the kubelet's PodResources socket (which pod holds which device)"),
            click.option("--sysfs-root", default="/sys", show_default=True, help="where the node's sysfs is mounted"),
            click.option("--resource-prefix", default=device_paths.SRIOV_RESOURCE_PREFIX, show_default=True,
                         help="the prefix of `resourceList` names that give none (the SR-IOV device plugin's "
                              "default)"),
            click.option("--node-ip", "node_ips", multiple=True, envvar="NODE_IP",
                         help="the kubelet's node IP: the interface holding it is never offered ($NODE_IP)"),
            click.option("--api-server", default="", envvar="KUBERNETES_SERVICE_HOST",
                         help="the API server's address: the interface toward it is never offered "
                              "($KUBERNETES_SERVICE_HOST)"),
            click.option("--device-info-dir", default=device_paths.DEVICE_INFO_DIR, show_default=True,
                         help="where device-info files for Multus are written"),
            click.option("--dev-root", default="/dev", show_default=True, help="where the node's /dev is mounted"))):
        command = option(command)
    return command


def _load_resources(command: str, config_path: str, check: bool, pod_resources_socket: str, sysfs_root: str,
                    resource_prefix: str, node_ips: tuple[str, ...], api_server: str, device_info_dir: str,
                    dev_root: str, then: Callable[[], None] = lambda: None):
    """The node's settings and the config's resources with their fingerprints, once `then()` (the command's
    own checks) has passed too. A refused config or check is one line and exit 2; with `--check`, what the
    config holds and exit 0."""
    from pycni.services.devices.config import ConfigError, Settings, load_fingerprinted
    from pycni.services.devices.model import NodeAddresses, NodePaths

    try:
        addresses = NodeAddresses(tuple(ip for value in node_ips for ip in value.split(",") if ip), api_server)
        settings = Settings(NodePaths(dev_root, sysfs_root, pod_resources_socket, addresses=addresses,
                                      device_info_dir=device_info_dir), resource_prefix)
        loaded = load_fingerprinted(config_path, settings)
        if check:
            click.echo(f"{config_path}: {len(loaded)} resources: {', '.join(r.name for r, _ in loaded)}")
            sys.exit(0)
        then()
    except (ConfigError, ValueError) as e:
        click.echo(f"pycni {command}: {e}", err=True)
        sys.exit(2)
    return settings, loaded


def _exit_now() -> None:
    """Exit 0 once the logs and output are out, without joining threads: a daemon's are all done with, but one
    may sit in a read (a watch, a gRPC stream) and hold the node's SIGTERM up."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _api_options(command: Callable[..., None]) -> Callable[..., None]:
    """How a long-lived agent reaches the API server: a kubeconfig file, or the pod's service account."""
    command = click.option("--service-account", default=SERVICE_ACCOUNT_DIR, show_default=True,
                           help="the service account's token and ca.crt, without --kubeconfig (in-cluster: the "
                                "server from $KUBERNETES_SERVICE_HOST and _PORT)")(command)
    return click.option("--kubeconfig", default="", envvar="KUBECONFIG",
                        help="a kubeconfig file (default: the pod's service account, in-cluster)")(command)


def _check_api_access(kubeconfig: str, service_account: str) -> None:
    """ValueError when neither a kubeconfig file nor the pod's service account can reach the API server."""
    if kubeconfig:
        if not os.path.isfile(kubeconfig):
            raise ValueError(f"--kubeconfig {kubeconfig}: no such file")
        return
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise ValueError("no --kubeconfig and not in a pod ($KUBERNETES_SERVICE_HOST unset)")
    token = os.path.join(service_account, "token")
    if not os.path.isfile(token):
        raise ValueError(f"no --kubeconfig and no service account token ({token}: no such file)")


@main.command("device-plugin")
@_resource_options
@click.option("--plugin-dir", default=device_paths.PLUGIN_DIR, show_default=True,
              help="the kubelet's device plugin directory")
@click.option("--state-file", default=device_paths.STATE_FILE, show_default=True,
              help="what `pycni status` shows of this daemon ('' for none)")
@click.option("--cdi-dir", default=device_paths.CDI_SPEC_DIR, show_default=True,
              help="where the CDI spec files of resources with `cdi: true` are kept")
@click.option("--check", is_flag=True, help="only check the config, serve nothing")
@click.option("--metrics-address", default="", help="serve Prometheus metrics on HOST:PORT (off by default)")
@click.option("--dra-checkpoint", default=DRA_PATHS.checkpoint, show_default=True,
              help="`pycni dra`'s prepared claims: their devices are not offered here ('' for none)")
def device_plugin(config_path: str, plugin_dir: str, pod_resources_socket: str, sysfs_root: str,
                  resource_prefix: str, node_ips: tuple[str, ...], api_server: str, device_info_dir: str,
                  dev_root: str, state_file: str, cdi_dir: str, check: bool, metrics_address: str,
                  dra_checkpoint: str) -> None:
    """Offer network devices, PCI devices (SR-IOV VFs, vfio), device nodes under /dev (by path, glob or USB
    IDs) and resource types of installed packages to pods as kubelet device plugin resources. SIGHUP, or a
    new config file, reloads the config; a bad one is logged and the running one keeps serving."""
    import logging

    try:
        from pycni.services.devices.config import ConfigError, load_fingerprinted
        from pycni.services.devices.daemon import DevicePluginDaemon
        from pycni.services.devices.model import LOGGER
    except ImportError as e:
        click.echo(f"pycni device-plugin: needs the devices extra (pip install 'pycni[devices]'): {e}", err=True)
        sys.exit(2)
    def plugin_dir_exists() -> None:
        if not os.path.isdir(plugin_dir):
            raise ConfigError(plugin_dir, "the plugin directory does not exist")

    settings, loaded = _load_resources("device-plugin", config_path, check, pod_resources_socket, sysfs_root,
                                       resource_prefix, node_ips, api_server, device_info_dir, dev_root,
                                       then=plugin_dir_exists)
    resources = [resource for resource, _ in loaded]
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    log = logging.getLogger(LOGGER)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: every thread's stack on stderr
    daemon = DevicePluginDaemon(resources, plugin_dir, state_file, cdi_dir=cdi_dir,
                                reload=lambda: load_fingerprinted(config_path, settings), config_file=config_path,
                                fingerprints={r.name: fingerprint for r, fingerprint in loaded},
                                pod_resources_socket=pod_resources_socket, dra_checkpoint=dra_checkpoint)
    if metrics_address:
        from pycni.services.devices.daemon import serve_metrics

        try:
            serve_metrics(daemon.plugins, metrics_address)
        except (ImportError, OSError, ValueError) as e:
            click.echo(f"pycni device-plugin: cannot serve metrics on {metrics_address!r}: {e}", err=True)
            sys.exit(2)
    try:
        daemon.run()
    except OSError as e:
        click.echo(f"pycni device-plugin: {e}", err=True)
        sys.exit(1)
    # Our sockets and state file are gone (run's cleanup). Exit now: the interpreter's own exit
    # would join gRPC's worker threads, and one still inside a stream can hold the node's SIGTERM up.
    _exit_now()


@main.command()
@_resource_options
@click.option("--node-name", envvar="NODE_NAME", required=True, help="this node's name ($NODE_NAME): its pool")
@_api_options
@click.option("--plugin-dir", default=DRA_PATHS.plugin_dir, show_default=True,
              help="the driver's socket and checkpoint")
@click.option("--registry-dir", default=REGISTRY_DIR, show_default=True,
              help="the kubelet's plugin registration directory")
@click.option("--cdi-dir", default=device_paths.CDI_SPEC_DIR, show_default=True,
              help="where each prepared claim's CDI spec file is written")
@click.option("--check", is_flag=True, help="only check the config, serve nothing")
def dra(config_path: str, pod_resources_socket: str, sysfs_root: str, resource_prefix: str, node_ips: tuple[str, ...],
        api_server: str, device_info_dir: str, dev_root: str, node_name: str, kubeconfig: str, service_account: str,
        plugin_dir: str, registry_dir: str, cdi_dir: str, check: bool) -> None:
    """The same resources as `device-plugin`, as the Dynamic Resource Allocation driver `pycni.io`: every
    device published with its attributes in this node's ResourceSlice pool, claims prepared for the kubelet
    with CDI. SIGTERM ends it; prepared claims are kept in its checkpoint."""
    import logging

    try:
        from pycni import dra as library
        from pycni.services.devices.holdings import Holdings
        from pycni.services.dra.resources import ResourcesDriver
    except ImportError as e:
        click.echo(f"pycni dra: needs the devices and cluster extras (pip install 'pycni[devices,cluster]'): {e}",
                   err=True)
        sys.exit(2)
    _, loaded = _load_resources("dra", config_path, check, pod_resources_socket, sysfs_root, resource_prefix,
                                node_ips, api_server, device_info_dir, dev_root,
                                then=lambda: _check_api_access(kubeconfig, service_account))
    resources = [resource for resource, _ in loaded]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    holdings = Holdings(pod_resources_socket)
    driver = ResourcesDriver(resources, pool=node_name, held=holdings.current)
    paths = library.PluginPaths(plugin_dir=plugin_dir, registry_dir=registry_dir, cdi_dir=cdi_dir)
    try:
        library.run(driver, kubeconfig=kubeconfig, service_account=service_account, paths=paths, node=node_name)
    except (OSError, ValueError) as e:
        click.echo(f"pycni dra: {e}", err=True)
        sys.exit(1)
    _exit_now()  # gRPC's and the watches' threads hold nothing that needs an orderly end


@main.command()
@click.option("--node-name", envvar="NODE_NAME", required=True, help="this node's name ($NODE_NAME)")
@_api_options
@click.option("--cluster-cidr", "cluster_cidrs", multiple=True,
              help="the cluster's pod CIDR (twice, or comma-separated, for dual-stack): accepted first in a "
                   "FORWARD chain whose policy is drop")
@click.option("--conflist", "conflist_path", default="",
              help="the rendered conflist whose bridge MTU the agent keeps right (the overlay's when a peer is "
                   "reached by VXLAN)")
@click.option("--state-file", default="/run/pycni/routes.json", show_default=True,
              help="what `pycni status` shows of this agent ('' for none)")
@click.option("--cache-file", default="/var/lib/pycni/routes-nodes.json", show_default=True,
              help="the last list of nodes, for a start with the API server away ('' for none)")
@click.option("--vxlan-device", default=VXLAN_DEVICE, show_default=True)
@click.option("--vxlan-vni", default=VXLAN_VNI, show_default=True, type=click.IntRange(1, 16777215))
@click.option("--vxlan-port", default=VXLAN_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--resync", "resync_seconds", default=60.0, show_default=True, type=click.FloatRange(1, 3600),
              help="seconds between full reads of the kernel (the backstop; changes come as they happen)")
@click.option("--metrics-address", default="", help="serve Prometheus metrics on HOST:PORT (off by default)")
@click.option("--no-publish", is_flag=True, help="do not put the VTEP MAC on this node's Node object")
def routes(node_name: str, kubeconfig: str, service_account: str, cluster_cidrs: tuple[str, ...],
           conflist_path: str, state_file: str, cache_file: str, vxlan_device: str, vxlan_vni: int,
           vxlan_port: int, resync_seconds: float, metrics_address: str, no_publish: bool) -> None:
    """Route every other node's pod CIDRs: direct routes to neighbours on the uplink's subnet, VXLAN to
    the rest; kept right through reboots, restarts and API outages. SIGTERM ends it and leaves the routes."""
    import ipaddress
    import logging
    import signal
    import threading

    try:
        from pycni.services.apiserver import Connection
        from pycni.services.routes.agent import AgentConfig, RoutesAgent
        from pycni.services.routes.peers import Settings
    except ImportError as e:
        click.echo(f"pycni routes: needs the cluster extra (pip install 'pycni[cluster]'): {e}", err=True)
        sys.exit(2)
    try:
        cidrs = tuple(str(ipaddress.ip_network(c.strip(), strict=True)) for value in cluster_cidrs
                      for c in value.split(",") if c.strip())
        if not 1 <= len(vxlan_device) <= 15 or "/" in vxlan_device or " " in vxlan_device:
            raise ValueError(f"--vxlan-device {vxlan_device!r} is not an interface name")
        _check_api_access(kubeconfig, service_account)
    except ValueError as e:
        click.echo(f"pycni routes: {e}", err=True)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = AgentConfig(node_name=node_name, connection=Connection(kubeconfig, service_account),
                         cluster_cidrs=cidrs,
                         conflist=conflist_path, state_file=state_file, cache_file=cache_file,
                         settings=Settings(vxlan_device=vxlan_device, vni=vxlan_vni, port=vxlan_port),
                         resync_seconds=resync_seconds, publish=not no_publish)
    agent = RoutesAgent(config)
    if metrics_address:
        try:
            agent.metrics.serve(metrics_address)
        except (OSError, ValueError) as e:
            click.echo(f"pycni routes: cannot serve metrics on {metrics_address!r}: {e}", err=True)
            sys.exit(2)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop(stop))
    agent.run(stop)
    _exit_now()  # the watch thread may sit in a read: it holds nothing that needs an orderly end


@main.command()
@click.option("--bin-dir", default=DEFAULT_BIN_DIR, show_default=True, help="installed pycni plugins")
@click.option("--conflist", "conflist_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="the conflist to demonstrate (the shipped 10-k8s-pod-network.conflist)")
def demo(bin_dir: str, conflist_path: str) -> None:
    """Attach two sandbox pods in throwaway namespaces and show what pycni did; cleans up after itself."""
    from pycni.node.demo import run_demo

    sys.exit(run_demo(bin_dir, conflist_path))


if __name__ == "__main__":
    main()
