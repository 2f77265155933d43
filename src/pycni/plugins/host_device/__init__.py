"""host-device: hand a node's network device (a spare NIC, an SR-IOV VF, a macvlan) to a pod, and give it
back as it was.

ADD moves the link into the pod under CNI_IFNAME and keeps its original name in the link alias (as the
reference plugin does, so either plugin can DEL what the other added), and its MTU, MAC and up/down state
in a small record on the node; DEL moves it back and restores all of that.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from pycni.host import netlink, netns
from pycni.host.files import remove_file, replace_file
from pycni.host.sysfs import Sysfs
from pycni.plugins import delegation, interface
from pycni.plugins.host_device.locate import DeviceRef, netdev_candidates, without_netdev
from pycni.protocol import skel
from pycni.protocol.errors import CNIError, InvalidConfig
from pycni.protocol.request import Request
from pycni.protocol.result import DNS, Interface, Result

DEFAULT_DATA_DIR = "/var/lib/cni/pycni-host-device"
NAMING_KEYS = ("device", "hwaddr", "kernelpath", "pciBusID", "deviceID")


@dataclass(slots=True)
class HostDeviceConfig:
    device: DeviceRef | None  # None: to be asked of the kubelet (resourceName)
    ipam_type: str = ""
    dns: DNS = field(default_factory=DNS)
    sysfs: Sysfs = field(default_factory=Sysfs)
    data_dir: str = DEFAULT_DATA_DIR
    resource_name: str = ""
    pod_resources_socket: str = ""

    @classmethod
    def from_request(cls, request: Request) -> HostDeviceConfig:
        c = request.config
        given = [DeviceRef(key, c[key]) for key in NAMING_KEYS if c.get(key)]
        runtime_id = request.runtime_config.get("deviceID")
        if runtime_id:  # the deviceID capability (Multus, the runtime) wins over a static top-level deviceID
            given = [ref for ref in given if ref.key != "deviceID"] + [DeviceRef("deviceID", runtime_id)]
        if len(given) > 1:
            raise InvalidConfig("invalid network config: name the device one way only",
                                f"got {', '.join(f'{r.key}={r.value!r}' for r in given)}; use exactly one of "
                                "device, hwaddr, kernelpath, pciBusID, deviceID (or runtimeConfig.deviceID)")
        if not given and not c.get("resourceName"):
            raise InvalidConfig("invalid network config: no device named",
                                "set one of device, hwaddr, kernelpath, pciBusID, deviceID, runtimeConfig.deviceID "
                                "or resourceName")
        ipam = c.get("ipam") or {}
        return cls(
            device=given[0] if given else None,
            ipam_type=ipam.get("type", ""),
            dns=DNS.from_dict(c.get("dns")),
            sysfs=Sysfs(c.get("sysfsRoot") or "/sys"),
            data_dir=c.get("dataDir") or DEFAULT_DATA_DIR,
            resource_name=c.get("resourceName", ""),
            pod_resources_socket=c.get("podResourcesSocket", ""),
        )


@dataclass(frozen=True, slots=True)
class Original:
    """What DEL restores on the node."""

    name: str
    mtu: int
    mac: str
    up: bool


def _record_path(conf: HostDeviceConfig, request: Request) -> str:
    return os.path.join(conf.data_dir, request.network_name, f"{request.container_id}-{request.ifname}")


def _save(path: str, original: Original) -> None:
    replace_file(path, json.dumps(asdict(original)).encode())  # a crash leaves the old record or the new one


def _load(path: str) -> Original | None:
    try:
        with open(path, encoding="utf-8") as f:
            return Original(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


# ---------------------------------------------------------------- finding the device


def resolve(conf: HostDeviceConfig, request: Request, host: netlink.Netlink) -> tuple[netlink.LinkInfo, str]:
    """The device on the node (and its PCI address, "" when unknown); code 7 naming the key when absent."""
    refs = [conf.device] if conf.device else _allocated_devices(conf, request)
    for ref in refs:  # of several allocated devices, the first still on the node (another network took the rest)
        found = _find(ref, conf.sysfs, host)
        if found is not None:
            link, pci = found
            return link, pci or conf.sysfs.pci_address_of(link.name)
    userspace = next(filter(None, (without_netdev(ref, conf.sysfs) for ref in refs)), "")
    if userspace:
        raise InvalidConfig(f"host-device: {userspace}", "give the pod this device through its device nodes "
                                                         "(the device plugin's Allocate), not host-device")
    named = " or ".join(f"{ref.key} {ref.value!r}" for ref in refs)
    raise InvalidConfig(f"host-device: no network device for {named} on the node",
                        "it does not exist, or it is already in a pod's namespace")


def _find(ref: DeviceRef, sysfs: Sysfs, host: netlink.Netlink) -> tuple[netlink.LinkInfo, str] | None:
    if ref.key == "hwaddr":
        wanted = ref.value.lower()
        links = [link for link in host.links() if link.mac.lower() == wanted]
        return (links[0], "") if links else None
    names, pci = netdev_candidates(ref, sysfs)
    for name in names:
        link = host.link_named(name)
        if link is not None:
            return link, pci
    return None


def _allocated_devices(conf: HostDeviceConfig, request: Request) -> list[DeviceRef]:
    from pycni.plugins.host_device.podresources import allocated_device_ids

    ids = allocated_device_ids(conf.resource_name, request, conf.pod_resources_socket)
    return [DeviceRef("deviceID", device_id) for device_id in ids]


# ---------------------------------------------------------------- ADD


def add(request: Request) -> Result:
    conf = HostDeviceConfig.from_request(request)
    record = _record_path(conf, request)
    with netns.opened(request.netns, given=request.netns_fd) as pod_fd, netns.current() as node_fd, \
            netlink.session() as host, netlink.session(pod_fd) as pod:
        assert pod_fd is not None  # must_exist
        device, pci = resolve(conf, request, host)
        if pod.find_link(request.ifname) is not None:
            raise CNIError(f"host-device: the container already has an interface named {request.ifname}")
        original = Original(device.name, device.mtu, device.mac, device.up)
        with interface.Rollback() as undo:
            _save(record, original)
            undo.push(lambda: remove_file(record))
            # down (the kernel renames only links that are down), its node name kept as its alias: one request
            host.set_link(device.index, alias=device.name, flags=0, change=netlink.IFF_UP)
            undo.push(lambda: _restore_on_node(host, original))
            try:
                host.move_link(device.index, pod_fd, request.ifname)
            except netlink.LinkNotFound:
                raise CNIError(f"host-device: {device.name} left the node while it was being moved: another pod "
                               "took it") from None
            undo.push(lambda: _move_back(pod, node_fd, _first_link(pod, (request.ifname, device.name)),
                                         original.name))
            index = pod.link_index(request.ifname)
            result = Result()
            if conf.ipam_type:
                result = delegation.invoke(conf.ipam_type, "ADD", request) or Result()
                undo.push(lambda: delegation.invoke(conf.ipam_type, "DEL", request))
                interface.configure(pod, pod_fd, index, request.ifname, result, enable_dad=False)
            else:
                pod.set_state(index, up=True)
            moved = pod.link(index)
    result.interfaces = [Interface(request.ifname, moved.mac, sandbox=request.netns, mtu=moved.mtu, pci_id=pci)]
    for ip in result.ips:
        ip.interface = 0
    if not conf.dns.is_empty():
        result.dns = conf.dns
    return result


def _move_back(pod: netlink.Netlink, node_fd: int, index: int | None, original_name: str) -> None:
    """Move the device (link `index` in the pod; None: it is not there) back to the node as `original_name`:
    set down with its alias cleared in one request, then moved and renamed in another."""
    if index is not None:
        pod.set_link(index, alias="", flags=0, change=netlink.IFF_UP)
        pod.move_link(index, node_fd, original_name)


def _first_link(nl: netlink.Netlink, names: tuple[str, ...]) -> int | None:
    """The index of the first of the links `names` that exists."""
    return next((index for index in map(nl.find_link, names) if index is not None), None)


def _restore_on_node(host: netlink.Netlink, original: Original) -> None:
    """The device as it was on the node (MTU, MAC, no alias, up or down), in one request after one read."""
    link = host.link_named(original.name)
    if link is None:
        return
    host.set_link(link.index, mtu=original.mtu if link.mtu != original.mtu else 0,
                  address=original.mac if original.mac and link.mac.lower() != original.mac.lower() else "",
                  alias="", flags=netlink.IFF_UP if original.up else 0, change=netlink.IFF_UP)


# ---------------------------------------------------------------- DEL


def delete(request: Request) -> None:
    conf = HostDeviceConfig.from_request(request) if _names_a_device(request) else _config_for_delete(request)
    record = _record_path(conf, request)
    if conf.ipam_type:
        delegation.invoke(conf.ipam_type, "DEL", request)
    original = _load(record)
    if request.netns:
        with netns.opened(request.netns, must_exist=False, given=request.netns_fd) as pod_fd:
            # a namespace already gone took the device with it: a physical one is back in the node's initial
            # namespace, a virtual one was destroyed; the address is released all the same
            if pod_fd is not None:
                _give_back(request, pod_fd, original)
    remove_file(record)


def _names_a_device(request: Request) -> bool:
    return any(request.config.get(k) for k in NAMING_KEYS) or bool(request.runtime_config.get("deviceID")) \
        or bool(request.config.get("resourceName"))


def _config_for_delete(request: Request) -> HostDeviceConfig:
    """DEL does not need to know which device: it finds it in the pod under CNI_IFNAME."""
    c = request.config
    return HostDeviceConfig(None, (c.get("ipam") or {}).get("type", ""), data_dir=c.get("dataDir") or DEFAULT_DATA_DIR)


def _give_back(request: Request, pod_fd: int, original: Original | None) -> None:
    with netns.current() as node_fd, netlink.session(pod_fd) as pod, netlink.session() as host:
        link = pod.link_named(request.ifname)
        if link is None:
            return  # already given back
        name = original.name if original else link.alias
        if not name:
            raise CNIError(f"host-device: {request.ifname} in the pod has no record of its name on the node",
                           "it was not added by host-device (no alias, no record)")
        _move_back(pod, node_fd, link.index, name)
        _restore_on_node(host, original or Original(name, link.mtu, "", up=True))


# ---------------------------------------------------------------- CHECK / GC / STATUS


def check(request: Request) -> None:
    conf = _config_for_delete(request)
    prev = request.prev_result
    if prev is None:
        raise CNIError("host-device: CHECK needs prevResult")
    ours = [iface for iface in prev.interfaces if iface.name == request.ifname and iface.sandbox]
    if not ours:
        raise CNIError(f"host-device: prevResult has no interface {request.ifname} in the sandbox")
    with netns.opened(request.netns, given=request.netns_fd) as pod_fd, netlink.session(pod_fd) as pod:
        index = pod.find_link(request.ifname)
        if index is None:
            raise CNIError(f"host-device: {request.ifname} is missing from the container")
        link = pod.link(index)
        if ours[0].mac and link.mac.lower() != ours[0].mac.lower():
            raise CNIError(f"host-device: {request.ifname} has MAC {link.mac}, expected {ours[0].mac}")
        present = {f"{a}/{p}" for a, p in pod.addresses(index)}
        missing = [ip.address for ip in prev.ips if ip.address not in present]
        if missing:
            raise CNIError(f"host-device: {request.ifname} lacks address {missing[0]}")
    if conf.ipam_type:
        delegation.invoke(conf.ipam_type, "CHECK", request)


def gc(request: Request) -> None:
    """Forget records of attachments the runtime no longer lists; GC the IPAM (frees their addresses)."""
    conf = _config_for_delete(request)
    valid = {f"{c}-{i}" for c, i in request.valid_attachments or ()}
    directory = os.path.join(conf.data_dir, request.network_name)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name not in valid:
            remove_file(os.path.join(directory, name))
    if conf.ipam_type:
        delegation.invoke(conf.ipam_type, "GC", request)


PLUGIN = skel.PluginSpec(
    name="host-device",
    about="move a node network device into the pod and back",
    schema="host-device.json",
    add=add,
    delete=delete,
    check=check,
    gc=gc,
    status=delegation.ipam_status,
)


def main() -> None:
    skel.main(PLUGIN)


if __name__ == "__main__":
    main()
