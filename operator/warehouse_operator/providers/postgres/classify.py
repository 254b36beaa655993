"""PostgreSQL's errors -> a reason and a message a person understands (pure; tested on its own)."""

from __future__ import annotations

import re

from warehouse_operator.models import PostgresSpec, Reason
from warehouse_operator.providers import network

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
        return Reason.TIMEOUT, network.silent(where)
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
        return Reason.TLS_ERROR, network.tls_failed(where, detail)
    network_failure = network.classify_network_text(low, where, detail)
    if network_failure is not None:
        return network_failure
    if sqlstate and sqlstate.startswith("08"):
        return Reason.UNREACHABLE, network.unreachable(where, detail)
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
