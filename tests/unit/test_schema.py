"""The hot-path schema interpreter agrees with the jsonschema package on the shipped schemas."""

import json
import os

import jsonschema
import pytest
from referencing import Registry, Resource

from pycni.protocol import schema
from pycni.protocol.errors import InvalidConfig

SCHEMAS = sorted(f for f in os.listdir(schema.SCHEMA_DIR) if f.endswith(".json"))


def _registry():
    resources = []
    for name in SCHEMAS:
        with open(os.path.join(schema.SCHEMA_DIR, name)) as f:
            resources.append((name, Resource.from_contents(json.load(f))))
    return Registry().with_resources(resources)


def _reference_validator(name):
    checker = jsonschema.FormatChecker()
    for fmt, check in schema.FORMATS.items():
        checker.checks(fmt)(check)
    return jsonschema.Draft202012Validator(schema.load(name), registry=_registry(), format_checker=checker)


@pytest.mark.parametrize("name", SCHEMAS)
def test_schemas_are_valid_json_schema(name):
    jsonschema.Draft202012Validator.check_schema(schema.load(name))


HOST_LOCAL_CASES = [
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}, True),
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.0.1"}]],
                                                   "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/tmp/x"}}, True),
    ({"cniVersion": "1.0.0", "name": "n"}, False),
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.0.0.0"}]]}}, False),
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "x"}]]}},
     False),
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[]]}}, False),
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": "10.0.0.0/24"}}, False),
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {"routes": [{"gw": "10.0.0.1"}]}}, False),
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {"dataDir": "relative/dir"}}, False),
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {}, "runtimeConfig": {"ips": ["10.0.0.5/24", "fd00::5"]}}, True),
    ({"cniVersion": "1.0.0", "name": "n", "ipam": {}, "runtimeConfig": {"ips": ["nope"]}}, False),
    ({"cniVersion": "1.0.0", "name": "../x", "ipam": {}}, False),
    ({"cniVersion": 1, "name": "n", "ipam": {}}, False),
]


@pytest.mark.parametrize("config,valid", HOST_LOCAL_CASES)
def test_agrees_with_jsonschema(config, valid):
    assert _reference_validator("host-local.json").is_valid(config) is valid
    if valid:
        schema.validate(config, "host-local.json")
    else:
        with pytest.raises(InvalidConfig) as raised:
            schema.validate(config, "host-local.json")
        assert raised.value.code == 7


def test_error_names_the_key_and_value():
    with pytest.raises(InvalidConfig) as raised:
        schema.validate({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "300.0.0.0/8"}]]}},
                        "host-local.json")
    assert "ipam.ranges[0][0].subnet" in raised.value.msg and "300.0.0.0/8" in raised.value.msg


def test_keys_are_respelled_like_go_decodes_them():
    out = schema.validate({"CNIVersion": "1.0.0", "name": "n", "IPAM": {"Subnet": "10.0.0.0/24"}}, "host-local.json")
    assert out["ipam"]["subnet"] == "10.0.0.0/24" and out["cniVersion"] == "1.0.0"


def test_exact_spelling_wins_over_a_case_variant():
    out = schema.validate({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.0.0.0/24",
                                                                        "SUBNET": "10.1.0.0/24"}}, "host-local.json")
    assert out["ipam"]["subnet"] == "10.0.0.0/24"
