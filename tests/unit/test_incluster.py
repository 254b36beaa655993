"""In-cluster login: KUBERNETES_SERVICE_HOST/PORT and the service account's files, as client-go's
rest.InClusterConfig reads them, with the token read afresh on every login."""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
import yaml
from aiohttp import web

from tests.support.pgserver import CertificateAuthority
from warehouse_operator.handlers import Runtime, _login
from warehouse_operator.kube import (
    InClusterError,
    KubeClient,
    in_cluster_config,
    pod_namespace,
    service_account_dir,
)
from warehouse_operator.settings import Settings

IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def service_account(directory: Path, token: str = "token-1", *, ca: bytes | None = b"CA") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token + "\n")
    (directory / "namespace").write_text("ops\n")
    if ca is not None:
        (directory / "ca.crt").write_bytes(ca)
    return directory


def test_host_port_token_ca_and_namespace(tmp_path: Path) -> None:
    found = in_cluster_config(IN_CLUSTER, service_account(tmp_path))
    assert found is not None
    assert found.server == "https://10.96.0.1:443"
    assert found.token == "token-1"
    assert found.ca_path == str(tmp_path / "ca.crt")
    assert found.namespace == "ops"
    assert "token-1" not in repr(found)


def test_no_ca_file_leaves_the_system_roots(tmp_path: Path) -> None:
    found = in_cluster_config(IN_CLUSTER, service_account(tmp_path, ca=None))
    assert found is not None
    assert found.ca_path is None


@pytest.mark.parametrize(
    ("host", "server"),
    [
        ("fd00:10:96::1", "https://[fd00:10:96::1]:6443"),
        ("[fd00:10:96::1]", "https://[fd00:10:96::1]:6443"),
        ("api.internal", "https://api.internal:6443"),
    ],
)
def test_ipv6_hosts_are_bracketed(tmp_path: Path, host: str, server: str) -> None:
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": "6443"}
    found = in_cluster_config(env, service_account(tmp_path))
    assert found is not None
    assert found.server == server


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
        {"KUBERNETES_SERVICE_PORT": "443"},
        {"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": "443"},
    ],
)
def test_not_in_a_cluster_without_both_variables(tmp_path: Path, env: dict[str, str]) -> None:
    assert in_cluster_config(env, service_account(tmp_path)) is None


def test_a_missing_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InClusterError, match=r"service account token .*token cannot be read"):
        in_cluster_config(IN_CLUSTER, tmp_path)


def test_an_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InClusterError, match="is empty"):
        in_cluster_config(IN_CLUSTER, service_account(tmp_path, token=""))


def test_a_rotated_token_is_read_on_the_next_call(tmp_path: Path) -> None:
    directory = service_account(tmp_path, token="before")
    first = in_cluster_config(IN_CLUSTER, directory)
    (directory / "token").write_text("after\n")
    second = in_cluster_config(IN_CLUSTER, directory)
    assert first is not None
    assert second is not None
    assert (first.token, second.token) == ("before", "after")


def test_the_directory_override_serves_the_namespace_too(tmp_path: Path) -> None:
    env = {"WHC_SERVICE_ACCOUNT_DIR": str(service_account(tmp_path))}
    assert service_account_dir(env) == tmp_path
    assert service_account_dir({}) == Path("/var/run/secrets/kubernetes.io/serviceaccount")
    assert pod_namespace(env) == "ops"


# --- the operator's login ------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config
    monkeypatch.setenv("WHC_SERVICE_ACCOUNT_DIR", str(tmp_path / "sa"))
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as cli.run does
    return monkeypatch


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [{"name": "k", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "kubeconfig-token"}}],
            }
        )
    )
    return path


def login() -> Any:
    """The operator's login (kopf's ConnectionInfo), outside a running operator."""
    return _login(Runtime(Settings()), kopf.OperatorSettings())


def test_login_in_a_cluster_uses_the_variables_not_cluster_dns(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in IN_CLUSTER.items():
        clean_env.setenv(key, value)
    service_account(tmp_path / "sa")
    # in-cluster first, as kopf's own logins order it: a kubeconfig present changes nothing
    clean_env.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", "https://dev:6443")))
    info = login()
    assert (info.server, info.token, info.default_namespace) == (
        "https://10.96.0.1:443",
        "token-1",
        "ops",
    )


def test_login_outside_a_cluster_uses_the_kubeconfig(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    service_account(tmp_path / "sa")  # files alone do not make a cluster, as in client-go
    clean_env.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", "https://dev:6443")))
    info = login()
    assert (info.server, info.token) == ("https://dev:6443", "kubeconfig-token")


def test_a_pod_without_a_token_still_uses_a_mounted_kubeconfig(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in IN_CLUSTER.items():
        clean_env.setenv(key, value)
    clean_env.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", "https://dev:6443")))
    assert login().server == "https://dev:6443"


def test_a_pod_without_a_token_or_kubeconfig_says_why(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in IN_CLUSTER.items():
        clean_env.setenv(key, value)
    with pytest.raises(kopf.LoginError, match=r"service account token .* cannot be read"):
        login()
    clean_env.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(kopf.LoginError, match="not in a cluster and no kubeconfig"):
        login()


# --- token rotation through the operator's own client --------------------------------------------


@pytest.fixture
async def tls_api(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[list[str], dict[str, str]]]:
    """An https API at localhost (the service variables point at it) that accepts only
    ``accepted["token"]``; ``seen`` lists the tokens it was sent. Its CA: ``authority.crt``."""
    authority = CertificateAuthority()
    cert, key = authority.issue(["localhost"])
    (tmp_path / "server.crt").write_bytes(cert)
    (tmp_path / "server.key").write_bytes(key)
    (tmp_path / "authority.crt").write_bytes(authority.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    seen: list[str] = []
    accepted = {"token": "token-1"}

    async def handle(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").partition(" ")[2]
        seen.append(token)
        if token != accepted["token"]:
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return web.json_response({"kind": "Namespace", "metadata": {"name": "ops"}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ops", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    clean_env.setenv("KUBERNETES_SERVICE_HOST", "localhost")
    clean_env.setenv("KUBERNETES_SERVICE_PORT", str(runner.addresses[0][1]))
    try:
        yield seen, accepted
    finally:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[KubeClient]:
    """The operator's own client, logging in as the operator does."""
    kube_client = KubeClient(login)
    yield kube_client
    await kube_client.close()


async def test_the_operator_client_logs_in_again_with_the_rotated_token(
    tmp_path: Path, tls_api: tuple[list[str], dict[str, str]], client: KubeClient
) -> None:
    seen, accepted = tls_api
    directory = service_account(tmp_path / "sa", ca=(tmp_path / "authority.crt").read_bytes())
    assert (await client.get_object("/api/v1/namespaces/ops"))["metadata"]["name"] == "ops"
    # the kubelet rotates the file; the API server then rejects the old token
    (directory / "token").write_text("token-2\n")
    accepted["token"] = "token-2"
    assert (await client.get_object("/api/v1/namespaces/ops"))["metadata"]["name"] == "ops"
    assert seen == ["token-1", "token-1", "token-2"]


async def test_tls_is_verified_against_the_service_account_ca(
    tmp_path: Path, tls_api: tuple[list[str], dict[str, str]], client: KubeClient
) -> None:
    service_account(tmp_path / "sa", ca=CertificateAuthority().cert_pem)  # another CA
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await client.get_object("/api/v1/namespaces/ops", retries=0)
    assert tls_api[0] == []
