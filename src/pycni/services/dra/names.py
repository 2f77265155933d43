"""How pycni's own devices are named in its DRA pool (`pycni dra`, the driver `pycni.io`): the driver names
them so, and the device plugin, reading which devices the driver prepared for claims, finds them by the same
names (one owner per device). Pure, and the same for both as long as both read the same config."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence

DRIVER_NAME = "pycni.io"
MAX_LABEL = 63


def prefixes(resource_names: Sequence[str]) -> dict[str, str]:
    """Each resource's prefix of its devices' names: the part of its name after the domain (`nic` for
    `pycni.io/nic`), with a digest of the whole name where two resources share that part."""
    short = {name: name.rpartition("/")[2] for name in resource_names}
    counts = Counter(short.values())
    return {name: part if counts[part] == 1 else f"{part}-{hashlib.sha256(name.encode()).hexdigest()[:4]}"
            for name, part in short.items()}


def device_name(prefix: str, device_id: str) -> str:
    """A device's name in the pool, a DNS label: `<prefix>-<device ID>` (`nic-eth1`), lower case; a name
    that had to be changed (`0000:3b:02.2`) or cut carries a digest of the original, so two devices never
    share one."""
    wanted = f"{prefix}-{device_id}"
    readable = re.sub(r"[^a-z0-9]+", "-", wanted.lower()).strip("-")
    if readable == wanted and len(readable) <= MAX_LABEL:
        return readable
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:8]
    return f"{readable[:MAX_LABEL - 9].rstrip('-')}-{digest}"
