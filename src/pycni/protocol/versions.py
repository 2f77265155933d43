"""CNI spec versions: what pycni speaks and how versions compare."""

from __future__ import annotations

from pycni.protocol.errors import DecodeFailure, IncompatibleVersion

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]

# The first spec version that knows each verb.
VERB_MINIMUM_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


def parse(version: str) -> tuple[int, int, int]:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise DecodeFailure(f"invalid version {version!r}", "a CNI version looks like 1.0.0")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def require_supported(version: str, supported: tuple[str, ...] = SUPPORTED_VERSIONS) -> None:
    parse(version)
    if version not in supported:
        raise IncompatibleVersion(
            "incompatible CNI versions",
            f'config is "{version}", plugin supports {list(supported)}',
        )


def require_verb(command: str, version: str) -> None:
    minimum = VERB_MINIMUM_VERSION.get(command)
    if minimum and not at_least(version, minimum):
        raise IncompatibleVersion(
            f"config version does not allow {command}",
            f"{command} needs cniVersion {minimum} or later, the config has {version}",
        )
