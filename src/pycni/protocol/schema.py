"""Config validation against the JSON Schemas shipped in `pycni/schemas/`.

The schemas are the source of truth (the test-suite checks them with the
`jsonschema` package and `pycni validate` uses it too); on a plugin's hot path
this small interpreter of the keywords those schemas use does the same work
without jsonschema's ~100 ms import. While validating, object keys are
respelled to the schema's property names when they match case-insensitively,
as Go's JSON decoder does.
"""

from __future__ import annotations

import json
import os
import re

from pycni.protocol.errors import InvalidConfig
from pycni.protocol.jsonkeys import canonicalize

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "schemas")

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}

_loaded: dict[str, dict] = {}


def load(name: str) -> dict:
    if name not in _loaded:
        with open(os.path.join(SCHEMA_DIR, name), encoding="utf-8") as f:
            _loaded[name] = json.load(f)
    return _loaded[name]


def load_all() -> None:
    """Read every schema now (the pycni service, before its calls enter their callers' roots)."""
    for name in sorted(os.listdir(SCHEMA_DIR)):
        if name.endswith(".json"):
            load(name)


def validate(instance, schema_name: str):
    """Return `instance` with canonical key spelling, or raise InvalidConfig naming the key and value."""
    return _Validator(schema_name).check(instance, load(schema_name), "")


class _Validator:
    def __init__(self, schema_name: str) -> None:
        self.document = schema_name

    def check(self, value, schema: dict, path: str):
        if "$ref" in schema:
            return self._follow(schema["$ref"], value, path)
        expected = schema.get("type")
        if expected is not None:
            kinds = expected if isinstance(expected, list) else [expected]
            if not any(_TYPES[k](value) for k in kinds):
                self.fail(path, value, f"must be of type {' or '.join(kinds)}")
        if "enum" in schema and value not in schema["enum"]:
            self.fail(path, value, f"must be one of {schema['enum']}")
        if "anyOf" in schema:
            value = self._any_of(value, schema["anyOf"], path)
        if isinstance(value, dict):
            value = self._object(value, schema, path)
        elif isinstance(value, list):
            value = self._array(value, schema, path)
        elif isinstance(value, str):
            self._string(value, schema, path)
        elif _TYPES["number"](value):
            self._number(value, schema, path)
        return value

    def fail(self, path: str, value, reason: str) -> None:
        shown = json.dumps(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = path or "config"
        raise InvalidConfig(f"invalid network config: {where} {reason} (got {shown})", f"schema {self.document}")

    def _follow(self, ref: str, value, path: str):
        document, _, pointer = ref.partition("#")
        outer = self.document
        if document:
            self.document = document
        target = load(self.document)
        for part in filter(None, pointer.split("/")):
            target = target[part]
        try:
            return self.check(value, target, path)
        finally:
            self.document = outer

    def _any_of(self, value, options: list, path: str):
        reasons = []
        for option in options:
            try:
                return self.check(value, option, path)
            except InvalidConfig as e:
                reasons.append(e.msg.split(" ", 3)[-1])
        self.fail(path, value, "matches none of the allowed forms: " + "; ".join(reasons))

    def _object(self, value: dict, schema: dict, path: str) -> dict:
        properties = schema.get("properties", {})
        if properties:
            value = canonicalize(value, properties)
        for key in schema.get("required", ()):
            if key not in value:
                self.fail(_join(path, key), None, "is required")
        extra = schema.get("additionalProperties", True)
        out = {}
        for key, item in value.items():
            if key in properties:
                out[key] = self.check(item, properties[key], _join(path, key))
            elif extra is False:
                self.fail(_join(path, key), item, "is not a known key")
            elif isinstance(extra, dict):
                out[key] = self.check(item, extra, _join(path, key))
            else:
                out[key] = item
        return out

    def _array(self, value: list, schema: dict, path: str) -> list:
        if len(value) < schema.get("minItems", 0):
            self.fail(path, value, f"needs at least {schema['minItems']} entries")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.fail(path, value, f"takes at most {schema['maxItems']} entries")
        items = schema.get("items")
        if items is None:
            return value
        return [self.check(item, items, f"{path}[{i}]") for i, item in enumerate(value)]

    def _string(self, value: str, schema: dict, path: str) -> None:
        if len(value) < schema.get("minLength", 0):
            self.fail(path, value, f"must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.fail(path, value, f"must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            self.fail(path, value, f"must match {schema['pattern']}")
        fmt = schema.get("format")
        if fmt in FORMATS and not FORMATS[fmt](value):
            self.fail(path, value, f"is not a valid {fmt}")

    def _number(self, value, schema: dict, path: str) -> None:
        if "minimum" in schema and value < schema["minimum"]:
            self.fail(path, value, f"must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            self.fail(path, value, f"must be <= {schema['maximum']}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_cidr(text: str) -> bool:
    import ipaddress

    address, slash, prefix = text.partition("/")
    if not slash or not prefix.isdigit():
        return False
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return is_ip(address)


def is_ip_or_cidr(text: str) -> bool:
    return is_cidr(text) if "/" in text else is_ip(text)


def is_mac(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", text) is not None


FORMATS = {"ip": is_ip, "cidr": is_cidr, "ip-or-cidr": is_ip_or_cidr, "mac": is_mac}
