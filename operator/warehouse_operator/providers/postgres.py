"""PostgreSQL: psycopg 3's async API, one connection, ``SELECT 1``, close."""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from warehouse_operator.models import ConnectionSpec, PostgresSpec, Reason
from warehouse_operator.providers.base import (
    Destination,
    ProbeFailure,
    ProbeSuccess,
    Resolved,
    Stages,
)
from warehouse_operator.secrets import CredentialError, SecretData

APPLICATION_NAME = "warehouse-operator"


@dataclass(frozen=True)
class PostgresCredentials:
    username: str
    password: str
    ca_pem: bytes | None

    def __repr__(self) -> str:  # never show the password, even in a debugger or traceback
        return f"PostgresCredentials(username={self.username!r}, password=***, ca_pem={'set' if self.ca_pem else None})"


def _pg(spec: ConnectionSpec) -> PostgresSpec:
    assert spec.postgres is not None  # guaranteed by ConnectionSpec validation
    return spec.postgres


class PostgresProvider:
    name = "postgres"
    driver_modules: tuple[str, ...] = ("psycopg",)

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> PostgresCredentials:
        username = secret.require_text("username", "user")
        password = secret.require_text("password")
        ca_pem = secret.optional_bytes("ca.crt")
        if ca_pem is not None:
            _check_ca(ca_pem, secret.secret_name)
        return PostgresCredentials(username=username, password=password, ca_pem=ca_pem)

    def destinations(
        self, spec: ConnectionSpec, credentials: PostgresCredentials
    ) -> list[Destination]:
        pg = _pg(spec)
        return [Destination(pg.host, pg.port, "database")]

    def stage_order(self) -> list[str]:
        return ["connect", "authenticate", "query"]

    async def probe(
        self,
        spec: ConnectionSpec,
        credentials: PostgresCredentials,
        *,
        timeout: float,
        stages: Stages,
        resolved: Resolved | None = None,
    ) -> ProbeSuccess:
        import psycopg  # imported here: only operators with postgres connections pay for it

        pg = _pg(spec)
        with _ca_file(credentials.ca_pem) as ca_path:
            params: dict[str, Any] = {
                "host": pg.host,
                "port": pg.port,
                "dbname": pg.database,
                "user": credentials.username,
                "password": credentials.password,
                "sslmode": pg.ssl_mode,
                # libpq counts whole seconds and treats values below 2 as 2
                "connect_timeout": max(2, math.ceil(timeout)),
                "application_name": APPLICATION_NAME,
            }
            addresses = list((resolved or {}).get(pg.host, ()))
            if addresses and addresses != [pg.host]:
                # connect to exactly the addresses the egress policy checked; ``host`` stays
                # the name, for TLS host name verification
                params["host"] = ",".join([pg.host] * len(addresses))
                params["hostaddr"] = ",".join(addresses)
            if pg.ssl_mode in ("verify-ca", "verify-full"):
                # without a CA in the Secret, verify against the system's trust store
                params["sslrootcert"] = ca_path or "system"
            started = time.monotonic()
            try:
                conn = await psycopg.AsyncConnection.connect(autocommit=True, **params)
            except psycopg.Error as exc:
                reason, message = classify_connect_error(
                    exc, pg, credentials.username, has_ca=credentials.ca_pem is not None
                )
                elapsed = _ms(started)
                if reason in _SERVER_ANSWERED:
                    stages.passed("connect", f"reached {pg.host}:{pg.port}", elapsed)
                    stages.failed("authenticate", message)
                else:
                    stages.failed("connect", message, elapsed)
                raise ProbeFailure(reason, message) from None
        try:
            tls = conn.pgconn.ssl_in_use
            stages.passed(
                "connect",
                f"connected to {pg.host}:{pg.port} {'with' if tls else 'without'} TLS",
                _ms(started),
            )
            stages.passed(
                "authenticate",
                f"authenticated as {credentials.username!r} to database {pg.database!r}",
            )
            with stages.stage("query", "SELECT 1 returned 1"):
                try:
                    cursor = await conn.execute("SELECT 1")
                    row = await cursor.fetchone()
                except psycopg.Error as exc:
                    raise ProbeFailure(*classify_query_error(exc)) from None
                if row is None or row[0] != 1:
                    raise ProbeFailure(Reason.PROVIDER_ERROR, "SELECT 1 did not return 1")
            raw_version = conn.info.parameter_status("server_version") or ""
        finally:
            await conn.close()
        version = raw_version.split(" ", 1)[0] if raw_version else ""
        return ProbeSuccess(server_version=f"PostgreSQL {version}" if version else None)


PROVIDER = PostgresProvider()

_SERVER_ANSWERED = frozenset(
    {Reason.AUTHENTICATION_FAILED, Reason.NOT_FOUND, Reason.PERMISSION_DENIED}
)


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _check_ca(ca_pem: bytes, secret_name: str) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise CredentialError(
            Reason.INVALID_CREDENTIALS,
            f"key 'ca.crt' of Secret {secret_name!r} is not a PEM certificate",
        ) from None


@contextmanager
def _ca_file(ca_pem: bytes | None) -> Iterator[str | None]:
    """libpq reads the CA from a file: write it to a private temporary one for this test."""
    if ca_pem is None:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="whc-ca-", suffix=".crt")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(ca_pem)
        yield path
    finally:
        os.unlink(path)


_MULTIPLE_ATTEMPTS = "Multiple connection attempts failed. All failures were:"
_ATTEMPT_PREFIX_RE = re.compile(r"^- host: .*?, hostaddr: '[^']*': ", re.MULTILINE)
_LIBPQ_PREFIX_RE = re.compile(
    r"^(?:connection failed:\s*)?(?:connection to server (?:at|on) .*? failed:\s*)?"
)
_SEVERITY_RE = re.compile(r"^(?:FATAL|ERROR|PANIC):\s*")


def _attempts(text: str) -> list[str]:
    """One error text per address tried.

    When a host resolves to several addresses (``localhost`` to ``::1`` and ``127.0.0.1``),
    psycopg tries each and reports the last failure first, then lists every attempt.
    """
    head, found, rest = text.partition(_MULTIPLE_ATTEMPTS)
    if not found:
        return [text]
    pieces = [p.strip() for p in re.split(r"\n(?=- host: )", rest.strip()) if p.strip()]
    attempts = [_ATTEMPT_PREFIX_RE.sub("", p, count=1) for p in pieces]
    return attempts or [head]


def _server_detail(text: str) -> str:
    """The server's (or libpq's) own words: the primary message and its DETAIL line.

    libpq's "connection to server at ... failed:" prefix, the severity and the hints that
    follow the message on tab-indented lines are dropped.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return text.strip()
    primary = _SEVERITY_RE.sub("", _LIBPQ_PREFIX_RE.sub("", lines[0], count=1), count=1)
    primary = re.sub(r"\s+", " ", primary).strip()
    detail = next(
        (line.removeprefix("DETAIL:").strip() for line in lines[1:] if line.startswith("DETAIL:")),
        "",
    )
    return f"{primary} ({detail})" if detail else primary


# When addresses fail differently, the attempt that got furthest explains the most: a server
# that answered beats one that stayed silent, which beats one that refused.
_RANK = {Reason.UNREACHABLE: 0, Reason.TIMEOUT: 1}


def classify_connect_error(
    exc: Exception, pg: PostgresSpec, username: str, *, has_ca: bool = False
) -> tuple[Reason, str]:
    """Map a connect-time psycopg error to a reason and a message (pure; tested on its own).

    libpq reports connect-time failures without an SQLSTATE, so the text decides; where the
    server sent a code (after the startup packet), the code decides first. ``has_ca`` tells
    whether the CA came from the Secret (else the system's trust store was used).
    """
    import psycopg

    sqlstate = getattr(exc, "sqlstate", None)
    text = str(exc)
    timed_out = isinstance(exc, psycopg.errors.ConnectionTimeout)
    attempts = _attempts(text)
    if len(attempts) == 1:
        return _classify_attempt(attempts[0], sqlstate, timed_out, pg, username, has_ca)
    results = [_classify_attempt(a, None, False, pg, username, has_ca) for a in attempts]
    # max() keeps the first of equals; reversed: ties go to the last attempt, as psycopg does
    return max(reversed(results), key=lambda r: _RANK.get(r[0], 2))


def _classify_attempt(
    text: str,
    sqlstate: str | None,
    timed_out: bool,
    pg: PostgresSpec,
    username: str,
    has_ca: bool,
) -> tuple[Reason, str]:
    low = text.lower()
    where = f"{pg.host}:{pg.port}"
    detail = _server_detail(text)
    if timed_out or "timeout expired" in low:
        return Reason.TIMEOUT, f"{where} did not answer in time"
    if "not permitted to log in" in low:
        return Reason.PERMISSION_DENIED, f"user {username!r} may not log in: {detail}"
    if (
        sqlstate == "28P01"
        or "password authentication failed" in low
        or "no password supplied" in low
    ):
        return Reason.AUTHENTICATION_FAILED, f"password authentication failed for user {username!r}"
    if sqlstate == "28000" and "pg_hba.conf" not in low:
        return Reason.AUTHENTICATION_FAILED, f"the server rejected user {username!r}: {detail}"
    if sqlstate == "3D000" or re.search(r'database ".*" does not exist', text):
        return Reason.NOT_FOUND, f"database {pg.database!r} does not exist on {where}"
    if re.search(r'role ".*" does not exist', text):
        return Reason.AUTHENTICATION_FAILED, f"user {username!r} does not exist on {where}"
    if sqlstate == "42501" or "permission denied" in low:
        return Reason.PERMISSION_DENIED, f"user {username!r} may not connect: {detail}"
    if any(s in low for s in _NOT_POSTGRES):
        # the first bytes of a foreign service are not quoted: that would name the service
        return Reason.PROVIDER_ERROR, f"{where} did not answer as a PostgreSQL server"
    if "does not support ssl" in low:
        return (
            Reason.TLS_ERROR,
            f"{where} does not support TLS, but sslMode {pg.ssl_mode} requires it",
        )
    if "pg_hba.conf" in low:
        if "no encryption" in low and pg.ssl_mode in ("disable", "allow"):
            return Reason.TLS_ERROR, f"{where} requires TLS, but sslMode is {pg.ssl_mode}"
        return (
            Reason.PERMISSION_DENIED,
            f"the server's pg_hba.conf has no entry allowing this connection ({detail})",
        )
    if "certificate verify failed" in low:
        trusted = (
            "the CA in Secret key 'ca.crt'"
            if has_ca
            else "the system's trusted CAs (a private CA goes in Secret key 'ca.crt')"
        )
        return (
            Reason.TLS_ERROR,
            f"the server certificate of {where} did not verify against {trusted}: {detail}",
        )
    if any(s in low for s in ("certificate", "ssl", "tls", "root cert")):
        return Reason.TLS_ERROR, f"TLS with {where} failed: {detail}"
    if any(
        s in low
        for s in (
            "connection refused",
            "could not translate host name",
            "failed to resolve host",
            "name or service not known",
            "no route to host",
            "network is unreachable",
            "host is unreachable",
            "connection reset",
            # closed before any PostgreSQL message: the same fault as a reset, a moment later
            "server closed the connection unexpectedly",
        )
    ):
        return Reason.UNREACHABLE, f"cannot reach {where}: {detail}"
    if sqlstate and sqlstate.startswith("08"):
        return Reason.UNREACHABLE, f"cannot reach {where}: {detail}"
    return Reason.PROVIDER_ERROR, f"PostgreSQL at {where} refused the connection: {detail}"


# libpq's words for an answer that is not the PostgreSQL protocol
_NOT_POSTGRES = (
    "invalid response to ssl negotiation",
    "expected authentication request from server",
    "received invalid response",
    "unexpected message from server",
    "invalid message length",
)


def classify_query_error(exc: Exception) -> tuple[Reason, str]:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    detail = _server_detail(str(exc))
    if sqlstate.startswith("42501"):
        return Reason.PERMISSION_DENIED, f"the test query was refused: {detail}"
    if sqlstate.startswith("57014"):
        return Reason.TIMEOUT, "the test query was cancelled by a statement timeout"
    return Reason.PROVIDER_ERROR, f"the test query failed: {detail}"
