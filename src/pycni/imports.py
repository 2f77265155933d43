"""Importing part of a library whose package `__init__` imports all of it: pyroute2's imports every netlink
family (about 40 ms of a plugin process's start, where only rtnetlink is used), the `kubernetes` client's
imports its kubeconfig loader with OAuth, `requests` and pydantic (13 MiB of a 60 MiB agent). The package is
registered as an empty package module, so its submodules import as usual and nothing else does. Asked for a
name it does not have yet (code of someone else's in the same process: `from kubernetes import client` then
`client.CoreV1Api`), it runs its `__init__` then and answers: the lean import is never seen from outside."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from importlib.util import find_spec, module_from_spec
from types import ModuleType
from typing import Any


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
        module.__dict__["__getattr__"] = _completed_on_demand(module)
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


def _completed_on_demand(module: ModuleType) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562): a submodule asked for by name (`from pyroute2 import config`) is
    imported as usual; any other name runs the package's own `__init__` then, the first time, and is answered
    from what that defined."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("__") and find_spec(f"{module.__name__}.{name}") is not None:
            return import_module(f"{module.__name__}.{name}")
        if module.__dict__.pop("__getattr__", None) is None or module.__spec__ is None \
                or module.__spec__.loader is None:
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
        module.__spec__.loader.exec_module(module)  # may set a __getattr__ of its own (lazy exports)
        return getattr(module, name)

    return __getattr__
