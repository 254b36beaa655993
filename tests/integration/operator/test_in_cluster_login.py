"""The real operator process logged in as in a Pod: only KUBERNETES_SERVICE_HOST/PORT and the
service account's files (token, ca.crt, namespace), no kubeconfig and no cluster DNS. The
emulator is reached over https through a front whose certificate the service account's CA
signed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube_cluster import Namespace
from tests.support.kubeapi import KubeAPIServer
from tests.support.pgserver import CertificateAuthority, PostgresServer
from tests.support.tls_front import TLSFront

from .conftest import OperatorFactory, postgres_connection


@pytest.fixture
def https_api(kubeapi: KubeAPIServer) -> Iterator[tuple[TLSFront, CertificateAuthority]]:
    authority = CertificateAuthority()
    cert, key = authority.issue(["localhost"])
    with TLSFront(kubeapi.port, cert, key) as front:
        yield front, authority


def test_a_pod_without_cluster_dns_connects_through_the_service_variables(
    ns: Namespace,
    postgres: PostgresServer,
    operators: OperatorFactory,
    https_api: tuple[TLSFront, CertificateAuthority],
    tmp_path: Path,
) -> None:
    front, authority = https_api
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token-1\n")
    (account / "ca.crt").write_bytes(authority.cert_pem)
    (account / "namespace").write_text(ns.name)
    home = tmp_path / "home"  # no ~/.kube/config to fall back on
    home.mkdir()

    ns.create_secret("pg", {"username": postgres.user, "password": postgres.password})
    ns.create_connection("db", postgres_connection(postgres, "pg"))
    op = operators(
        [ns.name],
        env={
            "KUBECONFIG": "",
            "HOME": str(home),
            "KUBERNETES_SERVICE_HOST": "localhost",
            "KUBERNETES_SERVICE_PORT": str(front.port),
            "WHC_SERVICE_ACCOUNT_DIR": str(account),
        },
    )
    ns.wait_for("db", lambda s: s.get("phase") == "Connected", timeout=30)
    # every request came through the https front with the service account's token
    assert front.tokens == {"pod-token-1"}
    assert "kubernetes.default.svc" not in op.process.log_text()
