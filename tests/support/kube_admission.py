"""What an API server does with a custom resource before storing it, from its CRD's schema.

In the order a real server applies them: unknown fields are pruned, schema defaults are filled
in, then the object is validated against the OpenAPI schema (types, enums, patterns, bounds,
required fields) and its CEL rules (``x-kubernetes-validations``; transition rules that use
``oldSelf`` only on updates). Used by the API emulator; a rejection becomes HTTP 422 Invalid.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError

Schema = dict[str, Any]
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


class Rejected(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def prune(schema: Schema, value: Any, *, root: bool = False) -> Any:
    """Drop the fields the schema does not know (what a structural CRD gets by default)."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or extra is True
        result: dict[str, Any] = {}
        for key, item in value.items():
            if root and key in _ROOT_FIELDS:
                result[key] = item
            elif key in properties:
                result[key] = prune(properties[key], item)
            elif isinstance(extra, dict):
                result[key] = prune(extra, item)
            elif keep_unknown:
                result[key] = item
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(schema["items"], item) for item in value]
    return value


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Fill in schema defaults the way the API server does before validation."""
    if isinstance(value, dict):
        result = dict(value)
        for name, child in (schema.get("properties") or {}).items():
            if name not in result and "default" in child:
                result[name] = copy.deepcopy(child["default"])
            if name in result:
                result[name] = apply_defaults(child, result[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in list(result):
                result[name] = apply_defaults(extra, result[name])
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _json_schema(schema: Schema) -> Schema:
    out: Schema = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: _json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_json_schema(child) for child in value]
        elif key == "not" and isinstance(value, dict):
            out[key] = _json_schema(value)
        else:
            out[key] = value
    return out


@cache
def _cel(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


@functools.lru_cache(maxsize=65536)
def _verdict(text: str, value_json: str, old_json: str) -> tuple[bool, str | None]:
    """A rule's verdict on a value (the same value gets the same verdict: status writes
    repeat an unchanged spec thousands of times, and interpreting CEL in Python is slow)."""
    context = {"self": json_to_cel(json.loads(value_json))}
    if old_json:
        context["oldSelf"] = json_to_cel(json.loads(old_json))
    try:
        verdict = _cel(text).evaluate(context)
    except CELEvalError as exc:
        return False, str(exc.args[0])
    return isinstance(verdict, BoolType) and bool(verdict), None


# id(schema) -> (the schema itself, verdict): holding the schema keeps its id from being reused
# by another dict while the entry exists
_RULES_BELOW: dict[int, tuple[Schema, bool]] = {}


def _has_rules(schema: Schema) -> bool:
    """Whether a schema or any schema under it has CEL rules (memoised: a registered CRD's
    schemas are built once, and a status write need not walk a status that has none)."""
    known = _RULES_BELOW.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    children = [
        *(schema.get("properties") or {}).values(),
        *(v for k in ("items", "additionalProperties") if isinstance(v := schema.get(k), dict)),
    ]
    verdict = bool(schema.get("x-kubernetes-validations")) or any(map(_has_rules, children))
    _RULES_BELOW[id(schema)] = (schema, verdict)
    return verdict


def _cel_errors(schema: Schema, value: Any, old: Any, path: str) -> list[str]:
    errors: list[str] = []
    if not _has_rules(schema):
        return errors
    value_json = old_json = ""
    for rule in schema.get("x-kubernetes-validations") or []:
        text = rule["rule"]
        if "oldSelf" in text and old is None:
            continue  # a transition rule: only checked when there is an old value
        message = rule.get("message") or f"failed rule: {text}"
        value_json = value_json or json.dumps(value, sort_keys=True)
        if "oldSelf" in text:
            old_json = old_json or json.dumps(old, sort_keys=True)
        passed, failure = _verdict(text, value_json, old_json if "oldSelf" in text else "")
        if failure is not None:
            errors.append(
                f"{path or '<root>'}: Invalid value: {message} (evaluation error: {failure})"
            )
        elif not passed:
            errors.append(f"{path or '<root>'}: Invalid value: {message}")
    if isinstance(value, dict):
        old_map = old if isinstance(old, dict) else {}
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                errors += _cel_errors(
                    child, value[name], old_map.get(name), f"{path}.{name}".lstrip(".")
                )
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                errors += _cel_errors(extra, item, old_map.get(name), f"{path}.{name}".lstrip("."))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, None, f"{path}[{index}]")
    return errors


def _root_schema(schema: Schema) -> Schema:
    """The schema checked at the root: the fields the server owns (metadata) are left out."""
    root = dict(schema)
    root["properties"] = {
        k: v for k, v in (schema.get("properties") or {}).items() if k not in _ROOT_FIELDS
    }
    return root


def _message(path: list[Any], error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in [*path, *error.absolute_path]) + ": " + error.message


class _Validators:
    """The OpenAPI checks of one resource, compiled once. Each top-level field is checked on its
    own and its verdict memoised by value: a status write repeats the same spec thousands of
    times, and re-validating it in Python was most of what the emulator spent on a write."""

    def __init__(self, root_schema: Schema) -> None:
        self.root = root_schema  # also what the CEL rules are checked against, built once
        schema = _json_schema(root_schema)
        properties = schema.get("properties") or {}
        split = not any(k in schema for k in ("additionalProperties", "patternProperties"))
        outer = {k: v for k, v in schema.items() if k != "properties"} if split else schema
        self._outer = jsonschema.Draft4Validator(outer)
        self._fields = (
            {name: jsonschema.Draft4Validator(child) for name, child in properties.items()}
            if split
            else {}
        )
        self._field_errors = functools.lru_cache(maxsize=16384)(self._field_errors_uncached)

    def errors(self, value: Any) -> list[str]:
        errors = [_message([], error) for error in self._outer.iter_errors(value)]
        if isinstance(value, dict):
            for name, child in value.items():
                if name in self._fields:
                    errors += self._field_errors(name, json.dumps(child, sort_keys=True))
        return errors

    def _field_errors_uncached(self, name: str, value_json: str) -> list[str]:
        return [
            _message([name], error)
            for error in self._fields[name].iter_errors(json.loads(value_json))
        ]


class SchemaAdmission:
    """The schemas of the CRDs an API server has been given, by ``group/version/plural``."""

    def __init__(self) -> None:
        self._schemas: dict[str, tuple[str, Schema]] = {}
        self._validators: dict[str, _Validators] = {}

    def register(self, crd: Mapping[str, Any]) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        kind = (spec.get("names") or {}).get("kind", "")
        for version in spec.get("versions") or []:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if group and plural and isinstance(schema, dict):
                resource = f"{group}/{version['name']}/{plural}"
                self._schemas[resource] = (f"{kind}.{group}", schema)
                self._validators[resource] = _Validators(_root_schema(schema))

    def knows(self, resource: str) -> bool:
        return resource in self._schemas

    def admit(
        self, resource: str, obj: Mapping[str, Any], old: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The object as it would be stored (pruned, defaulted); Rejected if invalid."""
        if resource not in self._schemas:
            return dict(obj)
        kind, schema = self._schemas[resource]
        stored: dict[str, Any] = apply_defaults(schema, prune(schema, dict(obj), root=True))
        checked = {k: v for k, v in stored.items() if k not in _ROOT_FIELDS}
        validators = self._validators[resource]
        errors = validators.errors(checked)
        old_checked = (
            {k: v for k, v in (old or {}).items() if k not in _ROOT_FIELDS} if old else None
        )
        errors += _cel_errors(validators.root, checked, old_checked, "")
        if errors:
            name = (stored.get("metadata") or {}).get("name", "")
            raise Rejected([f'{kind} "{name}" is invalid: {error}' for error in errors])
        return stored
