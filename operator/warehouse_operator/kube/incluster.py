"""In-cluster connection info, the way client-go's ``rest.InClusterConfig`` finds it.

The API server is ``KUBERNETES_SERVICE_HOST``:``KUBERNETES_SERVICE_PORT`` over https (never
``kubernetes.default.svc``: a Pod may have no cluster DNS); the token, CA and namespace are
the files of the mounted service account. The token file is read on every call: bound
service-account tokens rotate (about hourly), and a login after a 401 must see the new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Where the service account's files are read from instead of SERVICE_ACCOUNT_DIR; meant for
# tests that run the operator "in a cluster" without writing to /var/run.
SERVICE_ACCOUNT_DIR_ENV = "WHC_SERVICE_ACCOUNT_DIR"
HOST_ENV = "KUBERNETES_SERVICE_HOST"
PORT_ENV = "KUBERNETES_SERVICE_PORT"


class InClusterError(Exception):
    """The environment says "in a cluster", but the service account cannot be read."""


@dataclass(frozen=True)
class InClusterConfig:
    server: str
    token: str = field(repr=False)  # never in a log line
    ca_path: str | None = None
    namespace: str | None = None


def service_account_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR)


def in_cluster_config(environ: Mapping[str, str], directory: Path) -> InClusterConfig | None:
    """None when not in a cluster (either variable missing or empty); ``InClusterError`` when
    in one without a readable, non-empty token in ``directory``."""
    host, port = environ.get(HOST_ENV, ""), environ.get(PORT_ENV, "")
    if not host or not port:
        return None
    token_file = directory / "token"
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InClusterError(
            f"{HOST_ENV} is set but the service account token {token_file} cannot be read"
            f" ({exc.strerror or type(exc).__name__}); is automountServiceAccountToken off?"
        ) from None
    if not token:
        raise InClusterError(f"the service account token {token_file} is empty")
    ca_file = directory / "ca.crt"
    return InClusterConfig(
        server=f"https://{_join_host_port(host, port)}",
        token=token,
        ca_path=str(ca_file) if ca_file.is_file() else None,
        namespace=_read_optional(directory / "namespace"),
    )


def _join_host_port(host: str, port: str) -> str:
    """As Go's net.JoinHostPort: an IPv6 address goes in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _read_optional(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "SERVICE_ACCOUNT_DIR_ENV",
    "InClusterConfig",
    "InClusterError",
    "in_cluster_config",
    "service_account_dir",
]
