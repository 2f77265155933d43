"""Licence seats as a device plugin resource: a pod that requests `example.com/seat: 1` gets one of `count`
seats, named in an environment variable its program reads; the kubelet never over-commits the licence.

A resource type for `pycni device-plugin --config`, found through the `pycni.device_types` entry point
(see pyproject.toml); it uses only the stable API of `pycni.devices`."""

from __future__ import annotations

from pycni.devices import Allocation, Device, DeviceType, NodePaths, Resource

SCHEMA = {
    "type": "object",
    "required": ["count"],
    "properties": {
        "count": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "seats the licence has"},
        "env": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$", "description": "the variable naming the seats"},
        "server": {"type": "string", "minLength": 1, "description": "the licence server, passed on as LICENSE_SERVER"},
    },
}


def build(name: str, options: dict, node: NodePaths) -> Resource:
    count, variable = options["count"], options.get("env", "LICENSE_SEATS")
    seats = [f"seat-{i}" for i in range(count)]

    def describe(seat: str) -> Allocation:
        envs = {variable: seat}
        if "server" in options:
            envs["LICENSE_SERVER"] = options["server"]
        return Allocation(envs=envs)

    def allocate(ids: list[str]) -> Allocation:
        allocation = describe(ids[0])
        allocation.envs[variable] = ",".join(ids)
        return allocation

    return Resource(name, lambda: [Device(seat) for seat in seats], allocate, describe=describe)


SEATS = DeviceType(SCHEMA, build)
