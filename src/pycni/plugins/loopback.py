"""loopback: bring `lo` up in the pod's network namespace."""

from __future__ import annotations

from pycni.host import netlink, netns
from pycni.protocol import skel
from pycni.protocol.errors import CNIError
from pycni.protocol.request import Request
from pycni.protocol.result import Interface, IPConfig, Result

LOOPBACK = "lo"


def _is_loopback_address(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def add(request: Request) -> Result:
    with netns.opened(request.netns, given=request.netns_fd) as fd, netlink.session(fd) as nl:
        index = nl.link_index(LOOPBACK)
        nl.set_state(index, up=True)
        addresses = nl.addresses(index)
    for address, _ in addresses:
        if not _is_loopback_address(address):
            raise CNIError(f"loopback interface has a non-loopback address {address}")
    if request.prev_result is not None:
        return request.prev_result
    first_of_family: dict[bool, str] = {}
    for address, prefix in addresses:
        first_of_family.setdefault(":" in address, f"{address}/{prefix}")
    return Result(
        interfaces=[Interface(LOOPBACK, mac="00:00:00:00:00:00", sandbox=request.netns)],
        ips=[IPConfig(cidr, interface=0) for _, cidr in sorted(first_of_family.items())],
    )


def delete(request: Request) -> None:
    if not request.netns:
        return
    with netns.opened(request.netns, must_exist=False, given=request.netns_fd) as fd:
        if fd is None:
            return
        with netlink.session(fd) as nl:
            nl.set_state(nl.link_index(LOOPBACK), up=False)


def check(request: Request) -> None:
    with netns.opened(request.netns, given=request.netns_fd) as fd, netlink.session(fd) as nl:
        if not nl.is_up(nl.link_index(LOOPBACK)):
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
