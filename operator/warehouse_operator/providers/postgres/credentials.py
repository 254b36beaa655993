"""The Secret -> PostgreSQL credentials (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from warehouse_operator.models import ProbeFailure, Reason
from warehouse_operator.secrets import SecretData


@dataclass(frozen=True)
class PostgresCredentials:
    username: str
    password: str
    ca_pem: bytes | None

    def __repr__(self) -> str:  # never show the password, even in a debugger or traceback
        return f"PostgresCredentials(username={self.username!r}, password=***, ca_pem={'set' if self.ca_pem else None})"


def parse_credentials(secret: SecretData) -> PostgresCredentials:
    username = secret.require_text("username", "user")
    password = secret.require_text("password")
    ca_pem = secret.optional_bytes("ca.crt")
    if ca_pem is not None:
        _check_ca(ca_pem, secret.secret_name)
    return PostgresCredentials(username=username, password=password, ca_pem=ca_pem)


def _check_ca(ca_pem: bytes, secret_name: str) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise ProbeFailure(
            Reason.INVALID_CREDENTIALS,
            f"key 'ca.crt' of Secret {secret_name!r} is not a PEM certificate",
        ) from None
