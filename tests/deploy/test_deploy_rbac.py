"""Least privilege: exactly the operator's API calls, no wildcard, Secrets read-only.

Checked on every rendering: the kustomize base (cluster-wide) and each Helm variant
(cluster-wide; a Role per watched namespace; the webhook's own narrow ClusterRole).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tests.deploy.conftest import (
    RELEASE_NAMESPACE,
    Rendered,
    env_map,
    iter_rules,
    of_kind,
    one,
)

Permissions = dict[tuple[str, str], set[str]]

# What the operator calls in every namespace it watches (cluster-wide when it watches all).
WATCH: Permissions = {
    ("warehouse-operator.io", "warehouseconnections"): {"get", "list", "watch", "patch"},
    ("warehouse-operator.io", "warehouseconnections/status"): {"get", "patch", "update"},
    ("", "secrets"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apps", "deployments"): {"get", "list", "watch"},
    ("apps", "statefulsets"): {"get", "list", "watch"},
    ("apps", "daemonsets"): {"get", "list", "watch"},
    ("batch", "jobs"): {"get", "list", "watch"},
    ("batch", "cronjobs"): {"get", "list", "watch"},
}
# With the webhook: admission reads the namespace (a deletion in a namespace being deleted passes).
NAMESPACE_READ: Permissions = {("", "namespaces"): {"get"}}
# Leader election, in the operator's own namespace only.
LEASES: Permissions = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
# The operator-managed webhook certificate: its own configuration, by name, and the Secret the
# replicas share it through, in the operator's namespace.
WEBHOOK_CA: Permissions = {
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): {"get", "patch"}
}
WEBHOOK_SECRET: Permissions = {("", "secrets"): {"get", "update", "create"}}

READ_VERBS = {"get", "list", "watch"}
DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "*"}


def permissions(role: Mapping[str, Any]) -> Permissions:
    found: Permissions = {}
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


def roles_by_scope(docs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str | None], Permissions]:
    """(kind, namespace) of each Role/ClusterRole -> its permissions, merged per scope."""
    scopes: dict[tuple[str, str | None], Permissions] = {}
    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole"):
            key = (str(doc["metadata"]["name"]), doc["metadata"].get("namespace"))
            assert key not in scopes, f"two roles named {key}"
            scopes[key] = permissions(doc)
    return scopes


def test_no_wildcard_no_escalation(rendered: Rendered) -> None:
    rules = list(iter_rules(rendered.documents))
    assert rules
    for role, rule in rules:
        where = f"{role['kind']} {role['metadata']['name']}"
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(key, []), f"{where}: wildcard in {key}"
            assert not any("*" in str(v) for v in rule.get(key, [])), where
        assert not rule.get("nonResourceURLs"), where
        assert not set(rule["verbs"]) & DANGEROUS_VERBS, where
        # No power over RBAC itself, nor over pods, nor exec/attach/token subresources.
        assert "rbac.authorization.k8s.io" not in rule.get("apiGroups", []), where
        for resource in rule.get("resources", []):
            assert resource not in ("pods/exec", "pods/attach", "serviceaccounts/token"), where


def test_secrets_are_read_only(rendered: Rendered) -> None:
    secret_rules = [
        (role, rule)
        for role, rule in iter_rules(rendered.documents)
        if "" in rule.get("apiGroups", []) and "secrets" in rule.get("resources", [])
    ]
    assert secret_rules, "the operator must be able to read Secrets"
    env = env_map(one(rendered.documents, "Deployment"), rendered.namespace)
    for role, rule in secret_rules:
        writes = set(rule["verbs"]) - READ_VERBS
        if not writes:
            continue
        # The one exception: the Secret holding the operator's own webhook certificate, in the
        # operator's namespace, written by name ("create" cannot be limited by name).
        assert "WHC_WEBHOOK_SECRET_NAME" in env, f"{role['metadata']['name']} writes Secrets"
        assert role["kind"] == "Role"
        assert role["metadata"]["namespace"] == rendered.namespace
        if writes == {"create"}:
            assert rule["verbs"] == ["create"]
        else:
            assert writes == {"update"}
            assert rule["resourceNames"] == [env["WHC_WEBHOOK_SECRET_NAME"]]


def test_bindings_point_at_the_operator(rendered: Rendered) -> None:
    docs = rendered.documents
    account = one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    roles = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in docs}
    bindings = of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding")
    bound: set[tuple[str, str, str | None]] = set()
    for binding in bindings:
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        target = (ref["kind"], ref["name"], namespace)
        assert target in roles, f"{binding['metadata']['name']} binds a missing {target}"
        bound.add(target)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": rendered.namespace}
        ]
    assert bound == {r for r in roles if r[0] in ("Role", "ClusterRole")}, "unbound role"


def test_kustomize_base_grants_exactly_the_calls(renderings: dict[str, Rendered]) -> None:
    scopes = roles_by_scope(renderings["kustomize"].documents)
    assert scopes == {
        ("warehouse-operator", None): WATCH,
        ("warehouse-operator-leader-election", "warehouse-operator"): LEASES,
    }


def test_helm_default_is_cluster_wide_without_leases(renderings: dict[str, Rendered]) -> None:
    scopes = roles_by_scope(renderings["helm:default"].documents)
    # One replica: no leader election, so no Lease rights.
    assert scopes == {("whc-warehouse-operator", None): WATCH}
    assert of_kind(renderings["helm:default"].documents, "ClusterRole")


def test_helm_namespaced_has_a_role_per_namespace(renderings: dict[str, Rendered]) -> None:
    docs = renderings["helm:namespaced-ha-webhook"].documents
    scopes = roles_by_scope(docs)
    # No cluster-wide rule at all: the webhook's CA is injected by cert-manager here.
    assert of_kind(docs, "ClusterRole") == []
    assert of_kind(docs, "ClusterRoleBinding") == []
    assert scopes == {
        ("whc-warehouse-operator", "team-a"): WATCH | NAMESPACE_READ,
        ("whc-warehouse-operator", "team-b"): WATCH | NAMESPACE_READ,
        ("whc-warehouse-operator-leader-election", RELEASE_NAMESPACE): LEASES,
    }


def test_helm_self_managed_webhook_writes_only_its_own_objects(
    renderings: dict[str, Rendered],
) -> None:
    docs = renderings["helm:webhook-self-managed"].documents
    scopes = roles_by_scope(docs)
    assert scopes == {
        ("whc-warehouse-operator", None): WATCH | NAMESPACE_READ,
        ("whc-warehouse-operator-webhook", None): WEBHOOK_CA,
        ("whc-warehouse-operator-webhook-certificate", RELEASE_NAMESPACE): WEBHOOK_SECRET,
    }
    configuration = one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"]
    webhook_role = next(
        d for d in of_kind(docs, "ClusterRole") if d["metadata"]["name"].endswith("-webhook")
    )
    assert [rule["resourceNames"] for rule in webhook_role["rules"]] == [[configuration]]


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (["v1/pods"], {("", "pods"): {"get", "list", "watch"}}),
        (
            ["apps/v1/deployments", "argoproj.io/v1alpha1/rollouts"],
            {
                ("apps", "deployments"): {"get", "list", "watch"},
                ("argoproj.io", "rollouts"): {"get", "list", "watch"},
            },
        ),
    ],
)
def test_in_use_kinds_become_read_rules(
    tools: Any, kinds: list[str], expected: Permissions
) -> None:
    from tests.deploy.conftest import helm_render

    docs = helm_render(tools, {"inUseKinds": kinds}).documents
    granted = permissions(one(docs, "ClusterRole"))
    base = {k: v for k, v in WATCH.items() if k[0] not in ("apps", "batch")}
    assert granted == base | expected
