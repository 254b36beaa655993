"""The Secret -> Snowflake credentials: a password, or a key pair (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from warehouse_operator.models import SnowflakeSpec
from warehouse_operator.providers.snowflake.keys import load_private_key
from warehouse_operator.secrets import SecretData


@dataclass(frozen=True)
class SnowflakeCredentials:
    """What the connector needs to log in. ``private_key_der`` is unencrypted PKCS#8 DER."""

    username: str
    password: str | None = None
    private_key_der: bytes | None = None
    public_key_fingerprint: str | None = None

    @property
    def auth_method(self) -> str:
        return "keyPair" if self.private_key_der is not None else "password"

    def __repr__(self) -> str:  # never show a password or key, even in a debugger or traceback
        secret = "private_key=***" if self.private_key_der is not None else "password=***"
        return (
            f"SnowflakeCredentials(username={self.username!r}, {secret}, "
            f"public_key_fingerprint={self.public_key_fingerprint!r})"
        )


def parse_credentials(sf: SnowflakeSpec, secret: SecretData) -> SnowflakeCredentials:
    username = secret.require_text("username", "user")
    if sf.auth_method == "password":
        return SnowflakeCredentials(username=username, password=secret.require_text("password"))
    pem = secret.require_bytes("private_key")
    passphrase = secret.optional_bytes("private_key_passphrase")
    der, fingerprint = load_private_key(pem, passphrase, secret.secret_name)
    return SnowflakeCredentials(
        username=username, private_key_der=der, public_key_fingerprint=fingerprint
    )
