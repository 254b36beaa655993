"""What every way of installing renders: valid objects, a hardened pod, settings it understands.

Each test runs on the kustomize base (rendered by kubectl's kustomize) and on each Helm variant
(rendered by Helm's engine); see conftest.RENDERINGS.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from typing import Any

import pytest

from tests.deploy.conftest import (
    KUBE_VERSIONS,
    ROOT,
    Rendered,
    Tools,
    container,
    env_map,
    of_kind,
    one,
)
from warehouse_operator import settings as settings_mod

CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingWebhookConfiguration",
}


@pytest.fixture(scope="module")
def validation(tools: Tools, renderings: dict[str, Rendered]) -> dict[str, list[Any]]:
    """Every rendering's objects against the Kubernetes schemas, in one run of the validator."""
    names = [name for name in renderings for _ in renderings[name].documents]
    documents = [doc for name in renderings for doc in renderings[name].documents]
    answers = tools.toolbox("validate", {"documents": documents, "kube_versions": KUBE_VERSIONS})
    assert len(answers) == len(documents)
    by_rendering: dict[str, list[Any]] = {name: [] for name in renderings}
    for name, answer in zip(names, answers, strict=True):
        by_rendering[name].append(answer)
    return by_rendering


def test_every_object_passes_its_schema(
    rendered: Rendered, validation: dict[str, list[Any]]
) -> None:
    answers = validation[rendered.name]
    assert len(answers) == len(rendered.documents) > 0
    failures = [a for a in answers if a["errors"]]
    assert failures == [], failures
    validators = {a["kind"]: a["validator"] for a in answers}
    assert validators["Deployment"].startswith("kubernetes-validate")


def test_schema_validation_catches_mistakes(tools: Tools, renderings: dict[str, Rendered]) -> None:
    # The same validation on broken copies of rendered objects must fail, each for its fault.
    docs = renderings["helm:namespaced-ha-webhook"].documents
    deployment = dict(one(docs, "Deployment"))
    deployment["spec"] = {**deployment["spec"], "replicas": "two"}
    service = dict(of_kind(docs, "Service")[0])
    service["spec"] = {**service["spec"], "clusterIp": "None"}  # misspelt: unknown field
    certificate = dict(one(docs, "Certificate"))
    certificate["spec"] = {**certificate["spec"], "privateKey": {"algorithm": "DSA"}}
    monitor = dict(one(docs, "ServiceMonitor"))
    monitor["spec"] = {**monitor["spec"], "endpoint": []}  # misspelt: unknown field
    answers = tools.toolbox(
        "validate",
        {"documents": [deployment, service, certificate, monitor], "kube_versions": KUBE_VERSIONS},
    )
    errors = [" ".join(a["errors"]) for a in answers]
    assert "'two' is not of type 'integer'" in errors[0]
    assert "clusterIp" in errors[1]
    assert "privateKey" in errors[2]
    assert "/spec/endpoint: unknown field" in errors[3]


def test_namespaced_objects_are_placed(rendered: Rendered) -> None:
    for doc in rendered.documents:
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] in CLUSTER_SCOPED:
            assert namespace is None, f"{doc['kind']} {doc['metadata']['name']} is cluster-scoped"
        else:
            assert namespace, f"{doc['kind']} {doc['metadata']['name']} has no namespace"


def test_pod_is_hardened(rendered: Rendered) -> None:
    deployment = one(rendered.documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(forbidden)
    ctr = container(deployment)
    sc = ctr["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not sc.get("privileged")
    # The one writable path: /tmp, an emptyDir.
    writable = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp": "tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    resources = ctr["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_probes_and_ports(rendered: Rendered) -> None:
    deployment = one(rendered.documents, "Deployment")
    ctr = container(deployment)
    env = env_map(deployment, rendered.namespace)
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports["health"] == int(env.get("WHC_HEALTH_PORT", "8081")) == 8081
    assert ports["metrics"] == int(env.get("WHC_METRICS_PORT", "8080")) == 8080
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert ctr["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert ctr["args"] == ["run"]


def test_services_reach_the_pod(rendered: Rendered) -> None:
    deployment = one(rendered.documents, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    )  # the Deployment owns its pods
    port_names = {p["name"] for p in container(deployment)["ports"]}
    services = of_kind(rendered.documents, "Service")
    assert any(p["name"] == "metrics" for s in services for p in s["spec"]["ports"]), (
        "no Service exposes the metrics port"
    )
    for service in services:
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_service_account_is_the_pods(rendered: Rendered) -> None:
    deployment = one(rendered.documents, "Deployment")
    name = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    accounts = [
        sa["metadata"]["name"]
        for sa in of_kind(rendered.documents, "ServiceAccount")
        if sa["metadata"]["namespace"] == rendered.namespace
    ]
    assert accounts == [name]


def _settings_from(env: Mapping[str, str]) -> settings_mod.Settings:
    parser = argparse.ArgumentParser()
    settings_mod.add_arguments(parser)
    return settings_mod.from_args(parser.parse_args([]), environ=env)


def names_in_operator_source() -> set[str]:
    """Every WHC_* name the operator reads: the settings' variables, and any the code names."""
    package = ROOT / "operator" / "warehouse_operator"
    return {o.env for o in settings_mod.OPTIONS} | {
        name
        for path in package.rglob("*.py")
        for name in re.findall(r"[\"'](WHC_[A-Z0-9_]+)[\"']", path.read_text())
    }


def test_environment_is_understood_by_the_operator(rendered: Rendered) -> None:
    env = env_map(one(rendered.documents, "Deployment"), rendered.namespace)
    ours = {k for k in env if k.startswith("WHC_")}
    assert ours, "no WHC_ variable set"
    unknown = ours - names_in_operator_source()
    assert not unknown, f"the operator never reads {sorted(unknown)}"
    assert env["POD_NAMESPACE"] == rendered.namespace
    settings_env = {k: v for k, v in env.items() if k in {o.env for o in settings_mod.OPTIONS}}
    conf = _settings_from(settings_env)  # SystemExit on a value the operator would refuse
    assert conf.health_port == 8081
    assert conf.metrics_port == 8080
    if conf.leader_elect:
        assert conf.leader_election_namespace == rendered.namespace
