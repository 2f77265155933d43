"""Whole-file checks of a config against the shipped JSON Schemas, for tools and long-lived services.

The `jsonschema` package does the checking (about 100 ms to import: never on a plugin's hot path, where
`schema.py` interprets the same schemas). Beside it, a walk that names every key its schema does not know,
with its JSON path and the closest known spelling: the CNI spec lets plugins ignore unknown keys, so a typo
there is silent unless something looks for it. `pycni validate` reports those as warnings; the device
plugin, whose config must never be widened by a key it did not understand, refuses them.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass
from typing import Any

from pycni.protocol.schema import FORMATS, SCHEMA_DIR, load

ERROR = "error"
WARNING = "warning"

# A schema keyword of pycni's own (jsonschema ignores it): keys a config may carry in another tool's format
# that pycni knows and deliberately does not implement, each with the reason, so they are refused by name.
REFUSED_KEYWORD = "x-pycni-refused"


@dataclass(frozen=True)
class Finding:
    """One problem in a file: where (a JSON path), how bad, what, and the likely intended spelling."""

    path: str
    severity: str
    message: str
    suggestion: str = ""

    @property
    def text(self) -> str:
        """The message, with the likely intended spelling."""
        return self.message + (f"; did you mean `{self.suggestion}`?" if self.suggestion else "")

    def __str__(self) -> str:
        return f"`{self.path or '.'}`: {self.text}"


def json_path(parts) -> str:
    """`plugins[0].ipam.ranges[1]` from a sequence of keys and indexes."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def closest(key: str, known) -> str:
    """The known key `key` was most likely meant to be: a case variant first, then the nearest spelling."""
    known = list(known)
    folded = {k.casefold(): k for k in known}
    if key.casefold() in folded:
        return folded[key.casefold()]
    near = difflib.get_close_matches(key.casefold(), list(folded), n=1, cutoff=0.6)
    return folded[near[0]] if near else ""


def schema_errors(instance, schema_name: str, path: list | None = None) -> list[Finding]:
    """What the jsonschema package finds wrong with `instance` against a shipped schema, except unknown
    keys, which `unknown_keys` names with a suggestion."""
    errors = sorted(_validator(schema_name).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return [Finding(json_path((path or []) + list(e.absolute_path)), ERROR, e.message)
            for e in map(_reason, errors) if e.validator != "additionalProperties"]


@functools.cache
def _validator(schema_name: str) -> Any:
    """jsonschema's validator of one shipped schema (made once per schema: a conflist asks for the same ones
    plugin after plugin)."""
    return validator_for(load(schema_name))


def validator_for(schema: dict[str, Any]) -> Any:
    """jsonschema's validator of `schema`, references into the shipped schemas resolved and pycni's formats
    checked."""
    import jsonschema

    registry, checker = _shipped()
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=checker)


@functools.cache
def _shipped() -> tuple[Any, Any]:
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (name, Resource.from_contents(load(name))) for name in os.listdir(SCHEMA_DIR) if name.endswith(".json"))
    checker = jsonschema.FormatChecker()
    for name, check in FORMATS.items():
        checker.checks(name)(check)
    return registry, checker


def first_error(instance: object, schema: dict[str, Any]) -> tuple[str, str] | None:
    """The most telling problem jsonschema finds in `instance` against `schema`: (JSON path, message)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(validator_for(schema).iter_errors(instance))
    return None if error is None else (json_path(error.absolute_path), error.message)


def resolved(schema: dict[str, Any], document: str = "") -> dict[str, Any]:
    """`schema` with its top-level `$ref`s followed (into the shipped documents)."""
    return _Walk(document, ERROR, False).resolve(schema)[0]


def _reason(error):
    """Of an anyOf that nothing matched, the reason of the alternative that got furthest, rather than
    "is not valid under any of the given schemas"."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


class _Walk:
    """Every key of a value that its schema does not name.

    An object schema with `properties` is closed for this walk unless it says `"additionalProperties": true`
    out loud (free namespaces such as `args`); a schema without `properties` is free-form. A key that differs
    from a known one only in case is read by the plugins (keys match case-insensitively, as Go's decoder
    matches them) and is reported as such, not as unknown.

    Why not jsonschema's `unevaluatedProperties: false` (a strict variant of each schema): in 2020-12 a key
    counts as evaluated only by a subschema that *passed*. A key of an `anyOf` branch whose other key has a
    wrong type (`{"type": "host-local", "ranges": "x", "subnet": ...}`) would be reported as unknown beside
    the type error, and an entry of an `if`/`then` type whose `then` fails would have every key of its type
    reported unknown: the first (most telling) message would be wrong. It also has no notion of the keys
    read case-insensitively, of `x-pycni-refused`, or of a closest spelling. This walk merges every branch
    a value could take, so an unknown key is one no branch names, whatever else is wrong.
    """

    def __init__(self, document: str, severity: str, case_insensitive: bool) -> None:
        self.document = document
        self.severity = severity
        self.case_insensitive = case_insensitive
        self.findings: list[Finding] = []

    def resolve(self, schema: dict) -> tuple[dict, str]:
        document = self.document
        while "$ref" in schema:
            target_doc, _, pointer = schema["$ref"].partition("#")
            document = target_doc or document
            schema = load(document)
            for part in filter(None, pointer.split("/")):
                schema = schema[part]
        return schema, document

    def walk(self, value, schema, path: list, skip: tuple[str, ...] = ()) -> None:
        if not isinstance(schema, dict):  # `true`: anything goes
            return
        schema, document = self.resolve(schema)
        outer, self.document = self.document, document
        try:
            options = [schema] + [self.resolve(o)[0] for o in [*schema.get("anyOf", ()), *schema.get("oneOf", ())]]
            if isinstance(value, dict):
                options += [self.resolve(branch["then"])[0] for branch in schema.get("allOf", ())
                            if "then" in branch and _holds(branch.get("if", {}), value)]
                properties: dict = {}
                refused: dict = {}
                for option in options:
                    properties.update(option.get("properties", {}))
                    refused.update(option.get(REFUSED_KEYWORD, {}))
                if properties and schema.get("additionalProperties") is not True:
                    self._object(value, properties, refused, path, skip)
            elif isinstance(value, list):
                items = next((o["items"] for o in options if isinstance(o.get("items"), dict)), None)
                if items is not None:
                    for i, item in enumerate(value):
                        self.walk(item, items, path + [i])
        finally:
            self.document = outer

    def _object(self, value: dict, properties: dict, refused: dict, path: list, skip: tuple[str, ...]) -> None:
        for key, item in value.items():
            if not isinstance(key, str) or key in skip or key.startswith("cni.dev/"):
                continue
            if key in properties:
                self.walk(item, properties[key], path + [key])
                continue
            where = json_path(path + [key])
            if key in refused:
                self.findings.append(Finding(where, self.severity, f"not implemented by pycni: {refused[key]}"))
                continue
            guess = closest(key, [*properties, *skip])
            if self.case_insensitive and guess and guess.casefold() == key.casefold():
                self.findings.append(Finding(where, WARNING, f"read as `{guess}` (keys match case-insensitively, "
                                                             "as in Go), but tools that match exactly miss it",
                                             guess))
                if guess in properties:
                    self.walk(item, properties[guess], path + [key])
            else:
                self.findings.append(Finding(where, self.severity, "unknown key", guess))


def _holds(condition: dict, value: dict) -> bool:
    """An `if` of the form the shipped schemas use: required keys, and properties that, where present, equal
    a constant."""
    return all(key in value for key in condition.get("required", ())) and \
        all(key not in value or value[key] == rule.get("const", value[key])
            for key, rule in condition.get("properties", {}).items())


def unknown_keys(value, schema_name: str, path: list | None = None, schema: dict | None = None,
                 skip: tuple[str, ...] = (), severity: str = WARNING, case_insensitive: bool = True
                 ) -> list[Finding]:
    """Every key in `value` that the schema (`schema_name`, or `schema` inside that document) does not know;
    keys in `skip` are known to the caller."""
    walk = _Walk(schema_name, severity, case_insensitive)
    walk.walk(value, schema if schema is not None else load(schema_name), path or [], skip)
    return walk.findings


def strict_check(instance, schema_name: str) -> list[Finding]:
    """Schema errors and unknown keys together, all as errors, unknown keys first (a misspelt key usually
    explains the other errors)."""
    return unknown_keys(instance, schema_name, severity=ERROR, case_insensitive=False) + \
        schema_errors(instance, schema_name)
