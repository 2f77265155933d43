"""Resource types by name, pycni's own and those of installed packages alike: each a `DeviceType` (a schema
of its keys and a `build`), checked and built the same way. Packages declare theirs in the
`pycni.device_types` entry-point group; pycni's are registered here, bound to the config being built (a
PCI function goes to the first resource of that config that selects it)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from pycni.services.devices import netdev, nodes, pci
from pycni.services.devices.model import DeviceType, NodePaths, Resource

ENTRY_POINT_GROUP = "pycni.device_types"
SCHEMA_DOCUMENT = "device-plugin.json"
BUILT_IN_TYPES = ("netdev", "tun", "devices")  # of pycni's `resources` entries
SRIOV_KINDS = tuple(pci.KINDS)  # the `deviceType`s of `resourceList` entries


class UnknownType(LookupError):
    """No type of that name, or its package's entry point cannot be loaded (the message says which)."""


def _shipped(definition: str) -> dict[str, Any]:
    return {"$ref": f"{SCHEMA_DOCUMENT}#/$defs/{definition}"}


class Registry:
    """The types a config can name: `resources` types (built-in, then installed), and the SR-IOV kinds
    `resourceList` entries name by `deviceType`."""

    def __init__(self, resource_types: dict[str, DeviceType], sriov_kinds: dict[str, DeviceType]) -> None:
        self.resource_types = resource_types
        self.sriov_kinds = sriov_kinds

    @classmethod
    def for_config(cls) -> Registry:
        """pycni's types, bound to one config's PCI claims."""
        claims = pci.PciClaims()

        def netdev_type(name: str, options: dict[str, Any], node: NodePaths) -> Resource:
            return netdev.build(name, options, node, claimed_elsewhere=claims.takes_address)

        def sriov_kind(name: str, options: dict[str, Any], node: NodePaths) -> Resource:
            return pci.build(name, options, node, claims)

        built_in = {"netdev": DeviceType(_shipped("netdev"), netdev_type),
                    "tun": DeviceType(_shipped("tun"), nodes.build_tun),
                    "devices": DeviceType(_shipped("devices"), nodes.build_devices)}
        kinds = {kind: DeviceType(_shipped(f"{kind}Entry"), sriov_kind) for kind in SRIOV_KINDS}
        return cls(built_in, kinds)

    def names(self) -> tuple[str, ...]:
        return tuple(self.resource_types) + tuple(sorted(installed_types().keys() - self.resource_types.keys()))

    def resource_type(self, name: str) -> DeviceType:
        """The type a `resources` entry names: pycni's, else an installed package's."""
        if name in self.resource_types:
            return self.resource_types[name]
        installed = installed_types()
        if name not in installed:
            raise UnknownType(f"unknown type {name!r}: known are {', '.join(self.names())} (a package adds one in "
                              f"the {ENTRY_POINT_GROUP!r} entry-point group)")
        point = installed[name]
        try:
            device_type = point.load()
        except Exception as e:  # noqa: BLE001 - a broken package: say which, whatever it raised
            raise UnknownType(f"type {name!r} ({point.value}) cannot be loaded: {type(e).__name__}: {e}") from None
        if not isinstance(device_type, DeviceType):
            raise UnknownType(f"{point.value} is not a pycni.devices.DeviceType")
        return device_type


def installed_types() -> dict[str, metadata.EntryPoint]:
    """The resource types installed packages declare, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}

