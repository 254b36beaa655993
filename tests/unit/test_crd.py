"""The CustomResourceDefinition: shape, documentation, and what it admits or rejects.

A real API server is not needed to judge the schema: the OpenAPI part is checked with
``jsonschema`` (after applying schema defaults, as the API server does before validating),
and the CEL ``x-kubernetes-validations`` rules are evaluated with ``cel-python``. Unknown
fields are rejected, as ``kubectl apply`` does with its default strict field validation.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, get_args

import celpy
import jsonschema
import pytest
import yaml
from celpy.adapter import json_to_cel
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError

from tests.support.kube_admission import apply_defaults
from warehouse_operator import models
from warehouse_operator.crd import crd_object, crd_text

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED_CRD = ROOT / "crds" / "warehouseconnections.warehouse-operator.io.yaml"
PACKAGED_CRD = ROOT / "operator" / "warehouse_operator" / "data" / "crd.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

Schema = dict[str, Any]


# --- helpers: the schema as the API server uses it ------------------------------------------


@cache
def crd() -> dict[str, Any]:
    """The parsed CRD, loaded once (callers must not change it)."""
    return crd_object()


def version() -> dict[str, Any]:
    versions: list[dict[str, Any]] = crd()["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def root_schema() -> Schema:
    schema: Schema = version()["schema"]["openAPIV3Schema"]
    return schema


def spec_schema() -> Schema:
    schema: Schema = root_schema()["properties"]["spec"]
    return schema


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every node of a schema with its path (``.spec.postgres.port``, ``.status.checks[]``)."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


def to_json_schema(schema: Schema) -> Schema:
    """The OpenAPI schema as a draft-4 JSON Schema with strict field validation."""
    out: Schema = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


@cache
def cel_program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_errors(schema: Schema, value: Any, path: str) -> list[str]:
    """Messages of the CEL rules that reject ``value`` (or cannot be evaluated on it)."""
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        try:
            verdict = cel_program(rule["rule"]).evaluate({"self": json_to_cel(value)})
        except CELEvalError as exc:
            errors.append(f"{path}: {rule['message']} (evaluation error: {exc.args[0]})")
            continue
        if not (isinstance(verdict, BoolType) and bool(verdict)):
            errors.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                errors += cel_errors(child, value[name], f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                errors += cel_errors(extra, item, f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += cel_errors(schema["items"], item, f"{path}[{index}]")
    return errors


def admission_errors(obj: dict[str, Any]) -> list[str]:
    """What the API server would say about creating ``obj``: empty when admitted."""
    schema = root_schema()
    defaulted = apply_defaults(schema, obj)
    validator = jsonschema.Draft4Validator(to_json_schema(schema))
    errors = [
        "." + ".".join(str(p) for p in error.absolute_path) + ": " + error.message
        for error in validator.iter_errors(defaulted)
    ]
    return errors + cel_errors(schema, defaulted, "")


def connection(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "warehouse-operator.io/v1alpha1",
        "kind": "WarehouseConnection",
        "metadata": {"name": "sample", "namespace": "default"},
        "spec": spec,
    }


SECRET = {"name": "creds"}
PG = {"host": "db.example.com", "database": "app"}
SF = {"account": "myorg-account"}
BQ = {"projectId": "my-project"}


def pg(**extra: Any) -> dict[str, Any]:
    return {"provider": "postgres", "credentialsSecretRef": SECRET, "postgres": PG, **extra}


def sf(**extra: Any) -> dict[str, Any]:
    return {"provider": "snowflake", "credentialsSecretRef": SECRET, "snowflake": SF, **extra}


def bq(**extra: Any) -> dict[str, Any]:
    return {"provider": "bigquery", "credentialsSecretRef": SECRET, "bigquery": BQ, **extra}


# --- the two copies ----------------------------------------------------------------------------


def test_packaged_and_published_crd_are_byte_identical() -> None:
    assert PACKAGED_CRD.read_bytes() == PUBLISHED_CRD.read_bytes()
    assert crd_text().encode() == PUBLISHED_CRD.read_bytes()


def test_crd_parses_as_one_v1_crd() -> None:
    docs = list(yaml.safe_load_all(crd_text()))
    assert len(docs) == 1
    obj = crd_object()
    assert obj["apiVersion"] == "apiextensions.k8s.io/v1"
    assert obj["kind"] == "CustomResourceDefinition"
    assert obj["metadata"]["name"] == f"{models.PLURAL}.{models.GROUP}"


# --- identity, versions, columns -------------------------------------------------------------


def test_names_scope_and_subresources() -> None:
    spec = crd()["spec"]
    assert spec["group"] == models.GROUP == "warehouse-operator.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": models.KIND,
        "listKind": "WarehouseConnectionList",
        "plural": models.PLURAL,
        "singular": "warehouseconnection",
        "shortNames": ["whc"],
        "categories": ["warehouse"],
    }
    ver = version()
    assert (ver["name"], ver["served"], ver["storage"]) == (models.VERSION, True, True)
    assert ver["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
        for c in version()["additionalPrinterColumns"]
    ]
    assert columns == [
        ("Provider", "string", ".spec.provider", 0),
        ("Status", "string", ".status.phase", 0),
        ("Latency", "integer", ".status.latencyMs", 0),
        ("Last Tested", "date", ".status.lastTestedAt", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("Reason", "string", ".status.reason", 1),
        ("Message", "string", ".status.message", 1),
    ]
    for column in version()["additionalPrinterColumns"]:
        assert column["description"]
    latency = version()["additionalPrinterColumns"][2]
    assert "Milliseconds" in latency["description"]
    # each column points at a field the schema declares
    for column in version()["additionalPrinterColumns"]:
        parts = column["jsonPath"].lstrip(".").split(".")
        if parts[0] == "metadata":
            continue
        node = root_schema()
        for part in parts:
            node = node["properties"][part]
        assert node["type"] == {"date": "string"}.get(column["type"], column["type"])


# --- structure and documentation ---------------------------------------------------------------


def test_every_field_has_a_useful_description() -> None:
    missing = [
        path or "<root>"
        for path, node in walk(root_schema())
        # root metadata may hold nothing but its type: the API server rejects the CRD otherwise
        if path != ".metadata" and len(str(node.get("description", "")).strip()) < 10
    ]
    assert missing == []
    account = spec_schema()["properties"]["snowflake"]["properties"]["account"]
    assert "myorg-account" in account["description"]


def test_schema_is_structural() -> None:
    for path, node in walk(root_schema()):
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("type") != "array" or "items" in node, path
        for combinator in ("allOf", "anyOf", "oneOf", "not"):
            assert combinator not in node, f"{path}: keep the schema free of {combinator}"
        if node.get("x-kubernetes-list-type") == "map":
            items = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in items.get("required", []) or "default" in items["properties"][key]
        for name in node.get("required", []):
            assert name in node["properties"], f"{path}: required {name} is not a property"
    # the API server refuses anything in the root metadata schema but its type (not even a
    # description) and restrictions of name and generateName
    assert root_schema()["properties"]["metadata"] == {"type": "object"}
    assert "additionalProperties" not in root_schema()


def test_defaults_are_valid_values_of_their_fields() -> None:
    for path, node in walk(root_schema()):
        if "default" not in node:
            continue
        errors = list(jsonschema.Draft4Validator(to_json_schema(node)).iter_errors(node["default"]))
        assert errors == [], path
        assert cel_errors(node, node["default"], path) == []


def test_every_cel_rule_compiles_and_has_a_message() -> None:
    rules = [
        (path, rule)
        for path, node in walk(root_schema())
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 9
    for path, rule in rules:
        assert rule["message"], path
        cel_program(rule["rule"])
        if "fieldPath" in rule:
            assert rule["fieldPath"].lstrip(".") in walk_node(path)["properties"]


def walk_node(path: str) -> Schema:
    return dict(walk(root_schema()))[path]


def test_cel_strings_have_bounded_size() -> None:
    """Strings and maps that CEL rules touch are bounded, keeping the rules' estimated cost low."""
    for path, node in walk(root_schema()):
        if node.get("type") == "string" and "enum" not in node and path.startswith(".spec"):
            assert "maxLength" in node, path
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path


# --- defaulting ------------------------------------------------------------------------------


def test_defaults_match_the_models() -> None:
    defaulted = apply_defaults(spec_schema(), pg())
    assert defaulted["postgres"]["port"] == 5432
    assert defaulted["postgres"]["sslMode"] == "prefer"
    assert defaulted["testTimeout"] == "10s"
    assert defaulted["suspend"] is False
    # no schema default: the operator's --default-test-interval applies
    assert "testInterval" not in defaulted
    sf = apply_defaults(spec_schema(), {"provider": "snowflake", "snowflake": SF})["snowflake"]
    assert (sf["authMethod"], sf["schema"]) == ("password", "PUBLIC")

    parsed = models.parse_spec(pg())
    assert parsed.postgres is not None
    assert parsed.postgres.port == defaulted["postgres"]["port"]
    assert parsed.postgres.ssl_mode == defaulted["postgres"]["sslMode"]
    assert parsed.test_timeout == defaulted["testTimeout"]
    assert parsed.suspend is defaulted["suspend"]
    assert parsed.test_interval is None


# --- what is admitted --------------------------------------------------------------------------

GOOD_SPECS: dict[str, dict[str, Any]] = {
    "postgres minimal": pg(),
    "postgresql alias": {**pg(), "provider": "postgresql"},
    "postgres full": pg(
        displayName="Orders (read replica)",
        credentialsSecretRef={
            "name": "app.db-creds",
            "keys": {"username": "user", "password": "pgpass"},
        },
        postgres={"host": "10.0.0.7", "port": 6432, "database": "orders", "sslMode": "verify-full"},
        testInterval="1h30m",
        testTimeout="2.5s",
        suspend=True,
    ),
    "postgres ipv6 host, port 1": pg(postgres={"host": "fd00::1", "port": 1, "database": "x"}),
    "port 65535": pg(postgres={**PG, "port": 65535}),
    "snowflake password": sf(),
    "snowflake keyPair full": sf(
        credentialsSecretRef={"name": "sf", "keys": {"private_key": "rsa_key.p8"}},
        snowflake={
            "account": "xy12345.eu-west-1",
            "authMethod": "keyPair",
            "warehouse": "COMPUTE_WH",
            "database": "ANALYTICS",
            "role": "REPORTER",
            "schema": "MARTS",
            "endpoint": "http://127.0.0.1:8085",
        },
    ),
    "bigquery minimal": bq(),
    "bigquery full": bq(
        credentialsSecretRef={"name": "gcp", "keys": {"service_account.json": "key.json"}},
        bigquery={
            "projectId": "my-project",
            "datasetId": "analytics",
            "location": "EU",
            "endpoint": "https://bigquery.example.internal:8443/api",
        },
    ),
    "periodic tests off": pg(testInterval="0s"),
    "interval of exactly 7 days": pg(testInterval="168h"),
    "interval in fractions and ms": pg(testInterval="1.5h", testTimeout="250ms"),
    "timeout of a fraction of a second": pg(testTimeout="0.5s"),
    "display name of 100 characters": pg(displayName="x" * 100),
}


@pytest.mark.parametrize("spec", GOOD_SPECS.values(), ids=GOOD_SPECS.keys())
def test_good_specs_are_admitted_and_parse(spec: dict[str, Any]) -> None:
    assert admission_errors(connection(spec)) == []
    # what the CRD admits, the operator's own validation accepts too (after defaulting)
    models.parse_spec(apply_defaults(spec_schema(), spec))
    models.parse_spec(spec)


def test_a_status_written_by_the_operator_is_valid() -> None:
    obj = connection(pg())
    obj["status"] = {
        "phase": "Failed",
        "reason": "AuthenticationFailed",
        "message": "the server rejected user 'app': password authentication failed",
        "latencyMs": 12,
        "lastTestedAt": "2026-11-23T05:07:50Z",
        "lastConnectedAt": "2026-11-23T04:07:50Z",
        "consecutiveFailures": 3,
        "observedGeneration": 2,
        "serverVersion": "PostgreSQL 15.18",
        "lastHandledTestRequest": "2026-11-23T05:07:40+00:00",
        "snowflake": {"publicKeyFingerprint": "SHA256:abc="},
        "checks": [
            {"name": "credentials", "result": "Passed", "message": "", "durationMs": 0},
            {"name": "connect", "result": "Failed", "message": "refused", "durationMs": 4},
            {"name": "query", "result": "Skipped"},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "observedGeneration": 2,
                "lastTransitionTime": "2026-11-23T05:07:50Z",
                "reason": "AuthenticationFailed",
                "message": "",
            }
        ],
    }
    assert admission_errors(obj) == []
    obj["status"]["phase"] = "Broken"
    obj["status"]["conditions"][0]["status"] = "Maybe"
    obj["status"]["checks"][0]["result"] = "Unknown"
    assert len(admission_errors(obj)) == 3


# --- what is rejected --------------------------------------------------------------------------

# (spec, a fragment of the error, whether the operator's models reject it too)
BAD_SPECS: dict[str, tuple[dict[str, Any], str, bool]] = {
    "postgres without spec.postgres": (
        {"provider": "postgres", "credentialsSecretRef": SECRET},
        "spec.postgres is required",
        True,
    ),
    "postgresql without spec.postgres": (
        {"provider": "postgresql", "credentialsSecretRef": SECRET},
        "spec.postgres is required",
        True,
    ),
    "snowflake without spec.snowflake": (
        {"provider": "snowflake", "credentialsSecretRef": SECRET},
        "spec.snowflake is required",
        True,
    ),
    "bigquery without spec.bigquery": (
        {"provider": "bigquery", "credentialsSecretRef": SECRET, "postgres": PG},
        "spec.bigquery is required",
        True,
    ),
    # the models ignore the blocks of other providers; the schema refuses them outright
    "postgres with a snowflake block": (pg(snowflake=SF), "spec.snowflake must not be set", False),
    "snowflake with a postgres block": (sf(postgres=PG), "spec.postgres must not be set", False),
    "port 0": (pg(postgres={**PG, "port": 0}), "less than the minimum of 1", True),
    "port 70000": (pg(postgres={**PG, "port": 70000}), "greater than the maximum of 65535", True),
    "port as a string": (pg(postgres={**PG, "port": "5432"}), "is not of type 'integer'", True),
    "unknown provider": ({**pg(), "provider": "mysql"}, "is not one of", True),
    "no provider": (
        {"credentialsSecretRef": SECRET, "postgres": PG},
        "'provider' is a required property",
        True,
    ),
    "no credentialsSecretRef": (
        {"provider": "postgres", "postgres": PG},
        "'credentialsSecretRef' is a required property",
        True,
    ),
    "no Secret name": (pg(credentialsSecretRef={}), "'name' is a required property", True),
    "Secret name that is not a DNS subdomain": (
        pg(credentialsSecretRef={"name": "My_Secret"}),
        "must be a Secret name",
        False,
    ),
    "Secret name ending in a dash": (
        pg(credentialsSecretRef={"name": "creds-"}),
        "must be a Secret name",
        False,
    ),
    "Secret data key with a slash": (
        pg(credentialsSecretRef={"name": "creds", "keys": {"password": "a/b"}}),
        "does not match",
        False,
    ),
    "too many key mappings": (
        pg(credentialsSecretRef={"name": "creds", "keys": {f"k{i}": "v" for i in range(17)}}),
        "has too many properties",
        False,
    ),
    "duration in words": (pg(testInterval="5 minutes"), "does not match", True),
    "duration without a unit": (pg(testInterval="300"), "does not match", True),
    "negative duration": (pg(testInterval="-5s"), "does not match", True),
    "duration in days": (pg(testTimeout="1d"), "does not match", True),
    "interval over 7 days": (pg(testInterval="10081m"), "at most 168h", True),
    "timeout 0s": (pg(testTimeout="0s"), "must be greater than 0", True),
    "timeout 0m": (pg(testTimeout="0m"), "must be greater than 0", True),
    "timeout 0.0s": (pg(testTimeout="0.0s"), "must be greater than 0", True),
    "timeout 0h0m0ms": (pg(testTimeout="0h0m0ms"), "must be greater than 0", True),
    "empty display name": (pg(displayName=""), "should be non-empty", True),
    "display name of 101 characters": (pg(displayName="x" * 101), "is too long", True),
    "unknown sslMode": (pg(postgres={**PG, "sslMode": "on"}), "is not one of", True),
    "empty database": (pg(postgres={**PG, "database": ""}), "should be non-empty", True),
    "host starting with a dash": (pg(postgres={**PG, "host": "-db"}), "does not match", True),
    "host with a space": (pg(postgres={**PG, "host": "db host"}), "does not match", True),
    "unknown authMethod": (sf(snowflake={**SF, "authMethod": "oauth"}), "is not one of", True),
    "snowflake account with a slash": (sf(snowflake={"account": "a/b"}), "does not match", True),
    "endpoint that is not http(s)": (
        sf(snowflake={**SF, "endpoint": "ftp://127.0.0.1"}),
        "does not match",
        True,
    ),
    "endpoint with credentials": (
        bq(bigquery={**BQ, "endpoint": "https://user:pw@bq.example.com"}),
        "does not match",
        True,
    ),
    "bigquery without projectId": (
        bq(bigquery={"location": "EU"}),
        "'projectId' is a required property",
        True,
    ),
    "suspend as a string": (pg(suspend="yes"), "is not of type 'boolean'", True),
    # strict field validation (kubectl's default) refuses misspelt fields; the models ignore them
    "misspelt field": (pg(postgres={**PG, "sslmode": "require"}), "Additional properties", False),
}


@pytest.mark.parametrize(
    ("spec", "fragment", "models_reject"), BAD_SPECS.values(), ids=BAD_SPECS.keys()
)
def test_bad_specs_are_rejected(spec: dict[str, Any], fragment: str, models_reject: bool) -> None:
    errors = admission_errors(connection(spec))
    assert errors, "admitted"
    assert any(fragment in error for error in errors), errors
    if models_reject:
        with pytest.raises(models.InvalidSpecError):
            models.parse_spec(apply_defaults(spec_schema(), spec))
    else:
        models.parse_spec(apply_defaults(spec_schema(), spec))


def test_object_without_spec_is_rejected() -> None:
    obj = connection(pg())
    del obj["spec"]
    assert any("'spec' is a required property" in e for e in admission_errors(obj))


# --- examples ----------------------------------------------------------------------------------


def example_connections() -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """Every WarehouseConnection in examples/*.yaml, with the other documents of its file."""
    found = []
    for path in EXAMPLES:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        for doc in docs:
            if doc.get("kind") == models.KIND:
                name = f"{path.name}:{doc['metadata']['name']}"
                found.append((name, doc, docs))
    return found


EXAMPLE_CONNECTIONS = example_connections()


def test_there_are_examples() -> None:
    assert any(name.startswith("postgres.yaml:") for name, _, _ in EXAMPLE_CONNECTIONS)


@pytest.mark.parametrize(
    ("obj", "docs"),
    [(obj, docs) for _, obj, docs in EXAMPLE_CONNECTIONS],
    ids=[name for name, _, _ in EXAMPLE_CONNECTIONS],
)
def test_example_connections_are_admitted(obj: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    assert obj["apiVersion"] == f"{models.GROUP}/{models.VERSION}"
    assert admission_errors(obj) == []
    models.parse_spec(apply_defaults(spec_schema(), obj["spec"]))
    # each example is self-contained: its Secret is in the same file and namespace
    namespace = obj["metadata"].get("namespace", "default")
    secrets = {
        (d["metadata"].get("namespace", "default"), d["metadata"]["name"])
        for d in docs
        if d.get("kind") == "Secret"
    }
    assert (namespace, obj["spec"]["credentialsSecretRef"]["name"]) in secrets


# --- agreement with the models -------------------------------------------------------------------


def _resolve(node: Schema, defs: Schema) -> Schema:
    if "$ref" in node:
        resolved: Schema = defs[node["$ref"].rsplit("/", 1)[-1]]
        return resolved
    for option in node.get("anyOf", []):
        if option.get("type") != "null":
            return {**_resolve(option, defs), **{k: v for k, v in node.items() if k != "anyOf"}}
    return node


def _compare(schema: Schema, model: Schema, defs: Schema, path: str) -> None:
    model = _resolve(model, defs)
    for key in ("minLength", "maxLength", "minimum", "maximum", "pattern", "enum"):
        if key in model:
            assert schema.get(key) == model[key], f"{path}: {key}"
    if model.get("default") is not None:
        assert schema.get("default") == model["default"], f"{path}: default"
    if "properties" in model:
        assert set(schema.get("required", [])) == set(model.get("required", [])), path
        for name, child in model["properties"].items():
            _compare(schema["properties"][name], child, defs, f"{path}.{name}")
    if isinstance(model.get("additionalProperties"), dict):
        _compare(schema["additionalProperties"], model["additionalProperties"], defs, f"{path}.*")


def test_spec_constraints_agree_with_the_models() -> None:
    model = models.ConnectionSpec.model_json_schema(by_alias=True)
    schema = copy.deepcopy(spec_schema())
    # the CRD accepts the alias, which the model maps to postgres before validating
    schema["properties"]["provider"]["enum"].remove("postgresql")
    _compare(schema, model, model.get("$defs", {}), "spec")
    assert set(schema["properties"]) == set(model["properties"])


def test_patterns_enforced_in_validators_agree_with_the_models() -> None:
    spec = spec_schema()["properties"]
    for name in ("testInterval", "testTimeout"):
        assert spec[name]["pattern"] == models.DURATION_PATTERN
    host = spec["postgres"]["properties"]["host"]["pattern"]
    samples = [
        "db",
        "10.0.0.1",
        "fd00::1",
        "::1",
        "[::1]",
        "db.example.com:5432",
        "-db",
        "db host",
        "a" * 253,
    ]
    for sample in samples:
        try:
            models._check_host(sample)
            model_ok = True
        except ValueError:
            model_ok = False
        assert (re.search(host, sample) is not None) == model_ok, sample
    for block in ("snowflake", "bigquery"):
        url = spec[block]["properties"]["endpoint"]["pattern"]
        for sample in [
            "http://127.0.0.1:8085",
            "https://x.example.com/p?q=1",
            "ftp://x",
            "https://u:p@x",
            "https://",
        ]:
            try:
                models._check_url(sample)
                model_ok = True
            except ValueError:
                model_ok = False
            assert (re.search(url, sample) is not None) == model_ok, sample


def test_provider_enum_is_the_models_providers_plus_alias() -> None:
    enum = spec_schema()["properties"]["provider"]["enum"]
    assert set(enum) == {*get_args(models.ProviderName), "postgresql"}


def test_status_enums_and_reasons_agree_with_the_models() -> None:
    status = root_schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [p.value for p in models.Phase]
    assert status["checks"]["items"]["properties"]["result"]["enum"] == [
        r.value for r in models.CheckResult
    ]
    for reason in models.Reason:
        assert reason.value in status["reason"]["description"], reason
        assert re.fullmatch(
            status["conditions"]["items"]["properties"]["reason"]["pattern"], reason.value
        )
