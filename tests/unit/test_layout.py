"""The tree's layering, checked: no import cycle among pycni's modules (top-level imports: those that run
when a module is loaded), and the device side's model, types and config checks load without gRPC (the
`devices` extra is needed to serve, not to check a config or write a policy)."""

import ast
import os
import subprocess
import sys

import pycni

PACKAGE = os.path.dirname(pycni.__file__)


def module_graph() -> dict[str, set[str]]:
    paths = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
                paths[relative.replace(os.sep, ".").removesuffix(".__init__")] = path
    graph = {}
    for module, path in paths.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported = set()
        for node in tree.body:  # not under `if TYPE_CHECKING:`, not inside functions (loaded when called)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pycni"):
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    imported.add(name if name in paths else node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name.startswith("pycni"))
        graph[module] = {m for m in imported if m in paths and m != module}
    return graph


def test_no_module_imports_itself_through_others():
    graph = module_graph()
    assert "pycni.services.devices.model" in graph and graph["pycni.services.devices.cdi"]
    cycles = []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in path:
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in done:
                done.add(imported)
                visit(imported, path + [imported], done)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            done.add(module)
            visit(module, [module], done)
    assert cycles == []


def test_the_device_and_dra_models_and_config_checks_load_without_grpc():
    program = ("import sys; sys.modules['grpc'] = None\n"
               "import pycni.devices, pycni.dra, pycni.services.devices.config, pycni.services.devices.registry\n"
               "print(sorted(pycni.services.devices.registry.Registry.for_config().resource_types))")
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['devices', 'netdev', 'tun']"
