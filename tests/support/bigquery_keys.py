"""Service accounts for the BigQuery tests: an RSA key pair and the JSON key Google would issue."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.encoding import b64


@dataclass(frozen=True)
class ServiceAccount:
    email: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    key_id: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    @property
    def private_key_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def key_info(self, *, token_uri: str, project_id: str) -> dict[str, Any]:
        """The JSON key as the console downloads it (same fields, same order)."""
        local = self.email.split("@", 1)[0]
        return {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": self.key_id,
            "private_key": self.private_key_pem,
            "client_email": self.email,
            "client_id": str(int.from_bytes(secrets.token_bytes(8), "big")),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{local}",
            "universe_domain": "googleapis.com",
        }

    def key_json(self, *, token_uri: str, project_id: str) -> str:
        return json.dumps(self.key_info(token_uri=token_uri, project_id=project_id), indent=2)


def new_service_account(email: str) -> ServiceAccount:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ServiceAccount(email=email, private_key=key, key_id=secrets.token_hex(20))


def secret_data(key_json: str, data_key: str = "service_account.json") -> dict[str, str]:
    """A Secret's ``data`` holding the key (base64, as the API server returns it)."""
    return {data_key: b64(key_json)}
