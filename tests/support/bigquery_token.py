"""A local OAuth 2.0 token endpoint that behaves like Google's for the JWT-bearer grant.

google-auth's service-account credentials POST ``grant_type=urn:ietf:params:oauth:grant-type:
jwt-bearer`` and an RS256-signed assertion to the key's ``token_uri``. This endpoint verifies the
assertion against the public key registered for its issuer (the client email) and issues an
opaque access token, which the strict front (``bigquery_front.py``) then checks on every API
call. Refusals use Google's shapes: HTTP 400 with ``{"error": "invalid_grant", ...}``.

Audience: google-auth signs the assertion with ``aud = https://oauth2.googleapis.com/token``
whatever ``token_uri`` says, so that audience is accepted here besides this endpoint's own URL.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.servers import BackgroundHTTPServer, QuietHandler

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
TOKEN_LIFETIME = 3600
CLOCK_SKEW = 300


@dataclass(frozen=True)
class IssuedToken:
    email: str
    scopes: frozenset[str]
    expires_at: float


@dataclass(frozen=True)
class Registration:
    public_key: rsa.RSAPublicKey
    key_id: str | None


class GrantRefused(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenEndpoint(BackgroundHTTPServer):
    """Google's token endpoint, for the accounts registered with :meth:`register`."""

    def __init__(self) -> None:
        super().__init__(_TokenHandler)
        self._lock = threading.Lock()
        self._accounts: dict[str, Registration] = {}
        self._tokens: dict[str, IssuedToken] = {}
        self.audiences_seen: list[str] = []
        self.grants_refused: list[str] = []

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def register(self, email: str, public_key: rsa.RSAPublicKey, key_id: str | None) -> None:
        with self._lock:
            self._accounts[email] = Registration(public_key, key_id)

    def lookup(self, access_token: str) -> IssuedToken | None:
        with self._lock:
            issued = self._tokens.get(access_token)
        if issued is None or issued.expires_at < time.time():
            return None
        return issued

    def issued_for(self, email: str) -> list[str]:
        with self._lock:
            return [t for t, i in self._tokens.items() if i.email == email]

    def refused(self, description: str) -> None:
        with self._lock:
            self.grants_refused.append(description)

    def grant(self, form: dict[str, list[str]]) -> dict[str, Any]:
        grant_type = (form.get("grant_type") or [""])[0]
        if grant_type != JWT_BEARER:
            raise GrantRefused("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        assertion = (form.get("assertion") or [""])[0]
        claims = self._verify(assertion)
        scopes = frozenset(str(claims.get("scope") or "").split())
        if not scopes:
            raise GrantRefused(
                "invalid_scope", "Invalid OAuth scope or ID token audience provided."
            )
        token = "ya29.local-" + secrets.token_urlsafe(48)
        issued = IssuedToken(str(claims["iss"]), scopes, time.time() + TOKEN_LIFETIME)
        with self._lock:
            self._tokens[token] = issued
        return {"access_token": token, "expires_in": TOKEN_LIFETIME - 1, "token_type": "Bearer"}

    def _verify(self, assertion: str) -> dict[str, Any]:
        parts = assertion.split(".")
        if len(parts) != 3:
            raise GrantRefused("invalid_grant", "Invalid JWT: malformed assertion.")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (binascii.Error, ValueError):
            raise GrantRefused("invalid_grant", "Invalid JWT: malformed assertion.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise GrantRefused("invalid_grant", "Invalid JWT: malformed assertion.")
        with self._lock:
            registration = self._accounts.get(str(claims.get("iss")))
        if registration is None:
            raise GrantRefused("invalid_grant", "Invalid grant: account not found")
        if header.get("alg") != "RS256":
            raise GrantRefused("invalid_grant", "Invalid JWT Signature.")
        kid = header.get("kid")
        if kid is not None and registration.key_id is not None and kid != registration.key_id:
            raise GrantRefused("invalid_grant", "Invalid JWT Signature.")
        try:
            registration.public_key.verify(
                signature,
                f"{parts[0]}.{parts[1]}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise GrantRefused("invalid_grant", "Invalid JWT Signature.") from None
        audience = str(claims.get("aud"))
        with self._lock:
            self.audiences_seen.append(audience)
        if audience not in (GOOGLE_TOKEN_AUDIENCE, self.token_uri):
            raise GrantRefused("invalid_grant", "Invalid JWT: Failed audience check.")
        now = time.time()
        try:
            iat, exp = float(claims["iat"]), float(claims["exp"])
        except (KeyError, TypeError, ValueError):
            raise GrantRefused("invalid_grant", "Invalid JWT: missing iat or exp.") from None
        if exp - iat > TOKEN_LIFETIME or iat > now + CLOCK_SKEW or exp < now - CLOCK_SKEW:
            raise GrantRefused(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )
        return claims


class _TokenHandler(QuietHandler):
    def do_POST(self) -> None:
        endpoint: TokenEndpoint = self.server.owner  # type: ignore[attr-defined]
        body = self.read_body()
        if self.path.split("?", 1)[0] != "/token":
            self.send_json(404, {"error": "not_found"})
            return
        form = parse_qs(body.decode("utf-8", errors="replace"))
        try:
            answer = endpoint.grant(form)
        except GrantRefused as refusal:
            endpoint.refused(refusal.description)  # before answering, for tests that look at once
            self.send_json(
                refusal.status, {"error": refusal.error, "error_description": refusal.description}
            )
            return
        self.send_json(200, answer, {"Cache-Control": "no-store"})
