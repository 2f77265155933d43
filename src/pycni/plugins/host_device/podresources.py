"""resourceName: ask the kubelet's PodResources which device of the resource this pod was allocated, as
Multus does for the deviceID capability, so no meta-plugin is needed. Imports grpc, so it is loaded only
when a config names a resource."""

from __future__ import annotations

from pycni.protocol.errors import CNIError, InvalidConfig
from pycni.protocol.request import Request


def allocated_device_ids(resource_name: str, request: Request, socket_path: str) -> list[str]:
    """The IDs of `resource_name` the kubelet allocated to the pod in CNI_ARGS, in the kubelet's order."""
    pod, namespace = request.cni_args.get("K8S_POD_NAME", ""), request.cni_args.get("K8S_POD_NAMESPACE", "")
    if not pod or not namespace:
        raise InvalidConfig(f"host-device: resourceName {resource_name!r} needs the pod's name",
                            "CNI_ARGS must carry K8S_POD_NAME and K8S_POD_NAMESPACE (containerd and CRI-O pass them)")
    try:
        from pycni.kubelet.podresources import DEFAULT_SOCKET, PodResourcesError, held_devices
    except ImportError:
        raise CNIError("host-device: resourceName needs grpcio (pip install 'pycni[devices]')") from None
    try:
        holdings = held_devices(socket_path or DEFAULT_SOCKET, namespace, pod)
    except PodResourcesError as e:
        raise CNIError(f"host-device: asking the kubelet's PodResources for pod {namespace}/{pod}", str(e)) from None
    ids = [device for held in holdings if held.resource_name == resource_name for device in held.device_ids]
    if not ids:
        raise CNIError(f"host-device: pod {namespace}/{pod} holds no device of {resource_name}",
                       "request the resource in the pod's containers (resources.limits)")
    return ids
