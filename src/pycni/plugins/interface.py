"""What every plugin that hands a pod an interface does with an IPAM result (bridge, host-device): the
addresses, routes and sysctls of that interface, as the reference's ipam.ConfigureIface; and undoing a
half-done ADD."""

from __future__ import annotations

from pycni.host import netns, sysctl

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from collections.abc import Callable

    from pycni.host.netlink import Netlink
    from pycni.protocol.result import Result


def configure(pod: Netlink, pod_fd: int, index: int, ifname: str, result: Result, enable_dad: bool) -> None:
    """Give link `index` (in the pod namespace `pod_fd`) the result's addresses and routes, and bring it up."""
    has_ipv6 = any(ip.family == 6 for ip in result.ips)
    with netns.entered(pod_fd):
        sysctl.write(f"net/ipv4/conf/{ifname}/arp_notify", 1)
        if has_ipv6:
            for name in ("lo", ifname):
                sysctl.write(f"net/ipv6/conf/{name}/disable_ipv6", 0)
            sysctl.write(f"net/ipv6/conf/{ifname}/accept_dad", 1 if enable_dad else 0)
            if enable_dad and sysctl.exists(f"net/ipv6/conf/{ifname}/enhanced_dad"):
                sysctl.write(f"net/ipv6/conf/{ifname}/enhanced_dad", 1)
            sysctl.write(f"net/ipv6/conf/{ifname}/keep_addr_on_down", 1)
    for ip in result.ips:
        pod.add_address(index, ip.address, nodad=not enable_dad)
    pod.set_state(index, up=True)
    gateways: dict[int, str] = {}
    for ip in result.ips:
        gateways.setdefault(ip.family, ip.gateway)
    for route in result.routes:
        family = 6 if ":" in route.dst else 4
        pod.add_route(route.dst, route.gw or gateways.get(family, ""), index, route.priority, route.table,
                      route.scope, route.mtu, route.advmss)


class Rollback:
    """Steps that undo a half-done ADD, run newest first when the block fails; the original error is raised."""

    def __init__(self) -> None:
        self.steps: list[Callable[[], object]] = []

    def __enter__(self) -> Rollback:
        return self

    def push(self, step: Callable[[], object]) -> None:
        self.steps.append(step)

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if error is None:
            return
        for step in reversed(self.steps):
            try:
                step()
            except Exception:  # noqa: BLE001 - undo is best effort; the original error is what matters
                pass
