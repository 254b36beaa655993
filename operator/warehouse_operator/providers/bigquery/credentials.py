"""The Secret -> a checked service-account key, without any network (pure)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from warehouse_operator.models import ProbeFailure, Reason

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

SECRET_KEY = "service_account.json"  # noqa: S105 - a key name, not a value


@dataclass(frozen=True, repr=False)
class BigQueryCredentials:
    """A parsed service-account key. ``private_key`` is never shown."""

    client_email: str
    token_uri: str
    private_key_id: str | None
    private_key: RSAPrivateKey = field(compare=False)

    def __repr__(self) -> str:  # never show the key, even in a debugger or traceback
        return (
            f"BigQueryCredentials(client_email={self.client_email!r}, "
            f"token_uri={self.token_uri!r}, private_key=***)"
        )


def parse_service_account_key(raw: bytes, secret_name: str) -> BigQueryCredentials:
    """Check a service-account JSON key without any network (pure; tested on its own).

    Messages name the field at fault and never echo a value.
    """
    where = f"the service-account key in Secret {secret_name!r}"

    def invalid(detail: str) -> ProbeFailure:
        return ProbeFailure(Reason.INVALID_CREDENTIALS, f"{where} {detail}")

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise invalid("is not UTF-8 text") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg describes the syntax error only ("Expecting ',' delimiter"), no content
        raise invalid(
            f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(info, dict):
        raise invalid("is not a JSON object")
    if info.get("type") != "service_account":
        raise invalid(
            "has no field 'type' equal to 'service_account' "
            "(only service-account keys are supported)"
            if "type" in info
            else "has no field 'type'"
        )
    email = info.get("client_email")
    if not isinstance(email, str) or not email.strip():
        raise invalid("has no field 'client_email'")
    if "@" not in email or any(c.isspace() for c in email):
        raise invalid("has a field 'client_email' that is not an email address")
    private_key = _private_key(info.get("private_key"), invalid)
    token_uri = info.get("token_uri")
    if not isinstance(token_uri, str) or not token_uri.strip():
        raise invalid("has no field 'token_uri'")
    parts = urlsplit(token_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise invalid("has a field 'token_uri' that is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise invalid("has a field 'token_uri' with an invalid port") from None
    key_id = info.get("private_key_id")
    if key_id is not None and not isinstance(key_id, str):
        raise invalid("has a field 'private_key_id' that is not a string")
    return BigQueryCredentials(
        client_email=email, token_uri=token_uri, private_key_id=key_id, private_key=private_key
    )


def _private_key(value: Any, invalid: Callable[[str], ProbeFailure]) -> RSAPrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm

    if not isinstance(value, str) or not value.strip():
        raise invalid("has no field 'private_key'")
    if "-----BEGIN" not in value:
        raise invalid("has a field 'private_key' that is not a PEM private key")
    try:
        return _load_rsa_key(value)
    except TypeError:  # encrypted: Google never issues those
        raise invalid("has a field 'private_key' that is encrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise invalid("has a field 'private_key' that is not a readable PEM private key") from None
    except _NotRSA:
        raise invalid("has a field 'private_key' that is not an RSA key") from None


class _NotRSA(Exception):
    pass


@lru_cache(maxsize=256)
def _load_rsa_key(pem: str) -> RSAPrivateKey:
    """Load and validate a PEM key, once per key and process.

    Validating an RSA key takes some 60 ms of CPU with the GIL held, which would stall the
    event loop on every test of the connection; the key of a connection rarely changes.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _NotRSA
    return key
