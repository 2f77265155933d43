"""Importing part of a library whose package `__init__` imports all of it: pyroute2's imports every netlink
family (about 40 ms of a plugin process's start, where only rtnetlink is used), the `kubernetes` client's
imports its kubeconfig loader with OAuth, `requests` and pydantic (13 MiB of a 60 MiB agent). The package is
registered as an empty package module, so its submodules import as usual and nothing else does."""

from __future__ import annotations

import sys
from importlib.util import find_spec, module_from_spec


def without_init(*packages: str) -> list[str]:
    """Register each of `packages` (parents first) without running its `__init__`; the names registered,
    [] where the first is already imported (whole: nothing to spare). ImportError when one is not installed."""
    if packages and packages[0] in sys.modules:
        return []
    registered: list[str] = []
    for name in packages:
        if name in sys.modules:
            continue
        spec = find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            forget(registered)
            raise ImportError(f"{name} is not an installed package")
        sys.modules[name] = module = module_from_spec(spec)
        registered.append(name)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)
    return registered


def forget(packages: list[str]) -> None:
    """Undo `without_init`: the packages and whatever was imported under them go, so the next import of
    them runs their `__init__`s."""
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in packages):
            del sys.modules[name]
