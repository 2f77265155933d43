"""bandwidth: shape a pod's traffic on the host side of its veth, without adding a queue's worth of latency.

Ingress (into the pod) is shaped on the host veth; egress (out of the pod) is the host veth's ingress
redirected to an ifb of the pod's own, shaped there. How a link is shaped (HTB, an interactive class, a
bulk queue sized by `queueLatencyMs`) is `host.tc`'s business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pycni.host import netlink, netns
from pycni.plugins import tags
from pycni.plugins.bandwidth import shaper
from pycni.protocol import skel
from pycni.protocol.errors import CNIError, InvalidConfig
from pycni.protocol.request import Request
from pycni.protocol.result import Interface, Result

LIMIT_KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
MIN_RATE_BITS = 8
MAX_RATE_BITS = shaper.MAX_RATE_BYTES * 8
MAX_BURST_BITS = 2**32 * 8 - 1  # the reference's "burst cannot be more than 4GB"


@dataclass(frozen=True, slots=True)
class Limit:
    rate: int  # bits per second
    burst: int  # bits

    @property
    def active(self) -> bool:
        return self.rate > 0


@dataclass(frozen=True, slots=True)
class BandwidthConfig:
    ingress: Limit
    egress: Limit
    latency_seconds: float = shaper.DEFAULT_LATENCY_SECONDS  # the bulk queue holds this much of the rate

    @property
    def unlimited(self) -> bool:
        return not (self.ingress.active or self.egress.active)

    @classmethod
    def from_request(cls, request: Request) -> BandwidthConfig:
        """Static keys win over runtimeConfig.bandwidth, as in the reference."""
        static = {k: request.config[k] for k in LIMIT_KEYS if k in request.config}
        source = static or request.runtime_config.get("bandwidth") or {}
        where = "" if static else "runtimeConfig.bandwidth."
        latency = request.config.get("queueLatencyMs", shaper.DEFAULT_LATENCY_SECONDS * 1000) / 1000
        return cls(_limit(source, "ingress", where), _limit(source, "egress", where), latency)

    def bucket(self, limit: Limit, mtu: int) -> shaper.TokenBucket:
        return shaper.TokenBucket.from_bits(limit.rate, limit.burst, mtu, self.latency_seconds)


def _limit(source: dict, direction: str, where: str) -> Limit:
    rate, burst = source.get(f"{direction}Rate", 0), source.get(f"{direction}Burst", 0)
    if burst and not rate:
        raise InvalidConfig(f"invalid network config: {where}{direction}Burst is set but {direction}Rate is not",
                            "if burst is set, rate must also be set")
    if rate and not burst:
        raise InvalidConfig(f"invalid network config: {where}{direction}Rate is set but {direction}Burst is not",
                            "if rate is set, burst must also be set")
    if rate and not MIN_RATE_BITS <= rate <= MAX_RATE_BITS:
        raise InvalidConfig(f"invalid network config: {where}{direction}Rate {rate} bits/s is out of range",
                            f"it must lie between {MIN_RATE_BITS} and {MAX_RATE_BITS} bits per second")
    if burst > MAX_BURST_BITS:
        raise InvalidConfig(f"invalid network config: {where}{direction}Burst {burst} bits is more than 4GB")
    return Limit(rate, burst)


def ifb_name(request: Request) -> str:
    return tags.ifb_name(request.network_name, request.container_id, request.ifname)


def _host_end(request: Request, host: netlink.Netlink, pod: netlink.Netlink) -> netlink.LinkInfo:
    """The node's end of the pod's veth, which prevResult must list as a host-side interface."""
    prev = request.prev_result
    if not prev or not prev.interfaces:
        raise CNIError("bandwidth: prevResult lists no interfaces, so there is no veth to shape")
    pod_link = pod.link_named(request.ifname)
    if pod_link is None:
        raise CNIError(f"bandwidth: container interface {request.ifname} not found")
    if pod_link.kind != "veth" or not pod_link.peer_index:
        raise CNIError(f"bandwidth: container interface {request.ifname} is a {pod_link.kind or 'plain'} link; "
                       "only a veth with its peer on the node can be shaped")
    try:
        peer = host.link(pod_link.peer_index)
    except netlink.LinkNotFound:
        raise CNIError(f"bandwidth: the veth peer of {request.ifname} is not in this namespace") from None
    if not any(iface.name == peer.name and not iface.sandbox for iface in prev.interfaces):
        raise CNIError(f"bandwidth: the veth peer {peer.name} of {request.ifname} is not in prevResult")
    return peer


def _families(result: Result) -> frozenset[int]:
    """The IP versions of the pod's addresses (both when prevResult lists none: shape whatever comes)."""
    found = frozenset(6 if ":" in ip.address else 4 for ip in result.ips)
    return found or frozenset({4, 6})


def add(request: Request) -> Result:
    conf = BandwidthConfig.from_request(request)
    if conf.unlimited:
        return request.prev_result or Result()
    if request.prev_result is None:
        raise CNIError("bandwidth must be called as a chained plugin (no prevResult)")
    result = request.prev_result
    with netlink.session() as host, netns.opened(request.netns, given=request.netns_fd) as pod_fd, \
            netlink.session(pod_fd) as pod:
        port = _host_end(request, host, pod)
        name = ifb_name(request)
        families = _families(result)
        undo: list[Callable[[], object]] = []  # only what this call made: a refused second ADD harms nothing
        try:
            if conf.ingress.active:
                shaper.shape(host, port.index, conf.bucket(conf.ingress, port.mtu), families)
                undo.append(lambda: shaper.remove_shaping(host, port.index))
            if conf.egress.active:
                ifb = host.add_link(name, "ifb", up=True, mtu=port.mtu, txqlen=1000)
                undo.append(lambda: host.delete_link_named(name))
                shaper.shape(host, ifb.index, conf.bucket(conf.egress, port.mtu), families)
                shaper.redirect_ingress(host, port.index, ifb.index)
                result.interfaces.append(Interface(name, ifb.mac, mtu=ifb.mtu))
        except BaseException:
            for step in reversed(undo):
                step()
            raise
    return result


def delete(request: Request) -> None:
    BandwidthConfig.from_request(request)
    with netlink.session() as host:
        ifb = ifb_name(request)
        # the host veth's qdiscs first (its redirect into the ifb among them): found from prevResult alone (no
        # need to enter the pod, which may be gone); then the ifb, idle now (in the service: after answering)
        for iface in request.prev_result.interfaces if request.prev_result else []:
            link = None if iface.sandbox or iface.name == ifb else host.link_named(iface.name)
            if link is not None and link.kind == "veth":
                shaper.remove_all(host, link.index)
        host.drop_link_named(ifb)


def check(request: Request) -> None:
    """The shaping still matches the config: on the host-side veth prevResult names (the main plugin's
    CHECK, before this one, checked that it is the pod's peer) and on the pod's ifb. Two netlink round
    trips, whatever the node's size."""
    if request.prev_result is None:
        raise CNIError("bandwidth must be called as a chained plugin (no prevResult)")
    conf = BandwidthConfig.from_request(request)
    ifb = ifb_name(request)
    host_side = [iface.name for iface in request.prev_result.interfaces if not iface.sandbox and iface.name != ifb]
    with netlink.session() as host:
        links = host.links_named([*host_side, ifb])
        port = next((links[name] for name in host_side if name in links and links[name].kind == "veth"), None)
        if port is None:
            raise CNIError("bandwidth: prevResult names no host-side veth that exists")
        ifb_link = links.get(ifb)
        shaping = shaper.installed_on(host, [port.index] + ([ifb_link.index] if ifb_link else []))
    on_port = shaping[port.index]
    _compare("ingress", conf, conf.ingress, on_port, port.mtu)
    if conf.egress.active:
        if ifb_link is None:
            raise CNIError(f"bandwidth: ifb {ifb} is missing")
        if not on_port.has_ingress:
            raise CNIError(f"bandwidth: {port.name} has no ingress redirect to its ifb")
        _compare("egress", conf, conf.egress, shaping[ifb_link.index], port.mtu)
    elif ifb_link is not None:
        raise CNIError(f"bandwidth: ifb {ifb} exists but no egress limit is configured")


def _compare(direction: str, conf: BandwidthConfig, limit: Limit, found: shaper.Installed, mtu: int) -> None:
    if not limit.active:
        if found.bucket is not None:
            raise CNIError(f"bandwidth: {direction} is shaped but no {direction} limit is configured")
        return
    if found.bucket is None:
        raise CNIError(f"bandwidth: the {direction} shaper is missing")
    want = conf.bucket(limit, mtu)
    have = found.bucket
    if have.rate != want.rate or (found.queue == "bfifo" and have.limit != want.limit):
        raise CNIError(f"bandwidth: {direction} shaping is rate {have.rate} B/s queue {have.limit} B, "
                       f"expected rate {want.rate} B/s queue {want.limit} B")


def gc(request: Request) -> None:
    """Delete this network's ifb devices whose attachment the runtime no longer lists."""
    keep = {tags.ifb_name(request.network_name, c, i) for c, i in request.valid_attachments or ()}
    prefix = tags.ifb_prefix(request.network_name)
    with netlink.session() as host:
        for link in host.links():
            if link.kind == "ifb" and link.name.startswith(prefix) and link.name not in keep:
                host.delete_link(link.index)


PLUGIN = skel.PluginSpec(
    name="bandwidth",
    about="pod ingress/egress shaping with a low-latency HTB shaper",
    schema="bandwidth.json",
    add=add,
    delete=delete,
    check=check,
    gc=gc,
)


def main() -> None:
    skel.main(PLUGIN)


if __name__ == "__main__":
    main()
