"""`pycni validate`: the mistakes a runtime or the kubelet would only meet late, found before a node uses a file.

The CNI spec lets plugins ignore keys they do not know, so a typo in a conflist changes behaviour with no
error anywhere (a capability spelt wrong, and no pod on the node gets its hostPorts). The plugins keep
accepting such keys; this module is where they are found: every key no schema knows, with its JSON path and
the closest known spelling, and the checks a runtime would otherwise fail on at the first pod (a plugin type
with no executable, a cniVersion a plugin does not speak, overlapping ranges, a gateway outside its subnet).
It reads the same JSON Schemas the plugins are checked against, with the `jsonschema` package.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, field

from pycni.protocol.errors import CNIError
from pycni.protocol.schema import SCHEMA_DIR, load
from pycni.protocol.schemacheck import ERROR, WARNING, Finding, closest, json_path, schema_errors, unknown_keys
from pycni.protocol.versions import SUPPORTED_VERSIONS

# Capability names runtimes know to pass as runtimeConfig (the CNI conventions, and what CRI runtimes send).
WELL_KNOWN_CAPABILITIES = ("portMappings", "ipRanges", "bandwidth", "dns", "ips", "mac", "infinibandGUID",
                           "deviceID", "aliases", "cgroupPath", "io.kubernetes.cri.pod-annotations")

# Keys any plugin entry of a conflist may carry whatever its type: the runtime reads or injects them.
PLUGIN_ENTRY_KEYS = ("type", "capabilities", "cniVersion", "name")

VERSION_PROBE_SECONDS = 10


@dataclass
class Report:
    """What one file is and what was found in it."""

    file: str
    kind: str
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    def exit_code(self, strict: bool) -> int:
        return 1 if self.errors() or (strict and self.warnings()) else 0

    def as_dict(self) -> dict:
        return {"file": self.file, "kind": self.kind, "checked": self.checked,
                "errors": len(self.errors()), "warnings": len(self.warnings()),
                "findings": [asdict(f) for f in self.findings]}


def has_schema(name: str) -> bool:
    return os.path.isfile(os.path.join(SCHEMA_DIR, name))


# ------------------------------------------------------------------ conflists


class ConflistCheck:
    """A conflist (or a single plugin's .conf) checked as a runtime would use it on a node whose plugins
    are in `bin_dirs`."""

    def __init__(self, report: Report, bin_dirs: list[str]) -> None:
        self.report = report
        self.findings = report.findings
        self.bin_dirs = bin_dirs

    def conflist(self, data: dict) -> None:
        self.findings += schema_errors(data, "conflist.json")
        self.findings += unknown_keys(data, "conflist.json", skip=("plugins",))
        plugins = data.get("plugins")
        if not isinstance(plugins, list):
            return
        version = effective_version(data)
        for i, plugin in enumerate(plugins):
            if isinstance(plugin, dict):
                self.plugin(plugin, data.get("name"), version, ["plugins", i])

    def single(self, data: dict) -> None:
        self.plugin(data, data.get("name"), data.get("cniVersion") if isinstance(data.get("cniVersion"), str)
                    else None, [])

    def plugin(self, plugin: dict, network: object, version: str | None, path: list) -> None:
        plugin_type = plugin.get("type")
        if not isinstance(plugin_type, str) or not plugin_type:
            self.findings.append(Finding(json_path(path + ["type"]), ERROR, "every plugin needs a `type`"))
            return
        config = {**plugin, "cniVersion": version, "name": network}
        ipam = _object(plugin, "ipam")
        ipam_type = ipam.get("type", "") if isinstance(ipam.get("type"), str) else ""
        reads = self.capabilities_read(plugin_type) | (self.capabilities_read(ipam_type) if ipam_type else set())
        self.capabilities(plugin, plugin_type, ipam_type, reads, path)
        self.executable(plugin_type, version, path + ["type"])
        if has_schema(f"{plugin_type}.json"):
            before = len(self.findings)
            self.findings += schema_errors(config, f"{plugin_type}.json", path)
            self.findings += unknown_keys(config, f"{plugin_type}.json", path, skip=PLUGIN_ENTRY_KEYS + ("ipam",))
            self.report.checked.append(f"{json_path(path) or 'config'}: {plugin_type}"
                                       + (": ok" if len(self.findings) == before else ""))
            self.expected_capabilities(plugin, plugin_type, path)
        else:
            self.report.checked.append(f"{json_path(path) or 'config'}: {plugin_type}: not a pycni plugin, "
                                       "keys not checked")
        if ipam_type:
            self.executable(ipam_type, version, path + ["ipam", "type"])
            if has_schema(f"{ipam_type}.json"):
                self.findings += schema_errors({"cniVersion": version, "name": network, "ipam": ipam},
                                               f"{ipam_type}.json", path)
                self.findings += unknown_keys(ipam, f"{ipam_type}.json", path + ["ipam"],
                                              schema=load(f"{ipam_type}.json")["properties"]["ipam"])
            if ipam_type == "host-local":
                self.host_local_ranges(ipam, path + ["ipam"])

    @staticmethod
    def capabilities_read(plugin_type: str) -> set[str]:
        """The capabilities a pycni plugin reads: its schema's `runtimeConfig` properties."""
        if not plugin_type or not has_schema(f"{plugin_type}.json"):
            return set()
        runtime = load(f"{plugin_type}.json").get("properties", {}).get("runtimeConfig", {})
        return set(runtime.get("properties", {}))

    def capabilities(self, plugin: dict, plugin_type: str, ipam_type: str, reads: set[str], path: list) -> None:
        caps = plugin.get("capabilities")
        if caps is None:
            return
        where = path + ["capabilities"]
        if not isinstance(caps, dict):
            self.findings.append(Finding(json_path(where), ERROR, "must be an object of capability names"))
            return
        ours = has_schema(f"{plugin_type}.json")
        for name, enabled in caps.items():
            if not isinstance(enabled, bool):
                self.findings.append(Finding(json_path(where + [name]), ERROR,
                                             f"must be true or false (libcni skips anything else), not "
                                             f"{json.dumps(enabled)}"))
            if name in WELL_KNOWN_CAPABILITIES:
                if ours and name not in reads and enabled is True:
                    readers = " nor ".join(f"`{t}`" for t in (plugin_type, ipam_type) if t)
                    self.findings.append(Finding(json_path(where + [name]), WARNING,
                                                 f"{readers} does not read this capability: the runtime's "
                                                 "value goes nowhere"))
                continue
            # libcni looks capabilities up exactly: a case variant is never passed
            self.findings.append(Finding(json_path(where + [name]), WARNING,
                                         "unknown capability: the runtime never passes it",
                                         closest(name, WELL_KNOWN_CAPABILITIES)))

    def expected_capabilities(self, plugin: dict, plugin_type: str, path: list) -> None:
        """A plugin that only ever gets its input from the runtime and is not asked for it does nothing."""
        caps = _object(plugin, "capabilities")
        if plugin_type == "portmap" and caps.get("portMappings") is not True:
            runtime = _runtime_programming_host_ports()
            if runtime:  # CRI-O passes no mappings whatever the conflist says, and hostPorts work
                self.report.checked.append(f"{json_path(path + ['capabilities'])}: portmap gets no port mappings; "
                                           f"hostPorts are programmed by {runtime}")
            else:
                self.findings.append(Finding(json_path(path + ["capabilities"]), WARNING,
                                             "portmap without `\"portMappings\": true` gets no port mappings: "
                                             "no hostPort of any pod will work"))
        static = any(k in plugin for k in ("ingressRate", "egressRate"))
        if plugin_type == "bandwidth" and caps.get("bandwidth") is not True and not static:
            self.findings.append(Finding(json_path(path + ["capabilities"]), WARNING,
                                         "bandwidth with no static rates and without `\"bandwidth\": true` "
                                         "never shapes a pod"))

    def executable(self, plugin_type: str, version: str | None, path: list) -> None:
        from pycni import plugins

        if "/" in plugin_type or plugin_type in (".", ".."):
            self.findings.append(Finding(json_path(path), ERROR, f"`{plugin_type}` is not a plugin name"))
            return
        found = next((os.path.join(d, plugin_type) for d in self.bin_dirs
                      if os.path.isfile(os.path.join(d, plugin_type))
                      and os.access(os.path.join(d, plugin_type), os.X_OK)), None)
        if found is None:
            self.findings.append(Finding(json_path(path), ERROR,
                                         f"no executable `{plugin_type}` in {':'.join(self.bin_dirs)}: "
                                         "every pod's sandbox would fail"))
            return
        if version is None:
            return
        supported = SUPPORTED_VERSIONS if plugins.own_plugin_type(found) else probe_versions(found, version)
        if supported is None:
            self.findings.append(Finding(json_path(path), WARNING,
                                         f"`{found}` did not answer VERSION: its CNI versions are unknown"))
        elif version not in supported:
            self.findings.append(Finding(json_path(path), ERROR,
                                         f"`{found}` does not support cniVersion {version} "
                                         f"(it supports {', '.join(supported)})"))

    def host_local_ranges(self, ipam: dict, path: list) -> None:
        """What host-local would refuse at the first ADD, and a gateway its pods could not reach."""
        from pycni.plugins.host_local import range_sets_of

        try:
            range_sets = range_sets_of(ipam, {})
        except (CNIError, KeyError, TypeError, ValueError) as e:
            message = e.msg if isinstance(e, CNIError) else str(e)
            self.findings.append(Finding(json_path(path + ["ranges"]), ERROR,
                                         message.removeprefix("invalid network config: ")))
            return
        for set_index, range_set in enumerate(range_sets):
            for range_index, r in enumerate(range_set):
                where = path + ["ranges", set_index, range_index, "gateway"] if not ipam.get("subnet") \
                    else path + ["gateway"]
                if r.gateway.version != r.subnet.version or r.gateway not in r.subnet:
                    self.findings.append(Finding(json_path(where), ERROR,
                                                 f"gateway {r.gateway} is not in subnet {r.subnet}: "
                                                 "pods would get a route they cannot use"))


def _object(parent: dict, key: str) -> dict:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def effective_version(data: dict) -> str | None:
    """The version libcni runs a conflist at: `cniVersion`, or the highest of `cniVersions` it knows."""
    versions = data.get("cniVersions")
    if isinstance(versions, list):
        known = [v for v in versions if v in SUPPORTED_VERSIONS]
        if known:
            return max(known, key=lambda v: tuple(int(p) for p in v.split(".")))
    version = data.get("cniVersion")
    return version if isinstance(version, str) else None


def probe_versions(executable: str, version: str) -> tuple[str, ...] | None:
    """The versions a foreign plugin says it supports, asked as a runtime asks (CNI_COMMAND=VERSION)."""
    env = {"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    try:
        done = subprocess.run([executable], input=json.dumps({"cniVersion": version}).encode(), env=env,
                              capture_output=True, timeout=VERSION_PROBE_SECONDS, check=False)
        answer = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    supported = answer.get("supportedVersions") if isinstance(answer, dict) else None
    if not isinstance(supported, list):
        return None
    return tuple(str(v) for v in supported)


# ------------------------------------------------------------------ entry point


def kind_of(data: object) -> str:
    """Which file this is, from its shape: a conflist, one plugin's config, or the device plugin's config."""
    if isinstance(data, dict):
        if "plugins" in data:
            return "conflist"
        if "resources" in data or "resourceList" in data:
            return "device-plugin"
        if "type" in data:
            return "netconf"
    return "unknown"


def validate_file(path: str, bin_dirs: list[str]) -> Report:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        return Report(path, "unknown", [Finding("", ERROR, f"cannot read it: {e.strerror}")])
    except ValueError as e:
        return Report(path, "unknown", [Finding("", ERROR, f"not JSON: {e}")])
    report = Report(path, kind_of(data))
    if report.kind == "conflist":
        ConflistCheck(report, bin_dirs).conflist(data)
    elif report.kind == "netconf":
        ConflistCheck(report, bin_dirs).single(data)
    elif report.kind == "device-plugin":
        check_device_plugin_config(data, report)
    else:
        report.findings.append(Finding("", ERROR, "neither a conflist (`plugins`), a plugin config (`type`) nor "
                                                  "a device-plugin config (`resources` or `resourceList`)"))
    return report


def check_device_plugin_config(data: dict, report: Report) -> None:
    """Every problem the schema finds (each unknown key by name, as errors: the daemon refuses them), then
    the daemon's own checks, exactly as `pycni device-plugin` would refuse the file."""
    from pycni.protocol.schemacheck import strict_check
    from pycni.services.devices.config import ConfigError, Settings, parse, schema_view

    report.findings += strict_check(schema_view(data), "device-plugin.json")
    if report.findings:
        return
    try:
        for resource in parse(data, report.file, Settings()):
            report.checked.append(f"{resource.name}: ok")
    except ConfigError as e:
        report.findings.append(Finding(e.where, ERROR, e.message))


def default_bin_dirs() -> list[str]:
    path = os.environ.get("CNI_PATH", "")
    return [d for d in path.split(":") if d] or ["/opt/cni/bin"]


def _runtime_programming_host_ports() -> str:
    """Where the node's runtime programs hostPorts itself ("" when it does not, or nftables is not readable)."""
    try:
        from pycni.node.nodeinfo import runtime_programming_host_ports

        return runtime_programming_host_ports()
    except Exception:  # noqa: BLE001 - validate reads files first; the node's tables are a bonus
        return ""
