"""Kubelet device plugins in Python: a small framework (framework.py) and the resources pycni ships on it,
network devices (netdev.py) and /dev/net/tun (tun.py), run by `pycni device-plugin` (daemon.py).

Needs the `devices` extra (grpcio, protobuf). A resource is a name, a way to list its devices and what
Allocate returns for a set of them; see the README's "Device plugins" section for a complete example.
"""
