"""The operator's own API client (``KubeClient``) pointed at a test API server over plain HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warehouse_operator.kube import KubeClient

__all__ = ["PlainLogin", "plain_client"]


@dataclass
class PlainLogin:
    """The connection info ``KubeClient`` reads (what kopf's login gives it), for a server
    without TLS or client certificates: at most a token."""

    server: str
    ca_path: Any = None
    ca_data: Any = None
    insecure: bool | None = None
    username: str | None = None
    password: str | None = None
    scheme: str | None = None
    token: str | None = None
    certificate_path: Any = None
    certificate_data: Any = None
    private_key_path: Any = None
    private_key_data: Any = None


def plain_client(server: str, *, token: str | None = None, scheme: str | None = None) -> KubeClient:
    """A ``KubeClient`` for ``server`` (``http://host:port``), sending ``token`` if given."""
    login = PlainLogin(server, token=token, scheme=scheme)
    return KubeClient(lambda: login)
