"""Driving a conflist the way a container runtime does (libcni's semantics).

Plugins run in order on ADD, each given the previous one's result as
`prevResult`; DEL runs them in reverse with the cached final result; CHECK
runs them in order with it. Results are cached in libcni's format under
`<cache_dir>/results/<network>-<containerID>-<ifname>`, so a DEL or CHECK
issued later (or by libcni itself) finds them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field

from pycni.host.files import remove_file, replace_file
from pycni.protocol.delegate import find
from pycni.protocol.errors import CNIError, InvalidConfig
from pycni.protocol.request import check_network_name

DEFAULT_CACHE_DIR = "/var/lib/cni"


@dataclass(slots=True)
class ConfList:
    name: str
    cni_version: str
    plugins: list[dict]
    raw: bytes
    disable_check: bool = False

    @classmethod
    def load(cls, path: str) -> ConfList:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise InvalidConfig(f"{path}: not JSON: {e}") from None
        plugins = data.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise InvalidConfig(f"{path}: a conflist needs a non-empty plugins list")
        return cls(check_network_name(data.get("name")), data.get("cniVersion", ""), plugins, raw,
                   bool(data.get("disableCheck")))


@dataclass(slots=True)
class Attachment:
    container_id: str
    netns: str
    ifname: str = "eth0"
    cni_args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict = field(default_factory=dict)


class PluginFailed(CNIError):
    def __init__(self, plugin_type: str, command: str, error: dict) -> None:
        super().__init__(error.get("msg", "plugin failed"), error.get("details", ""), error.get("code", 999))
        self.plugin_type = plugin_type
        self.command = command


class Runtime:
    def __init__(self, bin_dirs: list[str], cache_dir: str = DEFAULT_CACHE_DIR, env: dict | None = None) -> None:
        self.bin_dirs = bin_dirs
        self.cache_dir = cache_dir
        self.env = env if env is not None else {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}

    def add(self, conflist: ConfList, attachment: Attachment) -> dict:
        result: dict | None = None
        for plugin in conflist.plugins:
            result = self._invoke("ADD", conflist, plugin, attachment, result)
        final = result or {"cniVersion": conflist.cni_version}
        self._write_cache(conflist, attachment, final)
        return final

    def with_cached_arguments(self, network: str, attachment: Attachment) -> Attachment:
        """The attachment with the CNI_ARGS and capability args its ADD used, when none are given now."""
        if attachment.capability_args or len(attachment.cni_args) > 1:
            return attachment
        try:
            with open(self._cache_path(network, attachment), encoding="utf-8") as f:
                entry = json.load(f)
        except (FileNotFoundError, ValueError):
            return attachment
        return Attachment(attachment.container_id, attachment.netns or entry.get("netns", ""), attachment.ifname,
                          [tuple(p) for p in entry.get("cniArgs") or []] or attachment.cni_args,
                          entry.get("capabilityArgs") or {})

    def check(self, conflist: ConfList, attachment: Attachment) -> None:
        attachment = self.with_cached_arguments(conflist.name, attachment)
        cached = self.cached_result(conflist.name, attachment)
        if cached is None:
            raise CNIError(f"no cached result for {attachment.container_id}/{attachment.ifname}: was it added?")
        for plugin in conflist.plugins:
            self._invoke("CHECK", conflist, plugin, attachment, cached)

    def delete(self, conflist: ConfList, attachment: Attachment) -> None:
        attachment = self.with_cached_arguments(conflist.name, attachment)
        cached = self.cached_result(conflist.name, attachment)
        for plugin in reversed(conflist.plugins):
            self._invoke("DEL", conflist, plugin, attachment, cached)
        remove_file(self._cache_path(conflist.name, attachment))

    def gc(self, conflist: ConfList, valid: list[tuple[str, str]]) -> None:
        """libcni's GCNetworkList: DEL cached attachments not in `valid`, then GC every plugin."""
        valid_set = set(valid)
        for cached in self.cached_attachments(conflist.name):
            key = (cached["containerId"], cached["ifName"])
            if key not in valid_set:
                attachment = Attachment(key[0], cached.get("netns", ""), key[1],
                                        [tuple(p) for p in cached.get("cniArgs") or []],
                                        cached.get("capabilityArgs") or {})
                self.delete(conflist, attachment)
        entries = [{"containerID": c, "ifname": i} for c, i in valid]
        for plugin in conflist.plugins:
            # GC is a 1.1.0 verb: a 1.0.0 list still gets it from plugins that speak 1.1.0
            version = self._version_for_1_1_verbs(conflist.cni_version, plugin.get("type", ""))
            if version:
                self._invoke("GC", conflist, plugin, None, None, version=version,
                             extra={"cni.dev/valid-attachments": entries, "cni.dev/attachments": entries})

    def _version_for_1_1_verbs(self, list_version: str, plugin_type: str) -> str:
        from pycni.protocol.versions import at_least

        if at_least(list_version or "0.0.0", "1.1.0"):
            return list_version
        done = subprocess.run([self._find(plugin_type)], input=b'{"cniVersion":"1.1.0"}',
                              env={**self.env, "CNI_COMMAND": "VERSION"}, capture_output=True, timeout=30)
        try:
            supported = json.loads(done.stdout).get("supportedVersions", [])
        except ValueError:
            return ""
        return "1.1.0" if "1.1.0" in supported else ""

    def status(self, conflist: ConfList) -> None:
        for plugin in conflist.plugins:
            version = self._version_for_1_1_verbs(conflist.cni_version, plugin.get("type", ""))
            if version:
                self._invoke("STATUS", conflist, plugin, None, None, version=version)

    def cached_result(self, network: str, attachment: Attachment) -> dict | None:
        try:
            with open(self._cache_path(network, attachment), encoding="utf-8") as f:
                return json.load(f).get("result")
        except (FileNotFoundError, ValueError):
            return None

    def cached_attachments(self, network: str) -> list[dict]:
        directory = os.path.join(self.cache_dir, "results")
        found = []
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            if not name.startswith(network + "-"):
                continue
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as f:
                    entry = json.load(f)
            except (OSError, ValueError):
                continue
            if entry.get("networkName") == network:
                found.append(entry)
        return found

    def _cache_path(self, network: str, attachment: Attachment) -> str:
        return os.path.join(self.cache_dir, "results", f"{network}-{attachment.container_id}-{attachment.ifname}")

    def _write_cache(self, conflist: ConfList, attachment: Attachment, result: dict) -> None:
        entry = {
            "kind": "cniCacheV1",
            "containerId": attachment.container_id,
            "config": base64.b64encode(conflist.raw).decode(),
            "ifName": attachment.ifname,
            "networkName": conflist.name,
            "netns": attachment.netns,
            "cniArgs": [list(p) for p in attachment.cni_args] or None,
            "capabilityArgs": attachment.capability_args or None,
            "result": result,
        }
        path = self._cache_path(conflist.name, attachment)
        replace_file(path, json.dumps({k: v for k, v in entry.items() if v is not None}).encode())

    def _find(self, plugin_type: str) -> str:
        return find(plugin_type, self.bin_dirs)

    def _invoke(self, command: str, conflist: ConfList, plugin: dict, attachment: Attachment | None,
                prev: dict | None, extra: dict | None = None, version: str = "") -> dict | None:
        plugin_type = plugin.get("type", "")
        config = {**plugin, "cniVersion": version or conflist.cni_version, "name": conflist.name}
        if attachment is not None:
            wanted = {k for k, on in (plugin.get("capabilities") or {}).items() if on}
            runtime_config = {k: v for k, v in attachment.capability_args.items() if k in wanted}
            if runtime_config:
                config["runtimeConfig"] = runtime_config
        if prev is not None:
            config["prevResult"] = prev
        config.update(extra or {})
        env = {**self.env, "CNI_COMMAND": command, "CNI_PATH": ":".join(self.bin_dirs)}
        if attachment is not None:
            env.update(CNI_CONTAINERID=attachment.container_id, CNI_NETNS=attachment.netns,
                       CNI_IFNAME=attachment.ifname, CNI_ARGS=";".join(f"{k}={v}" for k, v in attachment.cni_args))
        done = subprocess.run([self._find(plugin_type)], input=json.dumps(config).encode(), env=env,
                              capture_output=True, timeout=120)
        output = done.stdout.decode(errors="replace").strip()
        if done.returncode != 0:
            try:
                error = json.loads(output)
            except ValueError:
                error = {"code": 999, "msg": output or done.stderr.decode(errors="replace").strip()}
            raise PluginFailed(plugin_type, command, error)
        return json.loads(output) if command == "ADD" and output else prev
