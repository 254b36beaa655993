"""The Helm chart, linted and rendered by Helm's own engine (helm-python-sdk: Helm's Go SDK)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    CHART,
    HELM_VARIANTS,
    RELEASE,
    RELEASE_NAMESPACE,
    HelmRender,
    ToolError,
    Tools,
    container,
    env_map,
    helm_render,
    of_kind,
    one,
)
from warehouse_operator import settings as settings_mod

FULLNAME = f"{RELEASE}-warehouse-operator"


def settings_of(render: HelmRender) -> settings_mod.Settings:
    env = env_map(one(render.documents, "Deployment"), RELEASE_NAMESPACE)
    parser = argparse.ArgumentParser()
    settings_mod.add_arguments(parser)
    return settings_mod.from_args(parser.parse_args([]), environ=env)


@pytest.mark.parametrize("variant", list(HELM_VARIANTS))
def test_lint_is_clean(tools: Tools, variant: str) -> None:
    report = tools.toolbox(
        "helm-lint",
        {"chart": str(CHART), "values": HELM_VARIANTS[variant], "namespace": RELEASE_NAMESPACE},
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # severity 2 = warning, 3 = error; 1 (info) is only the advice to add an icon
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_a_broken_chart(tools: Tools, tmp_path: Any) -> None:
    # Lint is not a no-op: the same call on a copy with a broken template reports an error.
    import shutil

    broken = tmp_path / "warehouse-operator"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "service.yaml").write_text("{{ if }}\n")
    report = tools.toolbox("helm-lint", {"chart": str(broken), "values": {}})
    assert any(m["severity"] == 3 for m in report["messages"]) or report["errors"]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"logging": {"format": "xml"}}, "format"),
        ({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"replicaCount": 2}, "replicaCount"),  # a typo of replicas: unknown keys are refused
        ({"watchedNamespaces": ["Team_A"]}, "watchedNamespaces"),
        ({"defaultTestInterval": "5 minutes"}, "defaultTestInterval"),
        ({"egress": {"deniedCIDRs": ["metadata"]}}, "deniedCIDRs"),
        ({"inUseKinds": ["Deployment"]}, "inUseKinds"),
    ],
)
def test_values_schema_refuses_mistakes(
    tools: Tools, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ToolError, match=complaint):
        helm_render(tools, values)


def test_schema_and_defaults_describe_the_same_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(schema["properties"]) - {"global"} == set(defaults)


def test_default_install(helm_renders: dict[str, HelmRender]) -> None:
    render = helm_renders["default"]
    docs = render.documents
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # One replica without leader election: never two pods at once.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container(deployment)["image"] == "warehouse-operator:0.1.0"
    conf = settings_of(render)
    assert conf.leader_elect is False
    assert conf.namespaces == ()
    assert conf.webhook_port == 0
    assert conf.log_format == "json"
    defaults = settings_mod.Settings()
    assert conf.default_test_interval == defaults.default_test_interval
    assert conf.max_concurrent_tests == defaults.max_concurrent_tests
    assert conf.egress_denied_cidrs == defaults.egress_denied_cidrs
    assert conf.in_use_kinds == defaults.in_use_kinds
    assert "watching all namespaces" in render.notes


def test_namespaced_ha_webhook_install(helm_renders: dict[str, HelmRender]) -> None:
    render = helm_renders["namespaced-ha-webhook"]
    docs = render.documents
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"

    conf = settings_of(render)
    assert conf.namespaces == ("team-a", "team-b")
    assert conf.leader_elect is True
    assert conf.leader_election_namespace == RELEASE_NAMESPACE
    assert conf.max_concurrent_tests == 20
    assert conf.default_test_interval == 120.0
    assert conf.egress_allowed_cidrs == ("10.0.0.0/8",)
    assert conf.egress_denied_cidrs == ("169.254.0.0/16",)
    assert (conf.log_format, conf.log_level) == ("text", "DEBUG")
    assert conf.one_connection_per_namespace is True
    assert conf.webhook_port == 9443

    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    # The webhook: its Service reaches the pod's webhook port; cert-manager makes the certificate.
    ctr = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports["webhook"] == conf.webhook_port
    configuration = one(docs, "ValidatingWebhookConfiguration")
    assert configuration["metadata"]["name"] == FULLNAME
    (hook,) = configuration["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["rules"][0]["operations"] == ["CREATE", "DELETE"]
    assert hook["rules"][0]["resources"] == ["warehouseconnections"]
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "In",
            "values": ["team-a", "team-b"],
        }
    ]
    service_ref = hook["clientConfig"]["service"]
    service = next(
        s for s in of_kind(docs, "Service") if s["metadata"]["name"] == service_ref["name"]
    )
    assert service["metadata"]["namespace"] == service_ref["namespace"] == RELEASE_NAMESPACE
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (service_ref["port"], "webhook")

    certificate = one(docs, "Certificate")
    issuer = one(docs, "Issuer")
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{RELEASE_NAMESPACE}/{certificate['metadata']['name']}"
    )
    assert f"{service_ref['name']}.{RELEASE_NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    assert issuer["spec"] == {"selfSigned": {}}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    assert volumes["webhook-certs"]["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert mounts["webhook-certs"]["readOnly"] is True
    assert mounts["webhook-certs"]["mountPath"] == conf.webhook_cert_dir

    monitor = one(docs, "ServiceMonitor")
    metrics_service = next(
        s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")
    )
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= metrics_service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"

    assert "watching: team-a, team-b" in render.notes
    assert "Leader election is on (2 replicas)" in render.notes


def test_self_managed_webhook_install(helm_renders: dict[str, HelmRender]) -> None:
    docs = helm_renders["webhook-self-managed"].documents
    assert of_kind(docs, "Certificate") == []
    assert of_kind(docs, "Issuer") == []
    configuration = one(docs, "ValidatingWebhookConfiguration")
    assert "annotations" not in configuration["metadata"]
    (hook,) = configuration["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["rules"][0]["operations"] == ["DELETE"]
    assert "namespaceSelector" not in hook  # all namespaces are watched
    assert hook["clientConfig"]["service"]["path"] == "/validate"
    env = env_map(one(docs, "Deployment"), RELEASE_NAMESPACE)
    service = hook["clientConfig"]["service"]
    # No certificate folder: the operator makes its certificate, keeps it in the named Secret
    # and writes its CA into this configuration.
    assert "WHC_WEBHOOK_CERT_DIR" not in env
    assert env["WHC_WEBHOOK_CONFIG_NAME"] == configuration["metadata"]["name"]
    assert env["WHC_WEBHOOK_SERVICE_NAME"] == service["name"]
    assert service["namespace"] == env["POD_NAMESPACE"] == RELEASE_NAMESPACE
    assert env["WHC_WEBHOOK_SECRET_NAME"] == f"{FULLNAME}-webhook-tls"


def test_replicas_need_leader_election(tools: Tools) -> None:
    with pytest.raises(ToolError, match="leader election"):
        helm_render(tools, {"replicas": 3, "leaderElection": {"enabled": False}})


@pytest.mark.parametrize(
    ("values", "leader_elect", "pdb"),
    [
        ({"replicas": 1, "leaderElection": {"enabled": True}}, True, False),
        ({"replicas": 3}, True, True),
        ({"replicas": 3, "podDisruptionBudget": {"enabled": False}}, True, False),
        ({"replicas": 1, "podDisruptionBudget": {"enabled": True}}, False, True),
    ],
)
def test_leader_election_and_disruption_budget_follow_replicas(
    tools: Tools, values: Mapping[str, Any], leader_elect: bool, pdb: bool
) -> None:
    render = helm_render(tools, values)
    assert settings_of(render).leader_elect is leader_elect
    assert bool(of_kind(render.documents, "PodDisruptionBudget")) is pdb
    leases = [
        r
        for r in of_kind(render.documents, "Role")
        if any("leases" in rule["resources"] for rule in r["rules"])
    ]
    assert bool(leases) is leader_elect


def test_image_by_digest_and_metrics_off(tools: Tools) -> None:
    digest = "sha256:" + "ab" * 32
    render = helm_render(
        tools,
        {
            "image": {"repository": "registry.example/ops/warehouse-operator", "digest": digest},
            "metrics": {"enabled": False},
        },
    )
    deployment = one(render.documents, "Deployment")
    assert container(deployment)["image"] == f"registry.example/ops/warehouse-operator@{digest}"
    assert [s for s in of_kind(render.documents, "Service")] == []
    assert settings_of(render).metrics_port == 0
    assert "metrics" not in {p["name"] for p in container(deployment)["ports"]}


def test_existing_issuer_is_used(tools: Tools) -> None:
    render = helm_render(
        tools,
        {
            "webhook": {
                "enabled": True,
                "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
            }
        },
    )
    assert of_kind(render.documents, "Issuer") == []
    assert one(render.documents, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
