"""The admission webhook server in-process: real AdmissionReview JSON over HTTPS, answered
from what the API emulator holds; certificates from a folder (reloaded) or self-managed
(a Secret shared by replicas, the caBundle patched, rotation before expiry)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from kubernetes import client as k8s

from tests.support.kube_cluster import Kube, Namespace
from tests.support.kubeapi import KubeAPIServer
from tests.support.pgserver import CertificateAuthority, unused_port
from tests.support.waiting import eventually
from warehouse_operator.inuse import InUseKind, parse_kinds
from warehouse_operator.kube import KubeClient
from warehouse_operator.settings import DEFAULT_IN_USE_KINDS
from warehouse_operator.webhooks import (
    WEBHOOK_CONFIG_API,
    Admission,
    SelfSignedOptions,
    WebhookServer,
)

from .conftest import (
    admission_review,
    create_workload,
    delete_deployment,
    peer_certificate,
    post_review,
    relabel_deployment,
    unreachable_connection,
)

KINDS = parse_kinds(DEFAULT_IN_USE_KINDS)


@dataclass
class Endpoint:
    """A webhook server as the API server reaches it: a port, the CA bundle it verifies the
    serving certificate against, and the Service name it expects in that certificate."""

    port: int
    ca_pem: bytes
    name: str

    async def review(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response to ``body``, after checking the envelope of the answer."""
        answer = await asyncio.to_thread(post_review, self.port, body, self.ca_pem, self.name)
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == body["request"]["uid"]
        response: dict[str, Any] = answer["response"]
        return response

    async def certificate(self, name: str | None = None) -> bytes:
        """The DER serving certificate, verified as ``name`` (by default the Service name)."""
        return await asyncio.to_thread(peer_certificate, self.port, self.ca_pem, name or self.name)


def allowed_to_delete_in_use(connection: dict[str, Any]) -> dict[str, Any]:
    """``connection`` with the annotation that overrides the in-use check."""
    annotations = {"warehouse-operator.io/allow-delete-in-use": "true"}
    return {**connection, "metadata": {**connection["metadata"], "annotations": annotations}}


class DirServer(Endpoint):
    """A server whose certificate comes from a folder, with the CA that issues it."""

    def __init__(self, folder: Path, ca: CertificateAuthority, name: str) -> None:
        super().__init__(unused_port(), ca.cert_pem, name)
        self.folder, self.ca = folder, ca

    def write(self, cert: bytes, key: bytes) -> None:
        (self.folder / "tls.crt").write_bytes(cert)
        (self.folder / "tls.key").write_bytes(key)


@pytest.fixture
async def dir_server(
    api: KubeClient, ns: Namespace, tmp_path: Path
) -> AsyncIterator[tuple[WebhookServer, DirServer]]:
    ca = CertificateAuthority()
    name = f"whc-webhook.{ns.name}.svc"
    files = DirServer(tmp_path, ca, name)
    files.write(*ca.issue([name]))
    server = WebhookServer(
        Admission(api, in_use_kinds=KINDS, one_connection_per_namespace=True),
        port=files.port,
        host="127.0.0.1",
        cert_dir=str(tmp_path),
        poll_interval=0.1,
    )
    await server.start()
    yield server, files
    await server.stop()


async def test_delete_of_a_connection_in_use_is_refused_with_409_naming_the_users(
    kube: Kube, ns: Namespace, dir_server: tuple[WebhookServer, DirServer]
) -> None:
    _, files = dir_server
    used = ns.create_connection("warehouse", unreachable_connection())
    spare = ns.create_connection("spare", unreachable_connection())
    create_workload(kube, ns.name, "Deployment", "api", "warehouse")
    create_workload(kube, ns.name, "Job", "etl", "warehouse")
    create_workload(kube, ns.name, "Deployment", "web", None)  # unlabelled: not a user

    answer = await files.review(admission_review("DELETE", ns.name, "warehouse", old=used))
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 409
    assert answer["status"]["reason"] == "Conflict"
    assert "deployment/api, job/etl" in answer["status"]["message"]
    assert "web" not in answer["status"]["message"]

    # an unused connection goes
    answer = await files.review(admission_review("DELETE", ns.name, "spare", old=spare))
    assert answer == {"uid": answer["uid"], "allowed": True}

    # the override annotation
    overridden = allowed_to_delete_in_use(used)
    answer = await files.review(admission_review("DELETE", ns.name, "warehouse", old=overridden))
    assert answer["allowed"] is True

    # once the users are gone (relabelled / deleted), the deletion is allowed
    relabel_deployment(kube, ns.name, "api", "other")
    answer = await files.review(admission_review("DELETE", ns.name, "warehouse", old=used))
    assert answer["allowed"] is False
    assert "is in use by job/etl:" in answer["status"]["message"]
    delete_deployment(kube, ns.name, "api")
    k8s.BatchV1Api(kube.api_client).delete_namespaced_job("etl", ns.name)
    answer = await files.review(admission_review("DELETE", ns.name, "warehouse", old=used))
    assert answer["allowed"] is True


async def test_one_connection_per_namespace_refuses_a_second_create(
    ns: Namespace, dir_server: tuple[WebhookServer, DirServer]
) -> None:
    _, files = dir_server
    first = {
        "apiVersion": "warehouse-operator.io/v1alpha1",
        "kind": "WarehouseConnection",
        "metadata": {"name": "first", "namespace": ns.name},
        "spec": unreachable_connection(),
    }
    answer = await files.review(admission_review("CREATE", ns.name, "first", obj=first))
    assert answer["allowed"] is True
    ns.create_connection("first", unreachable_connection())

    second = {**first, "metadata": {"name": "second", "namespace": ns.name}}
    answer = await files.review(admission_review("CREATE", ns.name, "second", obj=second))
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    assert answer["status"]["reason"] == "Forbidden"
    assert "first" in answer["status"]["message"]


async def test_requests_it_cannot_check_are_refused_but_the_override_still_works(
    ns: Namespace, kubeapi: KubeAPIServer, dir_server: tuple[WebhookServer, DirServer]
) -> None:
    _, files = dir_server
    used = ns.create_connection("warehouse", unreachable_connection())
    overridden = allowed_to_delete_in_use(used)
    kubeapi.stop()
    try:
        answer = await files.review(admission_review("DELETE", ns.name, "warehouse", old=used))
        assert answer["allowed"] is False
        assert answer["status"]["code"] == 500
        assert "could not check" in answer["status"]["message"]
        answer = await files.review(
            admission_review("DELETE", ns.name, "warehouse", old=overridden)
        )
        assert answer["allowed"] is True
    finally:
        kubeapi.start()


async def test_other_requests_are_allowed_and_garbage_is_a_bad_request(
    ns: Namespace, dir_server: tuple[WebhookServer, DirServer]
) -> None:
    _, files = dir_server
    answer = await files.review(
        admission_review("UPDATE", ns.name, "warehouse", obj={"metadata": {"name": "warehouse"}})
    )
    assert answer["allowed"] is True
    other = admission_review("DELETE", ns.name, "x", old={"metadata": {"name": "x"}})
    other["request"]["resource"] = {"group": "apps", "version": "v1", "resource": "deployments"}
    other["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    answer = await files.review(other)
    assert answer["allowed"] is True
    with pytest.raises(AssertionError, match="not an AdmissionReview"):
        await asyncio.to_thread(post_review, files.port, {"request": {}}, files.ca_pem, files.name)


async def test_certificate_folder_is_reloaded_when_it_changes(
    dir_server: tuple[WebhookServer, DirServer],
) -> None:
    server, files = dir_server
    first = await files.certificate()

    # a half-written pair (a key that does not match) is ignored: the old one stays
    other_cert, _ = files.ca.issue([files.name])
    _, other_key = files.ca.issue([files.name])
    files.write(other_cert, other_key)
    await asyncio.sleep(0.5)
    assert await files.certificate() == first
    assert server.directory is not None
    assert server.directory.reloads == 0

    new_cert, new_key = files.ca.issue([files.name])
    files.write(new_cert, new_key)
    new_der = x509.load_pem_x509_certificate(new_cert).public_bytes(Encoding.DER)

    async def serving_new() -> bool:
        return await files.certificate() == new_der

    await eventually(serving_new, 5, "the new certificate served")
    assert server.directory.reloads == 1


# --- self-managed certificates ---------------------------------------------------------------------


class SelfSigned:
    """Starts webhook servers that manage their own certificates in a namespace, against one
    ValidatingWebhookConfiguration (``config``) whose caBundle they keep."""

    def __init__(self, api: KubeClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.config = f"whc-{namespace}"
        self.name = f"whc-webhook.{namespace}.svc"
        self.servers: list[WebhookServer] = []

    async def create_config(self) -> None:
        body = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": self.config},
            "webhooks": [
                {
                    "name": "delete-in-use.warehouse-operator.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "clientConfig": {
                        "service": {
                            "name": "whc-webhook",
                            "namespace": self.namespace,
                            "path": "/validate",
                        }
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
            ],
        }
        await self.api.create_object(WEBHOOK_CONFIG_API, body)

    async def start(self, **overrides: Any) -> WebhookServer:
        options = SelfSignedOptions(
            namespace=self.namespace,
            service="whc-webhook",
            secret_name="whc-webhook-tls",
            webhook_config=self.config,
            check_interval=0.2,
            **overrides,
        )
        server = WebhookServer(
            Admission(self.api, in_use_kinds=KINDS, one_connection_per_namespace=False),
            port=unused_port(),
            host="127.0.0.1",
            self_signed=options,
            api=self.api,
        )
        await server.start()
        self.servers.append(server)
        return server

    async def ca_bundle(self) -> bytes:
        config = await self.api.get_object(f"{WEBHOOK_CONFIG_API}/{self.config}")
        value = config["webhooks"][0]["clientConfig"].get("caBundle") or ""
        return base64.b64decode(value)

    def endpoint(self, server: WebhookServer, bundle: bytes) -> Endpoint:
        """``server`` as the API server reaches it when the caBundle is ``bundle``."""
        return Endpoint(server.port, bundle, self.name)

    async def close(self) -> None:
        for server in self.servers:
            await server.stop()
        with contextlib.suppress(Exception):
            await self.api._request("DELETE", f"{WEBHOOK_CONFIG_API}/{self.config}")


@pytest.fixture
async def self_signed(api: KubeClient, ns: Namespace) -> AsyncIterator[SelfSigned]:
    servers = SelfSigned(api, ns.name)
    await servers.create_config()
    yield servers
    await servers.close()


async def test_self_signed_certificate_is_shared_by_replicas_and_its_ca_published(
    api: KubeClient, ns: Namespace, self_signed: SelfSigned
) -> None:
    one = await self_signed.start()
    bundle = await self_signed.ca_bundle()
    secret = await api.get_object(f"/api/v1/namespaces/{ns.name}/secrets/whc-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert base64.b64decode(secret["data"]["ca.crt"]) == bundle
    assert one.self_signed is not None
    assert one.self_signed.ca_bundle_patches == 1

    ns.create_connection("warehouse", unreachable_connection())
    first = self_signed.endpoint(one, bundle)
    answer = await first.review(
        admission_review("DELETE", ns.name, "warehouse", old={"metadata": {"name": "warehouse"}})
    )
    assert answer["allowed"] is True

    # a second replica uses the same Secret: same certificate, caBundle left alone
    two = await self_signed.start()
    assert two.self_signed is not None
    assert two.self_signed.rotations == 0
    assert two.self_signed.ca_bundle_patches == 0
    assert await self_signed.endpoint(two, bundle).certificate() == await first.certificate()
    # every name the API server may use for the Service is in the certificate
    for dns in (
        f"whc-webhook.{ns.name}.svc",
        f"whc-webhook.{ns.name}.svc.cluster.local",
        "whc-webhook",
    ):
        await first.certificate(dns)

    # a deployment tool resets the caBundle: it is put back
    await api.patch_object(
        f"{WEBHOOK_CONFIG_API}/{self_signed.config}",
        [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": ""}],
        content_type="application/json-patch+json",
    )
    restored = await eventually(self_signed.ca_bundle, 5, "the caBundle restored")
    assert restored == bundle


async def test_self_signed_serving_certificate_is_rotated_before_expiry(
    self_signed: SelfSigned,
) -> None:
    server = await self_signed.start(cert_validity=dt.timedelta(seconds=4))
    bundle = await self_signed.ca_bundle()
    endpoint = self_signed.endpoint(server, bundle)
    first = await endpoint.certificate()

    async def rotated() -> bool:
        return await endpoint.certificate() != first

    await eventually(rotated, 8, "a renewed serving certificate")
    # same CA: the caBundle did not have to change, and the new certificate verifies against it
    assert await self_signed.ca_bundle() == bundle
    cert = x509.load_der_x509_certificate(await endpoint.certificate())
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC)


async def test_self_signed_ca_rotation_keeps_the_old_ca_in_the_bundle(
    self_signed: SelfSigned,
) -> None:
    server = await self_signed.start(
        ca_validity=dt.timedelta(seconds=4), cert_validity=dt.timedelta(seconds=4)
    )
    first_bundle = await self_signed.ca_bundle()
    assert len(x509.load_pem_x509_certificates(first_bundle)) == 1

    async def two_cas() -> bytes | None:
        bundle = await self_signed.ca_bundle()
        return bundle if len(x509.load_pem_x509_certificates(bundle)) == 2 else None

    bundle = await eventually(two_cas, 8, "a bundle with the new and the old CA")
    cas = x509.load_pem_x509_certificates(bundle)
    assert cas[1] == x509.load_pem_x509_certificates(first_bundle)[0]  # the old one kept, second
    await self_signed.endpoint(server, bundle).certificate()


def test_in_use_kinds_default_to_the_workload_kinds() -> None:
    assert [str(k) for k in KINDS] == list(DEFAULT_IN_USE_KINDS)
    assert KINDS[0] == InUseKind("apps", "v1", "deployments")


async def test_a_namespace_being_deleted_never_waits_for_the_webhook(
    kube: Kube, ns: Namespace, api: KubeClient, dir_server: tuple[WebhookServer, DirServer]
) -> None:
    _, files = dir_server
    used = ns.create_connection("warehouse", unreachable_connection())
    create_workload(kube, ns.name, "Deployment", "api", "warehouse")
    body = admission_review("DELETE", ns.name, "warehouse", old=used)
    answer = await files.review(body)
    assert answer["status"]["code"] == 409

    # what a real API server shows while the namespace controller empties the namespace
    await api.patch_object(
        f"/api/v1/namespaces/{ns.name}/status", {"status": {"phase": "Terminating"}}
    )
    answer = await files.review(body)
    assert answer["allowed"] is True
