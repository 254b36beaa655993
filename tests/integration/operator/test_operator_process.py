"""The real operator process against the API emulator: metrics and health endpoints, the
in-use finalizer, the admission webhook with self-managed certificates, and a follower that
does nothing until it leads."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from tests.support.kube_cluster import Kube, Namespace
from tests.support.kube_operator import OperatorProcess
from tests.support.pgserver import PostgresServer, unused_port

from .conftest import (
    OperatorFactory,
    admission_review,
    create_workload,
    delete_deployment,
    post_review,
    relabel_deployment,
    unreachable_connection,
    wait_until,
)

FINALIZER = "warehouse-operator.io/in-use"


def _finalizers(ns: Namespace, name: str) -> list[str]:
    return list(ns.get_connection(name)["metadata"].get("finalizers") or [])


def test_metrics_and_health_endpoints(
    ns: Namespace, postgres: PostgresServer, operators: OperatorFactory
) -> None:
    ns.create_secret("pg", {"username": postgres.user, "password": postgres.password})
    ns.create_connection(
        "good",
        {
            "provider": "postgres",
            "credentialsSecretRef": {"name": "pg"},
            "postgres": postgres.postgres_spec(sslMode="disable"),
        },
    )
    ns.create_connection("bad", unreachable_connection("no-such-secret"))
    op = operators([ns.name])
    ns.wait_for("good", lambda s: s.get("phase") == "Connected", timeout=20)
    ns.wait_for("bad", lambda s: s.get("phase") == "Failed", timeout=20)

    assert op.get(op.health_port, "/healthz") == (200, "ok\n")
    assert op.get(op.health_port, "/readyz") == (200, "ready\n")
    families = op.metrics()

    up = families["warehouse_connection_up"]
    assert up.type == "gauge"
    values = {(s.labels["namespace"], s.labels["name"]): s.value for s in up.samples}
    assert values == {(ns.name, "good"): 1.0, (ns.name, "bad"): 0.0}
    assert {frozenset(s.labels) for s in up.samples} == {
        frozenset({"namespace", "name", "provider"})
    }
    assert {s.labels["provider"] for s in up.samples} == {"postgres"}

    duration = families["warehouse_connection_test_duration_seconds"]
    assert duration.type == "histogram"
    counts = {
        (s.labels["provider"], s.labels["result"]): s.value
        for s in duration.samples
        if s.name == "warehouse_connection_test_duration_seconds_count"
    }
    assert counts[("postgres", "success")] >= 1
    assert counts[("postgres", "failure")] >= 1
    buckets = [s for s in duration.samples if s.name.endswith("_bucket")]
    assert buckets
    assert all(set(s.labels) == {"provider", "result", "le"} for s in buckets)

    tests = families["warehouse_connection_tests"]
    assert tests.type == "counter"
    totals = {
        (s.labels["provider"], s.labels["result"], s.labels["reason"]): s.value
        for s in tests.samples
        if s.name == "warehouse_connection_tests_total"
    }
    assert totals[("postgres", "success", "Connected")] >= 1
    assert totals[("postgres", "failure", "SecretNotFound")] >= 1

    last = families["warehouse_connection_last_test_timestamp_seconds"]
    assert last.type == "gauge"
    now = time.time()
    stamps = {s.labels["name"]: s.value for s in last.samples}
    assert set(stamps) == {"good", "bad"}
    assert all(now - 60 < v <= now + 1 for v in stamps.values())
    assert all(set(s.labels) == {"namespace", "name", "provider"} for s in last.samples)

    # no Secret value reaches the metrics
    page = op.get(op.metrics_port, "/metrics")[1]
    assert postgres.password not in page


def test_in_use_finalizer_only_while_a_connection_has_users(
    kube: Kube, ns: Namespace, operators: OperatorFactory
) -> None:
    operators([ns.name])
    ns.create_connection("used", unreachable_connection())
    ns.create_connection("unused", unreachable_connection())
    ns.create_connection("overridden", unreachable_connection())
    create_workload(kube, ns.name, "Deployment", "api", "used")
    create_workload(kube, ns.name, "CronJob", "nightly", "used")
    create_workload(kube, ns.name, "Job", "etl", "overridden")

    wait_until(
        lambda: _finalizers(ns, "used") == [FINALIZER], 10, "the finalizer on a used connection"
    )
    wait_until(lambda: _finalizers(ns, "overridden") == [FINALIZER], 10, "the finalizer")
    assert _finalizers(ns, "unused") == []

    # an unused connection goes at once, whatever the operator does
    ns.delete_connection("unused")
    assert not ns.connection_exists("unused")

    # the override annotation takes the finalizer off
    ns.annotate("overridden", "warehouse-operator.io/allow-delete-in-use", "true")
    wait_until(lambda: _finalizers(ns, "overridden") == [], 10, "the finalizer removed")
    ns.delete_connection("overridden")
    assert not ns.connection_exists("overridden")

    # a used connection waits, and its status says for whom
    ns.delete_connection("used")
    obj = ns.wait_for(
        "used",
        lambda s: any(c.get("type") == "DeletionBlocked" for c in s.get("conditions") or []),
        timeout=10,
    )
    assert obj["metadata"].get("deletionTimestamp")
    blocked = next(c for c in obj["status"]["conditions"] if c["type"] == "DeletionBlocked")
    assert blocked["status"] == "True"
    assert blocked["reason"] == "InUse"
    assert "cronjob/nightly, deployment/api" in blocked["message"]
    warnings = [e for e in ns.events("used") if e.get("reason") == "DeletionBlocked"]
    assert len(warnings) == 1
    assert warnings[0]["type"] == "Warning"

    # users go one by one: the connection goes with the last one
    relabel_deployment(kube, ns.name, "api", None)
    time.sleep(1.0)
    assert ns.connection_exists("used")
    k8s.BatchV1Api(kube.api_client).delete_namespaced_cron_job("nightly", ns.name)
    wait_until(lambda: not ns.connection_exists("used"), 10, "the connection deleted")
    delete_deployment(kube, ns.name, "api")


def test_a_follower_writes_nothing_until_it_leads(
    kube: Kube, ns: Namespace, operators: OperatorFactory
) -> None:
    coordination = k8s.CoordinationV1Api(kube.api_client)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    coordination.create_namespaced_lease(
        ns.name,
        {
            "metadata": {"name": "whc"},
            "spec": {
                "holderIdentity": "another-replica",
                "leaseDurationSeconds": 60,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        },
    )
    op = operators(
        [ns.name],
        args=["--leader-elect", "--leader-election-namespace", ns.name],
        env={"WHC_LEADER_ELECTION_LEASE": "whc", "WHC_LEADER_ELECTION_RETRY_PERIOD": "500ms"},
    )
    ns.create_connection("used", unreachable_connection())
    create_workload(kube, ns.name, "Deployment", "api", "used")
    time.sleep(2.0)
    assert _finalizers(ns, "used") == []
    assert ns.status("used") == {}
    assert op.get(op.health_port, "/readyz") == (200, "ready (follower)\n")

    # the other replica goes away cleanly: this one leads, tests and protects at once
    lease = coordination.read_namespaced_lease("whc", ns.name)
    lease.spec.holder_identity = ""
    lease.spec.lease_duration_seconds = 1
    coordination.replace_namespaced_lease("whc", ns.name, lease)
    wait_until(
        lambda: _finalizers(ns, "used") == [FINALIZER], 5, "the finalizer from the new leader"
    )
    ns.wait_for("used", lambda s: s.get("phase") == "Failed", timeout=5)
    assert op.get(op.health_port, "/readyz") == (200, "ready (leader)\n")


def test_webhook_in_the_operator_with_self_managed_certificates(
    kube: Kube, ns: Namespace, operators: OperatorFactory
) -> None:
    config_name = f"whc-{ns.name}"
    admission = k8s.AdmissionregistrationV1Api(kube.api_client)
    webhook: dict[str, Any] = {
        "name": "connections.warehouse-operator.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "clientConfig": {
            "service": {"name": "whc-webhook", "namespace": ns.name, "path": "/validate"}
        },
        "rules": [
            {
                "apiGroups": ["warehouse-operator.io"],
                "apiVersions": ["*"],
                "operations": ["CREATE", "DELETE"],
                "resources": ["warehouseconnections"],
            }
        ],
    }
    admission.create_validating_webhook_configuration(
        {"metadata": {"name": config_name}, "webhooks": [webhook]}
    )
    try:
        port = unused_port()
        operators(
            [ns.name],
            args=["--webhook-port", str(port), "--one-connection-per-namespace"],
            env={
                "POD_NAMESPACE": ns.name,
                "WHC_WEBHOOK_SERVICE_NAME": "whc-webhook",
                "WHC_WEBHOOK_CONFIG_NAME": config_name,
            },
        )

        def ca_bundle() -> bytes:
            config = kube.api_client.sanitize_for_serialization(
                admission.read_validating_webhook_configuration(config_name)
            )
            return base64.b64decode(config["webhooks"][0]["clientConfig"].get("caBundle") or "")

        bundle = wait_until(ca_bundle, 10, "the caBundle")
        used = ns.create_connection("used", unreachable_connection())
        create_workload(kube, ns.name, "Deployment", "api", "used")
        name = f"whc-webhook.{ns.name}.svc"

        answer = post_review(
            port, admission_review("DELETE", ns.name, "used", old=used), bundle, name
        )
        assert answer["response"]["allowed"] is False
        assert answer["response"]["status"]["code"] == 409
        assert "deployment/api" in answer["response"]["status"]["message"]

        second = {
            "metadata": {"name": "second", "namespace": ns.name},
            "spec": unreachable_connection(),
        }
        answer = post_review(
            port, admission_review("CREATE", ns.name, "second", obj=second), bundle, name
        )
        assert answer["response"]["allowed"] is False
        assert answer["response"]["status"]["code"] == 403
    finally:
        admission.delete_validating_webhook_configuration(config_name)


def test_a_restarted_operator_never_drops_protection_before_it_knows_the_users(
    kube: Kube, ns: Namespace, operators: OperatorFactory
) -> None:
    first = operators([ns.name])
    ns.create_connection("used", unreachable_connection())
    create_workload(kube, ns.name, "Deployment", "api", "used")
    wait_until(lambda: _finalizers(ns, "used") == [FINALIZER], 10, "the finalizer")
    first.process.stop()

    # deleted while no operator runs: the finalizer holds it
    ns.delete_connection("used")
    assert ns.get_connection("used")["metadata"].get("deletionTimestamp")

    second = operators([ns.name])
    obj = ns.wait_for(
        "used",
        lambda s: any(c.get("type") == "DeletionBlocked" for c in s.get("conditions") or []),
        timeout=10,
    )
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    assert "removed the" not in second.process.log_text()

    relabel_deployment(kube, ns.name, "api", "something-else")
    wait_until(lambda: not ns.connection_exists("used"), 10, "the connection deleted")


def test_a_webhook_without_its_certificate_stops_the_operator_at_once(
    kubeconfig: Path, ns: Namespace, tmp_path: Path
) -> None:
    process = OperatorProcess(
        kubeconfig=kubeconfig,
        namespaces=[ns.name],
        log_file=tmp_path / "operator.log",
        extra_args=[
            "--webhook-port",
            str(unused_port()),
            "--webhook-cert-dir",
            str(tmp_path / "none"),
        ],
    )
    process.start()
    try:
        wait_until(lambda: not process.running, 20, "the operator exiting")
        assert process.returncode() not in (0, None)
        assert "cannot start" in process.log_text()
        assert "tls.crt" in process.log_text()
    finally:
        process.stop()
