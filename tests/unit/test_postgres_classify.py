"""``classify_connect_error`` on the exact texts psycopg raises.

The texts were produced by the integration tests' servers (PostgreSQL 15 via psycopg 3.3 and
its bundled libpq 18); connect-time errors carry no SQLSTATE, so the text is what decides.
"""

from __future__ import annotations

import psycopg
import pytest

from warehouse_operator.models import PostgresSpec, Reason
from warehouse_operator.providers.postgres.classify import (
    classify_connect_error,
    classify_query_error,
)

PREFIX = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '

BAD_PASSWORD = PREFIX + 'FATAL:  password authentication failed for user "app"'
NO_DATABASE = PREFIX + 'FATAL:  database "nope" does not exist'
NO_CONNECT = (
    PREFIX
    + 'FATAL:  permission denied for database "appdb"\nDETAIL:  User does not have CONNECT privilege.'
)
NO_PASSWORD = PREFIX + "fe_sendauth: no password supplied"
REFUSED = (
    PREFIX
    + "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?"
)
TIMEOUT = "connection timeout expired"
NO_SSL = PREFIX + "server does not support SSL, but SSL was required"
HBA_NO_ENCRYPTION = (
    PREFIX
    + 'FATAL:  no pg_hba.conf entry for host "127.0.0.1", user "app", database "appdb", no encryption'
)
WRONG_HOST = PREFIX + 'server certificate for "localhost" does not match host name "127.0.0.1"'
VERIFY_FAILED = PREFIX + "SSL error: certificate verify failed"
NO_ROOT_CERT = (
    PREFIX
    + 'root certificate file "/nonexistent.crt" does not exist\nEither provide the file, use '
    "the system's trusted roots with sslrootcert=system, or change sslmode to disable server "
    "certificate verification."
)
DNS = "failed to resolve host 'no-such-host.invalid': [Errno -2] Name or service not known"
NOLOGIN = PREFIX + 'FATAL:  role "app" is not permitted to log in'


def multiple_attempts(last: str, *attempts: tuple[str, str]) -> str:
    """psycopg's text when a host has several addresses: the last failure, then all of them."""
    lines = [last, "Multiple connection attempts failed. All failures were:"]
    for hostaddr, text in attempts:
        lines.append(f"- host: 'localhost', port: '5432', hostaddr: '{hostaddr}': {text}")
    return "\n".join(lines)


def pg(ssl_mode: str = "prefer", database: str = "appdb") -> PostgresSpec:
    return PostgresSpec.model_validate(
        {"host": "127.0.0.1", "port": 5432, "database": database, "sslMode": ssl_mode}
    )


def classify(
    exc: Exception, ssl_mode: str = "prefer", *, has_ca: bool = False
) -> tuple[Reason, str]:
    return classify_connect_error(exc, pg(ssl_mode), "app", has_ca=has_ca)


def operational(text: str) -> psycopg.OperationalError:
    return psycopg.OperationalError(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (BAD_PASSWORD, Reason.AUTHENTICATION_FAILED),
        (NO_PASSWORD, Reason.AUTHENTICATION_FAILED),
        (NO_DATABASE, Reason.NOT_FOUND),
        (NO_CONNECT, Reason.PERMISSION_DENIED),
        (NOLOGIN, Reason.PERMISSION_DENIED),
        (REFUSED, Reason.UNREACHABLE),
        (DNS, Reason.UNREACHABLE),
        (NO_SSL, Reason.TLS_ERROR),
        (WRONG_HOST, Reason.TLS_ERROR),
        (VERIFY_FAILED, Reason.TLS_ERROR),
        (NO_ROOT_CERT, Reason.TLS_ERROR),
        (PREFIX + "something nobody has seen before", Reason.PROVIDER_ERROR),
    ],
)
def test_reason_from_text(text: str, reason: Reason) -> None:
    assert classify(operational(text))[0] is reason


def test_connection_timeout_type() -> None:
    reason, message = classify(psycopg.errors.ConnectionTimeout(TIMEOUT))
    assert reason is Reason.TIMEOUT
    assert message == "127.0.0.1:5432 did not answer in time"


def test_messages_drop_libpq_prefix_and_severity_and_keep_detail() -> None:
    _, message = classify(operational(NO_CONNECT))
    assert message == (
        "user 'app' may not connect: permission denied for database \"appdb\" "
        "(User does not have CONNECT privilege.)"
    )
    _, message = classify(operational(REFUSED))
    assert message == "cannot reach 127.0.0.1:5432: connection refused"
    _, message = classify(operational(WRONG_HOST))
    assert message == (
        'TLS with 127.0.0.1:5432 failed: server certificate for "localhost" does not match '
        'host name "127.0.0.1"'
    )


def test_not_found_names_the_spec_database() -> None:
    reason, message = classify_connect_error(operational(NO_DATABASE), pg(database="nope"), "app")
    assert reason is Reason.NOT_FOUND
    assert message == "database 'nope' does not exist on 127.0.0.1:5432"


def test_certificate_verify_failure_says_which_ca() -> None:
    _, with_ca = classify(operational(VERIFY_FAILED), "verify-full", has_ca=True)
    assert "the CA in Secret key 'ca.crt'" in with_ca
    _, without_ca = classify(operational(VERIFY_FAILED), "verify-full", has_ca=False)
    assert "system's trusted CAs" in without_ca


@pytest.mark.parametrize(
    ("ssl_mode", "reason"),
    [
        ("disable", Reason.TLS_ERROR),
        ("allow", Reason.TLS_ERROR),
        # with prefer/require TLS would have been used had the server offered it: the missing
        # pg_hba.conf line is the problem, not the client's TLS setting
        ("prefer", Reason.PERMISSION_DENIED),
    ],
)
def test_hba_no_encryption_depends_on_ssl_mode(ssl_mode: str, reason: Reason) -> None:
    assert classify(operational(HBA_NO_ENCRYPTION), ssl_mode)[0] is reason


def test_sqlstate_wins_over_localised_text() -> None:
    # a server speaking German: the code still tells what happened
    german = "FATAL:  Passwort-Authentifizierung für Benutzer »app« fehlgeschlagen"
    assert classify(psycopg.errors.InvalidPassword(german))[0] is Reason.AUTHENTICATION_FAILED
    missing_db = "FATAL:  Datenbank »nope« existiert nicht"
    assert classify(psycopg.errors.InvalidCatalogName(missing_db))[0] is Reason.NOT_FOUND
    no_priv = "FATAL:  keine Berechtigung für Datenbank »appdb«"
    assert classify(psycopg.errors.InsufficientPrivilege(no_priv))[0] is Reason.PERMISSION_DENIED


REFUSED_V6 = REFUSED.replace('"127.0.0.1"', '"::1"')


@pytest.mark.parametrize(
    "attempts",
    [
        (("::1", REFUSED_V6), ("127.0.0.1", BAD_PASSWORD)),
        (("127.0.0.1", BAD_PASSWORD), ("::1", REFUSED_V6)),
    ],
)
def test_several_addresses_the_one_that_got_furthest_decides(
    attempts: tuple[tuple[str, str], ...],
) -> None:
    # localhost -> ::1 (nothing listens) and 127.0.0.1 (the server said no), in either order
    text = multiple_attempts(attempts[-1][1], *attempts)
    reason, message = classify(operational(text))
    assert reason is Reason.AUTHENTICATION_FAILED
    assert message == "password authentication failed for user 'app'"


def test_several_addresses_silence_beats_refusal() -> None:
    text = multiple_attempts(REFUSED_V6, ("127.0.0.1", TIMEOUT), ("::1", REFUSED_V6))
    assert classify(operational(text))[0] is Reason.TIMEOUT


def test_several_addresses_all_refused() -> None:
    text = multiple_attempts(REFUSED, ("::1", REFUSED_V6), ("127.0.0.1", REFUSED))
    reason, message = classify(operational(text))
    assert reason is Reason.UNREACHABLE
    assert message == "cannot reach 127.0.0.1:5432: connection refused"


def test_query_errors() -> None:
    denied = psycopg.errors.InsufficientPrivilege("ERROR:  permission denied for table t")
    assert classify_query_error(denied) == (
        Reason.PERMISSION_DENIED,
        "the test query was refused: permission denied for table t",
    )
    cancelled = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
    assert classify_query_error(cancelled)[0] is Reason.TIMEOUT
    other = psycopg.errors.DivisionByZero("ERROR:  division by zero")
    assert classify_query_error(other) == (
        Reason.PROVIDER_ERROR,
        "the test query failed: division by zero",
    )
