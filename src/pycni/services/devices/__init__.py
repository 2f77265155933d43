"""Kubelet device plugins in Python. The model (model.py) and the resource types registered by name
(registry.py): netdev (netdev.py), device nodes and tun (nodes.py), the SR-IOV device plugin's PCI kinds
(pci/); the gRPC serving of one resource (framework.py, cdi.py); the daemon (daemon.py) with its jobs:
registration with the kubelet, config reload, state file, the PodResources view of holdings, withheld
devices. `pycni.devices` is the stable library API on top.

Needs the `devices` extra (grpcio, protobuf) to serve; the model, the types' policies and the config checks
import without it.
"""
