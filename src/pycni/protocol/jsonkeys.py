"""JSON object keys matched the way Go's encoding/json matches them.

Go prefers an exact key and otherwise takes a case-insensitive match, and real
configs rely on it (e.g. `"bandWidth"` for `bandwidth`).
"""

from __future__ import annotations


def lookup(obj: dict, key: str, default=None):
    if key in obj:
        return obj[key]
    folded = key.casefold()
    for name, value in obj.items():
        if isinstance(name, str) and name.casefold() == folded:
            return value
    return default


def canonicalize(obj: dict, names) -> dict:
    """A copy of obj whose keys that match one of `names` case-insensitively are spelled as in `names`."""
    by_fold = {n.casefold(): n for n in names}
    out: dict = {}
    for key, value in obj.items():
        canonical = key if key in by_fold.values() else by_fold.get(key.casefold(), key)
        if canonical in out and canonical != key:
            continue  # an exact spelling elsewhere in obj wins over a case variant
        out[canonical] = value
    return out
