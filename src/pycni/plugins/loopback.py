"""loopback: bring `lo` up in the pod's network namespace.

It runs for every pod sandbox, so it speaks the interface ioctls (`host.ifreq`) rather than netlink: a
plugin process that never loads pyroute2 starts in a third of the time.
"""

from __future__ import annotations

from pycni.host import ifreq, netns
from pycni.protocol import skel
from pycni.protocol.errors import CNIError
from pycni.protocol.request import Request
from pycni.protocol.result import Interface, IPConfig, Result

LOOPBACK = "lo"


def _is_loopback_address(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def add(request: Request) -> Result:
    with netns.inside(request.netns, given=request.netns_fd):
        ifreq.set_up(LOOPBACK, up=True)
        ipv4 = ifreq.ipv4_addresses(LOOPBACK)
        ipv6 = ifreq.ipv6_addresses(LOOPBACK)
        ipv4_prefix = ifreq.ipv4_primary_prefix(LOOPBACK) if ipv4 else 0
    for address in [*ipv4, *(address for address, _ in ipv6)]:
        if not _is_loopback_address(address):
            raise CNIError(f"loopback interface has a non-loopback address {address}")
    if request.prev_result is not None:
        return request.prev_result
    first_of_family = [f"{ipv4[0]}/{ipv4_prefix}"] if ipv4 else []
    first_of_family += [f"{address}/{prefix}" for address, prefix in ipv6[:1]]
    return Result(
        interfaces=[Interface(LOOPBACK, mac="00:00:00:00:00:00", sandbox=request.netns)],
        ips=[IPConfig(cidr, interface=0) for cidr in first_of_family],
    )


def delete(request: Request) -> None:
    if not request.netns:
        return
    with netns.opened(request.netns, must_exist=False, given=request.netns_fd) as fd:
        if fd is None:
            return
        with netns.entered(fd):
            ifreq.set_up(LOOPBACK, up=False)


def check(request: Request) -> None:
    with netns.inside(request.netns, given=request.netns_fd):
        if not ifreq.is_up(LOOPBACK):
            raise CNIError("loopback interface is down")


PLUGIN = skel.PluginSpec(
    name="loopback",
    about="brings the loopback interface up in the pod's network namespace",
    schema="loopback.json",
    add=add,
    delete=delete,
    check=check,
)


def main() -> None:
    skel.main(PLUGIN)


if __name__ == "__main__":
    main()
