"""Runs inside the deploy-tools virtualenv (scripts/ci/install-deploy-tools.sh), not the project's.

The tools' Python packages (Helm's Go SDK, the Kubernetes schemas, the cert-manager and
Prometheus Operator models) live apart from the project's dependencies, so the tests call this
script as a subprocess: a JSON request on standard input, a JSON answer on standard output.

    helm-render  {"chart", "values", "name", "namespace"} -> {template path: rendered text}
    helm-lint    {"chart", "values"}                      -> Helm's lint report
    validate     {"documents": [...], "kube_versions": [...]}
                 -> [{"index", "kind", "name", "validator", "errors": [...]}]
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any


def _tool(module: str) -> Any:
    """A module of the tools' virtualenv (untyped, and absent from the project's)."""
    return importlib.import_module(module)


def helm_render(request: Mapping[str, Any]) -> Any:
    helm_python = _tool("helm_python")
    with helm_python.Chart.load(request["chart"]) as chart:
        chart.validate_schema(request.get("values"))
        return chart.render(
            request.get("values"),
            name=request["name"],
            namespace=request["namespace"],
            is_install=True,
        )


def helm_lint(request: Mapping[str, Any]) -> Any:
    helm_python = _tool("helm_python")
    return helm_python.lint(
        request["chart"], request.get("values"), strict=True, namespace=request.get("namespace")
    )


def _core_validator(kube_version: str) -> Callable[[Mapping[str, Any]], list[str]]:
    """kubernetes-validate's strict check, with each schema loaded and compiled only once."""
    import functools
    import re

    import jsonschema
    import referencing

    kubernetes_validate = _tool("kubernetes_validate")
    utils = _tool("kubernetes_validate.utils")

    schema_dir = f"kubernetes-json-schema/v{kube_version}-local-strict"
    definitions = referencing.Resource.from_contents(
        utils.schema_contents(f"{schema_dir}/_definitions.json", kube_version)
    )

    @functools.cache
    def validator(kind: str, api_version: str) -> Any:
        # The schema file naming of kubernetes-validate: rbac.authorization.k8s.io/v1 -> rbac-v1
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        try:
            schema = utils.schema_contents(
                f"{schema_dir}/{kind.lower()}-{group_version}.json", kube_version
            )
        except FileNotFoundError:
            raise kubernetes_validate.SchemaNotFoundError(
                version=kube_version, kind=kind, api_version=api_version
            ) from None
        registry = definitions @ (
            referencing.Resource.from_contents(schema) @ referencing.Registry()
        )
        return jsonschema.validators.Draft202012Validator(schema, registry=registry)

    def check(doc: Mapping[str, Any]) -> list[str]:
        found = validator(str(doc.get("kind")), str(doc.get("apiVersion")))
        return [
            f"k8s {kube_version}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in found.iter_errors(dict(doc))
        ]

    return check


def _unknown_keys(given: Any, kept: Any, path: str = "") -> list[str]:
    """Keys present in the input but dropped by the model: fields its schema does not know."""
    problems: list[str] = []
    if isinstance(given, Mapping) and isinstance(kept, Mapping):
        for key, value in given.items():
            if key not in kept:
                problems.append(f"{path}/{key}: unknown field")
            else:
                problems.extend(_unknown_keys(value, kept[key], f"{path}/{key}"))
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept, strict=False)):
            problems.extend(_unknown_keys(a, b, f"{path}/{i}"))
    return problems


def _model_validator(model: Any) -> Callable[[Mapping[str, Any]], list[str]]:
    import pydantic

    def check(doc: Mapping[str, Any]) -> list[str]:
        try:
            obj = model.model_validate(dict(doc))
        except pydantic.ValidationError as exc:
            return [f"{'/'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        # The models accept unknown fields silently: compare the round trip to be strict.
        kept = obj.model_dump(by_alias=True, exclude_unset=True, mode="json")
        return _unknown_keys(doc, kept)

    return check


# Kinds from other projects' CRDs, and the model of each (imported only when needed: the
# Prometheus Operator's take seconds to import).
CUSTOM_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("cert-manager.io/v1", "Certificate"): ("cloudcoil.models.cert_manager.v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"): ("cloudcoil.models.cert_manager.v1", "Issuer"),
    ("cert-manager.io/v1", "ClusterIssuer"): ("cloudcoil.models.cert_manager.v1", "ClusterIssuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        "cloudcoil.models.prometheus_operator.v1",
        "ServiceMonitor",
    ),
}


def validate(request: Mapping[str, Any]) -> Any:
    kubernetes_validate = _tool("kubernetes_validate")
    versions: list[str] = request["kube_versions"]
    core = [_core_validator(v) for v in versions]
    answers = []
    for index, doc in enumerate(request["documents"]):
        key = (str(doc.get("apiVersion")), str(doc.get("kind")))
        errors: list[str] = []
        if key in CUSTOM_KINDS:
            module, name = CUSTOM_KINDS[key]
            validator = f"{module}.{name}"
            errors = _model_validator(getattr(importlib.import_module(module), name))(doc)
        else:
            validator = f"kubernetes-validate {', '.join(versions)} (strict)"
            for check in core:
                try:
                    errors.extend(check(doc))
                except kubernetes_validate.SchemaNotFoundError as exc:
                    errors.append(f"no schema: {exc.message}")
        answers.append(
            {
                "index": index,
                "kind": key[1],
                "name": (doc.get("metadata") or {}).get("name"),
                "validator": validator,
                "errors": errors,
            }
        )
    return answers


COMMANDS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "helm-render": helm_render,
    "helm-lint": helm_lint,
    "validate": validate,
}


def main() -> int:
    command = COMMANDS[sys.argv[1]]
    request = json.load(sys.stdin)
    try:
        answer = command(request)
    except Exception as exc:  # the tool's refusal, reported on one line to the test
        print(f"{type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
