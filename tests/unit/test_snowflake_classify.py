# The connector's vendored requests/urllib3 exceptions are built here without the pools and
# connections they normally carry: only their types and chaining matter to the classifier.
# mypy: disable-error-code="no-untyped-call, arg-type"
"""``classify_error`` on the exceptions snowflake-connector-python raises.

The connector's own exception classes are used, built the way it builds them: login refusals
are ``DatabaseError`` with the service's code as ``errno`` and a message prefixed with
"Failed to connect to DB: host:port."; network failures are ``OperationalError`` 250001 with
the socket-level error somewhere in the cause chain (the shapes were read off the connector's
behaviour against refused and silent ports).
"""

from __future__ import annotations

import itertools
import socket
import ssl

import pytest
from snowflake.connector.errors import DatabaseError, OperationalError, ProgrammingError
from snowflake.connector.vendored.requests import exceptions as requests_errors
from snowflake.connector.vendored.urllib3 import exceptions as urllib3_errors

from warehouse_operator.models import Reason
from warehouse_operator.providers.network import exception_chain
from warehouse_operator.providers.snowflake.classify import LoginContext, classify_error
from warehouse_operator.providers.snowflake.target import SnowflakeTarget

TARGET = SnowflakeTarget("myorg-acct.snowflakecomputing.com", 443, "https")
CTX = LoginContext(
    user="ETL",
    target=TARGET,
    role="LOADER",
    database="RAW",
    schema="PUBLIC",
    warehouse="LOAD_WH",
    fingerprint="SHA256:abc=",
)


def login_error(code: int, text: str) -> DatabaseError:
    return DatabaseError(
        msg=f"Failed to connect to DB: {TARGET}. {text}", errno=code, sqlstate="08004"
    )


def chained(*errors: BaseException) -> BaseException:
    """errors[0] raised from errors[1] raised from errors[2] ..."""
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


def could_not_connect(*causes: BaseException) -> BaseException:
    return chained(
        OperationalError(
            msg="Could not connect to Snowflake backend after 2 attempt(s).Aborting", errno=250001
        ),
        OperationalError(
            msg="ConnectionTimeout occurred during login. Will be handled by authenticator",
            errno=251011,
        ),
        *causes,
    )


@pytest.mark.parametrize(
    ("error", "reason", "stage", "says"),
    [
        (
            login_error(390100, "Incorrect username or password was specified."),
            Reason.AUTHENTICATION_FAILED,
            "authenticate",
            "incorrect username or password (390100)",
        ),
        (
            login_error(390144, "JWT token is invalid."),
            Reason.AUTHENTICATION_FAILED,
            "authenticate",
            "JWT token is invalid (390144); the user's RSA_PUBLIC_KEY_FP (or RSA_PUBLIC_KEY_2_FP) must be SHA256:abc=",
        ),
        (
            login_error(
                390189,
                "Role 'LOADER' specified in the connect string is not granted to this user.",
            ),
            Reason.PERMISSION_DENIED,
            "role",
            "role 'LOADER' is not granted to user 'ETL' (390189)",
        ),
        (
            login_error(390201, "The requested database does not exist or not authorized."),
            Reason.NOT_FOUND,
            "database",
            "database 'RAW' does not exist or not authorized",
        ),
        (
            login_error(390201, "The requested schema does not exist or not authorized."),
            Reason.NOT_FOUND,
            "database",
            "schema RAW.PUBLIC does not exist or not authorized",
        ),
        (
            login_error(390201, "The requested warehouse does not exist or not authorized."),
            Reason.NOT_FOUND,
            "warehouse",
            "warehouse 'LOAD_WH' does not exist or not authorized",
        ),
        (
            login_error(390422, "IP 203.0.113.9 is not allowed to access Snowflake."),
            Reason.PERMISSION_DENIED,
            "authenticate",
            "network policy (390422): IP 203.0.113.9 is not allowed",
        ),
        (
            login_error(390101, "User temporarily locked."),
            Reason.PROVIDER_ERROR,
            "authenticate",
            "Snowflake error 390101: User temporarily locked.",
        ),
        (
            ProgrammingError(msg="Invalid account name", errno=251001),
            Reason.PROVIDER_ERROR,
            "authenticate",
            "Snowflake error 251001: Invalid account name",
        ),
    ],
)
def test_login_refusals(error: BaseException, reason: Reason, stage: str, says: str) -> None:
    classified = classify_error(error, CTX, during="authenticate")
    assert (classified.reason, classified.stage) == (reason, stage)
    assert says in classified.message
    assert "Failed to connect to DB" not in classified.message


def test_refused_connection_in_the_cause_chain_is_unreachable() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    new_conn = urllib3_errors.NewConnectionError(None, "Failed to establish a new connection")
    error = could_not_connect(
        requests_errors.ConnectionError("Max retries exceeded"),
        urllib3_errors.MaxRetryError(None, "/session/v1/login-request", new_conn),
        new_conn,
        refused,
    )
    classified = classify_error(error, CTX, during="authenticate")
    assert classified.reason is Reason.UNREACHABLE
    assert classified.message == f"cannot reach {TARGET}: connection refused"


def test_silent_server_read_timeout_is_timeout() -> None:
    error = could_not_connect(
        requests_errors.ReadTimeout("Read timed out. (read timeout=2)"),
        urllib3_errors.ReadTimeoutError(None, "/session/v1/login-request", "Read timed out."),
        TimeoutError("timed out"),
    )
    classified = classify_error(error, CTX, during="authenticate")
    assert classified.reason is Reason.TIMEOUT
    assert str(TARGET) in classified.message


def test_dns_failure_is_unreachable() -> None:
    error = could_not_connect(socket.gaierror(-2, "Name or service not known"))
    assert classify_error(error, CTX, during="authenticate").reason is Reason.UNREACHABLE


def test_certificate_failure_is_tls_error() -> None:
    cert = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )
    error = could_not_connect(requests_errors.SSLError("bad handshake"), cert)
    classified = classify_error(error, CTX, during="authenticate")
    assert classified.reason is Reason.TLS_ERROR
    assert classified.message.startswith(f"TLS with {TARGET} failed")


def test_causes_kept_in_args_are_followed() -> None:
    inner = ConnectionRefusedError(111, "Connection refused")
    outer = RuntimeError(inner)  # the connector's RetryRequest keeps its cause in args[0]
    assert inner in list(exception_chain(outer))
    assert classify_error(outer, CTX, during="query").reason is Reason.UNREACHABLE


def test_chain_walk_survives_cycles() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__context__ = b, a
    assert list(exception_chain(a)) == [a, b]


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        (
            2003,
            "SQL compilation error: Object 'X' does not exist or not authorized.",
            Reason.NOT_FOUND,
        ),
        (3001, "SQL access control error: Insufficient privileges", Reason.PERMISSION_DENIED),
        (100038, "Numeric value 'a' is not recognized", Reason.PROVIDER_ERROR),
    ],
)
def test_query_errors_keep_the_running_stage(code: int, text: str, reason: Reason) -> None:
    error = ProgrammingError(msg=text, errno=code, sqlstate="42S02")
    classified = classify_error(error, CTX, during="warehouse")
    assert (classified.reason, classified.stage) == (reason, "warehouse")
    assert text in classified.message
    assert f"{code:06d}" in classified.message or f"{code}" in classified.message


def test_unknown_exceptions_are_provider_errors_named_by_type() -> None:
    classified = classify_error(KeyError("rowtype"), CTX, during="query")
    assert classified.reason is Reason.PROVIDER_ERROR
    assert classified.message.startswith("KeyError")


@pytest.mark.parametrize(
    ("openssl_says", "detail"),
    [
        ("certificate verify failed: certificate has expired", "certificate has expired"),
        ("certificate verify failed: self-signed certificate", "is self-signed"),
        ("certificate verify failed: Hostname mismatch", "does not name this host"),
        ("certificate verify failed: unable to get local issuer certificate", "trusted CA"),
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number", "did not answer TLS"),
        ("sslv3 alert handshake failure", "sslv3 alert handshake failure"),
    ],
)
def test_tls_failures_say_what_openssl_found(openssl_says: str, detail: str) -> None:
    error = could_not_connect(
        requests_errors.SSLError("bad handshake"), ssl.SSLError(1, openssl_says)
    )
    classified = classify_error(error, CTX, during="authenticate")
    assert classified.reason is Reason.TLS_ERROR
    assert detail in classified.message
