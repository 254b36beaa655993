"""Fixtures for the operator's own machinery: leader election, admission webhook, in-use
finalizer, metrics and health endpoints.

Everything runs here and talks to 127.0.0.1 only: the Kubernetes API emulator
(``tests.support.kubeapi``, one per session, in its own process), a throwaway PostgreSQL server
(``tests.support.pgserver``) for connections that really connect, and the operator either as
real processes (``warehouse-operator run``) or, for the webhook and the elector, in-process
against the same API. Each test works in a namespace of its own.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kube_cluster import Kube, Namespace, delete_namespace, new_namespace
from tests.support.kube_login import plain_client
from tests.support.kube_operator import OperatorProcess
from tests.support.kubeapi import KubeAPIServer, kubeconfig_for
from tests.support.pgserver import PostgresServer
from tests.support.servers import free_port
from tests.support.waiting import poll_until
from tests.support.waiting import wait_until as wait_until
from warehouse_operator.kube import KubeClient

CONNECTION_LABEL = "warehouse-operator.io/connection"


@pytest.fixture(scope="session")
def kubeapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    workdir = tmp_path_factory.mktemp("kubeapi-operator")
    with KubeAPIServer(workdir=workdir) as server:
        yield server


@pytest.fixture(scope="session")
def kubeconfig(kubeapi: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kubeapi.write_kubeconfig(tmp_path_factory.mktemp("kubeconfig") / "config")


@pytest.fixture(scope="session")
def kube(kubeconfig: Path) -> Iterator[Kube]:
    connected = Kube.connect(kubeconfig)
    yield connected
    connected.close()


@pytest.fixture
def ns(kube: Kube) -> Iterator[Namespace]:
    namespace = Namespace(kube, new_namespace(kube, prefix="whc-op"))
    try:
        yield namespace
    finally:
        delete_namespace(kube, namespace.name)


@pytest.fixture
async def api(kubeapi: KubeAPIServer) -> AsyncIterator[KubeClient]:
    """The operator's own API client, in-process, against the emulator."""
    assert kubeconfig_for(kubeapi.url)  # the same server the processes use
    kube_client = plain_client(kubeapi.url, token="no-auth", scheme="Bearer")  # any token will do
    yield kube_client
    await kube_client.close()


# --- objects -------------------------------------------------------------------------------------


def workload(kind: str, name: str, connection: str | None) -> dict[str, Any]:
    """A minimal Deployment / Job / ... labelled as a user of ``connection``."""
    labels = {CONNECTION_LABEL: connection} if connection else {}
    pod: dict[str, Any] = {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    if kind == "Deployment":
        spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": pod}
        api_version = "apps/v1"
    elif kind == "Job":
        pod["spec"]["restartPolicy"] = "Never"
        spec = {"template": pod}
        api_version = "batch/v1"
    elif kind == "CronJob":
        pod["spec"]["restartPolicy"] = "Never"
        spec = {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": pod}}}
        api_version = "batch/v1"
    else:
        raise ValueError(kind)
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


def create_workload(
    kube: Kube, namespace: str, kind: str, name: str, connection: str | None
) -> None:
    body = workload(kind, name, connection)
    if kind == "Deployment":
        k8s.AppsV1Api(kube.api_client).create_namespaced_deployment(namespace, body)
    elif kind == "Job":
        k8s.BatchV1Api(kube.api_client).create_namespaced_job(namespace, body)
    else:
        k8s.BatchV1Api(kube.api_client).create_namespaced_cron_job(namespace, body)


def relabel_deployment(kube: Kube, namespace: str, name: str, connection: str | None) -> None:
    k8s.AppsV1Api(kube.api_client).patch_namespaced_deployment(
        name, namespace, {"metadata": {"labels": {CONNECTION_LABEL: connection}}}
    )


def delete_deployment(kube: Kube, namespace: str, name: str) -> None:
    k8s.AppsV1Api(kube.api_client).delete_namespaced_deployment(name, namespace)


def postgres_connection(pg: PostgresServer, secret: str, interval: str = "5m") -> dict[str, Any]:
    return {
        "provider": "postgres",
        "credentialsSecretRef": {"name": secret},
        "postgres": {
            "host": pg.host,
            "port": pg.port,
            "database": pg.database,
            "sslMode": "disable",
        },
        "testInterval": interval,
    }


def unreachable_connection(secret: str = "missing") -> dict[str, Any]:
    """A connection that is never tested successfully (no Secret): for in-use tests."""
    return {
        "provider": "postgres",
        "credentialsSecretRef": {"name": secret},
        "postgres": {"host": "127.0.0.1", "port": free_port(), "database": "x"},
    }


def get_lease(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    api = k8s.CoordinationV1Api(kube.api_client)
    try:
        lease = api.read_namespaced_lease(name, namespace)
    except k8s.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    result: dict[str, Any] = kube.api_client.sanitize_for_serialization(lease)
    return result


# --- the operator process ---------------------------------------------------------------------------


@dataclass
class RunningOperator:
    process: OperatorProcess
    metrics_port: int
    health_port: int

    def get(self, port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[str, Any]:
        """Metric families by name, parsed with prometheus_client's parser."""
        status, text = self.get(self.metrics_port, "/metrics")
        assert status == 200, text
        return {family.name: family for family in text_string_to_metric_families(text)}

    def sample_total(self, family: str, sample: str, **labels: str) -> float:
        """The sum of the samples called ``sample`` of ``family`` whose labels include ``labels``."""
        fam = self.metrics().get(family)
        if fam is None:
            return 0.0
        return float(
            sum(
                s.value
                for s in fam.samples
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
            )
        )

    def ready(self) -> bool:
        try:
            status, _ = self.get(self.health_port, "/readyz", timeout=1.0)
        except OSError:
            return False
        return status == 200

    def wait_until_serving(self, timeout: float = 20.0) -> None:
        if poll_until(self.ready, timeout, 0.1, give_up=lambda: not self.process.running):
            return
        raise AssertionError(f"the operator is not ready; its log:\n{self.process.log_tail()}")


@dataclass
class OperatorFactory:
    kubeconfig: Path
    workdir: Path
    started: list[RunningOperator] = field(default_factory=list)

    def __call__(
        self,
        namespaces: Sequence[str],
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        name: str = "operator",
    ) -> RunningOperator:
        metrics_port, health_port = free_port(), free_port()
        process = OperatorProcess(
            kubeconfig=self.kubeconfig,
            namespaces=namespaces,
            log_file=self.workdir / f"{name}-{len(self.started)}.log",
            extra_args=[
                "--metrics-port",
                str(metrics_port),
                "--health-port",
                str(health_port),
                *args,
            ],
            env=dict(env or {}),
        )
        running = RunningOperator(process, metrics_port, health_port)
        self.started.append(running)
        process.start()
        running.wait_until_serving()
        return running


@pytest.fixture
def operators(
    kubeconfig: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorFactory]:
    factory = OperatorFactory(kubeconfig, tmp_path)
    try:
        yield factory
    finally:
        for running in factory.started:
            running.process.stop()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            for running in factory.started:
                print(f"--- {running.process.log_file.name}\n{running.process.log_tail(80)}")


# --- admission reviews over HTTPS --------------------------------------------------------------------


def admission_review(
    operation: str,
    namespace: str,
    name: str,
    *,
    obj: Mapping[str, Any] | None = None,
    old: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it for a WarehouseConnection."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": secrets.token_hex(16),
            "kind": {
                "group": "warehouse-operator.io",
                "version": "v1alpha1",
                "kind": "WarehouseConnection",
            },
            "resource": {
                "group": "warehouse-operator.io",
                "version": "v1alpha1",
                "resource": "warehouseconnections",
            },
            "requestKind": {
                "group": "warehouse-operator.io",
                "version": "v1alpha1",
                "kind": "WarehouseConnection",
            },
            "requestResource": {
                "group": "warehouse-operator.io",
                "version": "v1alpha1",
                "resource": "warehouseconnections",
            },
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["system:masters", "system:authenticated"],
            },
            "object": dict(obj) if obj is not None else None,
            "oldObject": dict(old) if old is not None else None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions"}
            if operation == "DELETE"
            else None,
        },
    }


def post_review(
    port: int, review: Mapping[str, Any], ca_pem: bytes, server_name: str
) -> dict[str, Any]:
    """POST an AdmissionReview over HTTPS to 127.0.0.1, verifying the server as ``server_name``
    against ``ca_pem``: what the API server does with the webhook's Service name and caBundle."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sock = context.wrap_socket(raw, server_hostname=server_name)
    try:
        connection.request(
            "POST",
            "/validate",
            body=json.dumps(review),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        text = response.read()
        assert response.status == 200, text
    finally:
        connection.close()
    body: dict[str, Any] = json.loads(text)
    return body


def peer_certificate(port: int, ca_pem: bytes, server_name: str) -> bytes:
    """The DER certificate the server presents (verified against ``ca_pem`` as ``server_name``)."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der
