"""Kubernetes quantities (`10M`, `10Mi`, `500k`, `1G`) as the kubelet reads the bandwidth annotations."""

from __future__ import annotations

ANNOTATION_INGRESS = "kubernetes.io/ingress-bandwidth"
ANNOTATION_EGRESS = "kubernetes.io/egress-bandwidth"

_SUFFIXES = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
# The kubelet's limits for the bandwidth annotations: 1 kbit/s to 1 Pbit/s.
MIN_BANDWIDTH = 1000
MAX_BANDWIDTH = 10**15
# What containerd and CRI-O send as the burst for an annotation (bits): "unset".
RUNTIME_BURST = 2**32 - 1


def parse_quantity(text: str) -> int:
    """The value of a quantity, rounded up to a whole number, as resource.Quantity.Value() does."""
    import math
    import re
    from decimal import Decimal

    match = re.fullmatch(r"\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([a-zA-Z]*)", text.strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"{text!r} is not a quantity (examples: 10M, 10Mi, 500k)")
    return math.ceil(Decimal(match.group(1)) * _SUFFIXES[match.group(2)])


def bandwidth_from_annotations(annotations: dict[str, str]) -> dict:
    """The `bandwidth` capability a runtime derives from a pod's annotations (bits/s, burst "unset")."""
    out = {}
    for key, prefix in ((ANNOTATION_INGRESS, "ingress"), (ANNOTATION_EGRESS, "egress")):
        if key in annotations:
            rate = parse_quantity(annotations[key])
            if not MIN_BANDWIDTH <= rate <= MAX_BANDWIDTH:
                raise ValueError(f"{key}={annotations[key]} is outside 1k..1P bits per second")
            out[f"{prefix}Rate"] = rate
            out[f"{prefix}Burst"] = RUNTIME_BURST
    return out
