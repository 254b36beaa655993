"""The PostgreSQL test, end to end: ``probe.run_test`` (what the operator runs) against real servers."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.support.encoding import b64
from tests.support.pgserver import (
    CertificateAuthority,
    PostgresServer,
    SilentServer,
    short_version,
    unused_port,
)
from tests.support.probe_results import POSTGRES_CHECKS, assert_not_leaked
from warehouse_operator.models import CheckResult, ProbeResult, Reason
from warehouse_operator.probe import run_test

pytestmark = pytest.mark.integration


def connection_spec(
    postgres: dict[str, Any],
    *,
    provider: str = "postgres",
    test_timeout: str = "10s",
    keys: dict[str, str] | None = None,
) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": "pg-credentials"}
    if keys is not None:
        ref["keys"] = keys
    return {
        "provider": provider,
        "credentialsSecretRef": ref,
        "postgres": postgres,
        "testTimeout": test_timeout,
    }


def check_names(result: ProbeResult) -> list[str]:
    return [c.name for c in result.checks]


def assert_connected(result: ProbeResult, server: PostgresServer) -> None:
    assert result.reason is Reason.CONNECTED, result.message
    assert result.ok
    assert check_names(result) == POSTGRES_CHECKS
    assert all(c.result is CheckResult.PASSED for c in result.checks)
    assert result.server_version == f"PostgreSQL {short_version(server.server_version)}"
    assert re.fullmatch(r"PostgreSQL \d+\.\d+", result.server_version)
    assert result.latency_ms is not None
    assert 0 <= result.latency_ms < 5000
    assert_not_leaked(result, server.password)


def assert_failed_at(result: ProbeResult, reason: Reason, stage: str, *secrets: str) -> None:
    """Failed with ``reason``; every stage before ``stage`` passed and ``stage`` is the last, Failed."""
    assert result.reason is reason, result.message
    assert not result.ok
    assert result.latency_ms is None
    assert result.server_version is None
    assert result.message
    names = check_names(result)
    assert names == POSTGRES_CHECKS[: POSTGRES_CHECKS.index(stage) + 1]
    assert all(c.result is CheckResult.PASSED for c in result.checks[:-1])
    assert result.checks[-1].result is CheckResult.FAILED
    assert result.checks[-1].message
    if reason is not Reason.TIMEOUT:  # a timeout's check says only that no answer came
        assert result.checks[-1].message == result.message
    assert_not_leaked(result, *secrets)


# --- Connected --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "ssl_mode", "with_tls"),
    [
        ("pg_plain", "disable", False),
        ("pg_plain", "allow", False),
        ("pg_plain", "prefer", False),
        ("pg_tls", "disable", False),
        ("pg_tls", "prefer", True),
        ("pg_tls", "require", True),
        ("pg_tls_required", "allow", True),
        ("pg_tls_required", "prefer", True),
        ("pg_tls_required", "require", True),
    ],
)
async def test_connected(
    request: pytest.FixtureRequest, variant: str, ssl_mode: str, with_tls: bool
) -> None:
    server: PostgresServer = request.getfixturevalue(variant)
    result = await run_test(
        connection_spec(server.postgres_spec(sslMode=ssl_mode)), server.secret_data()
    )
    assert_connected(result, server)
    connect = result.checks[POSTGRES_CHECKS.index("connect")]
    assert connect.message.endswith("with TLS" if with_tls else "without TLS")
    assert result.checks[-1].message == "SELECT 1 returned 1"


async def test_default_ssl_mode_uses_tls_when_offered(pg_tls: PostgresServer) -> None:
    result = await run_test(connection_spec(pg_tls.postgres_spec()), pg_tls.secret_data())
    assert_connected(result, pg_tls)
    assert result.checks[POSTGRES_CHECKS.index("connect")].message.endswith("with TLS")


@pytest.mark.parametrize("ssl_mode", ["verify-ca", "verify-full"])
async def test_verified_tls_with_ca_from_secret(pg_tls: PostgresServer, ssl_mode: str) -> None:
    result = await run_test(
        connection_spec(pg_tls.postgres_spec(host="localhost", sslMode=ssl_mode)),
        pg_tls.secret_data(ca=True),
    )
    assert_connected(result, pg_tls)


async def test_verify_full_against_tls_required_server(pg_tls_required: PostgresServer) -> None:
    server = pg_tls_required
    result = await run_test(
        connection_spec(server.postgres_spec(host="localhost", sslMode="verify-full")),
        server.secret_data(ca=True),
    )
    assert_connected(result, server)


async def test_postgresql_is_an_alias(pg_plain: PostgresServer) -> None:
    result = await run_test(
        connection_spec(pg_plain.postgres_spec(), provider="postgresql"), pg_plain.secret_data()
    )
    assert_connected(result, pg_plain)


async def test_user_key_is_an_alias_of_username(pg_plain: PostgresServer) -> None:
    data = {"user": b64(pg_plain.user), "password": b64(pg_plain.password)}
    result = await run_test(connection_spec(pg_plain.postgres_spec()), data)
    assert_connected(result, pg_plain)


async def test_keys_mapping_reads_other_data_keys(pg_tls: PostgresServer) -> None:
    # e.g. a database operator's app Secret, used unchanged
    data = {
        "PGUSER": b64(pg_tls.user),
        "PGPASSWORD": b64(pg_tls.password),
        "root-ca.pem": b64(pg_tls.ca_pem),
        "password": b64("not-the-password"),  # a same-named key that the mapping overrides
    }
    keys = {"username": "PGUSER", "password": "PGPASSWORD", "ca.crt": "root-ca.pem"}
    result = await run_test(
        connection_spec(pg_tls.postgres_spec(host="localhost", sslMode="verify-full"), keys=keys),
        data,
    )
    assert_connected(result, pg_tls)


# --- the server answered: authentication, database, privilege -----------------------------------


async def test_wrong_password(pg_plain: PostgresServer) -> None:
    planted = "wrong-" + pg_plain.password
    result = await run_test(
        connection_spec(pg_plain.postgres_spec()), pg_plain.secret_data(password=planted)
    )
    assert_failed_at(
        result, Reason.AUTHENTICATION_FAILED, "authenticate", planted, pg_plain.password
    )
    assert "password authentication failed" in result.message
    assert result.checks[POSTGRES_CHECKS.index("connect")].result is CheckResult.PASSED


async def test_unknown_user(pg_plain: PostgresServer) -> None:
    result = await run_test(
        connection_spec(pg_plain.postgres_spec()),
        pg_plain.secret_data(username="nobody-here"),
    )
    assert_failed_at(result, Reason.AUTHENTICATION_FAILED, "authenticate", pg_plain.password)


async def test_missing_database(pg_plain: PostgresServer) -> None:
    result = await run_test(
        connection_spec(pg_plain.postgres_spec(database="no_such_db")), pg_plain.secret_data()
    )
    assert_failed_at(result, Reason.NOT_FOUND, "authenticate", pg_plain.password)
    assert "'no_such_db' does not exist" in result.message


async def test_no_connect_privilege(pg_plain: PostgresServer) -> None:
    result = await run_test(
        connection_spec(pg_plain.postgres_spec()),
        pg_plain.secret_data(
            username=pg_plain.no_connect_user, password=pg_plain.no_connect_password
        ),
    )
    assert_failed_at(result, Reason.PERMISSION_DENIED, "authenticate", pg_plain.no_connect_password)
    assert "CONNECT privilege" in result.message


async def test_secret_value_echoed_by_the_server_is_redacted(pg_plain: PostgresServer) -> None:
    # the server repeats the database name; here it is (by mistake) the password
    result = await run_test(
        connection_spec(pg_plain.postgres_spec(database=pg_plain.password)),
        pg_plain.secret_data(),
    )
    assert_failed_at(result, Reason.NOT_FOUND, "authenticate", pg_plain.password)
    assert "[REDACTED]" in result.message


# --- no server answer ----------------------------------------------------------------------------


async def test_refused_port(pg_plain: PostgresServer) -> None:
    result = await run_test(
        connection_spec(pg_plain.postgres_spec(port=unused_port())), pg_plain.secret_data()
    )
    assert_failed_at(result, Reason.UNREACHABLE, "connect", pg_plain.password)
    assert "connection refused" in result.message


@pytest.mark.parametrize(("test_timeout", "seconds"), [("1s", 1.0), ("2500ms", 2.5)])
async def test_silent_server_times_out_within_test_timeout(
    pg_plain: PostgresServer, silent_server: SilentServer, test_timeout: str, seconds: float
) -> None:
    accepted_before = silent_server.connections_accepted
    started = time.monotonic()
    result = await run_test(
        connection_spec(pg_plain.postgres_spec(port=silent_server.port), test_timeout=test_timeout),
        pg_plain.secret_data(),
    )
    elapsed = time.monotonic() - started
    assert_failed_at(result, Reason.TIMEOUT, "connect", pg_plain.password)
    assert test_timeout in result.message
    assert seconds - 0.1 <= elapsed <= seconds + 0.75
    assert silent_server.connections_accepted > accepted_before  # it did reach the socket


# --- TLS -----------------------------------------------------------------------------------------


async def test_tls_required_by_client_but_server_has_none(pg_plain: PostgresServer) -> None:
    result = await run_test(
        connection_spec(pg_plain.postgres_spec(sslMode="require")), pg_plain.secret_data()
    )
    assert_failed_at(result, Reason.TLS_ERROR, "connect", pg_plain.password)
    assert "does not support TLS" in result.message


async def test_tls_disabled_by_client_but_server_requires_it(
    pg_tls_required: PostgresServer,
) -> None:
    server = pg_tls_required
    result = await run_test(
        connection_spec(server.postgres_spec(sslMode="disable")), server.secret_data()
    )
    assert_failed_at(result, Reason.TLS_ERROR, "connect", server.password)
    assert "requires TLS" in result.message


async def test_verify_full_with_a_ca_that_did_not_sign(pg_tls: PostgresServer) -> None:
    data = pg_tls.secret_data()
    data["ca.crt"] = b64(CertificateAuthority("some other CA").cert_pem)
    result = await run_test(
        connection_spec(pg_tls.postgres_spec(host="localhost", sslMode="verify-full")), data
    )
    assert_failed_at(result, Reason.TLS_ERROR, "connect", pg_tls.password)
    assert "Secret key 'ca.crt'" in result.message


async def test_verify_full_without_ca_uses_system_trust(pg_tls: PostgresServer) -> None:
    result = await run_test(
        connection_spec(pg_tls.postgres_spec(host="localhost", sslMode="verify-full")),
        pg_tls.secret_data(),
    )
    assert_failed_at(result, Reason.TLS_ERROR, "connect", pg_tls.password)
    assert "system's trusted CAs" in result.message


async def test_verify_full_with_wrong_host_name(pg_tls: PostgresServer) -> None:
    # the certificate names "localhost" only; 127.0.0.1 reaches the same server
    assert pg_tls.cert_names == ("localhost",)
    result = await run_test(
        connection_spec(pg_tls.postgres_spec(host="127.0.0.1", sslMode="verify-full")),
        pg_tls.secret_data(ca=True),
    )
    assert_failed_at(result, Reason.TLS_ERROR, "connect", pg_tls.password)
    assert "does not match host name" in result.message


async def test_verify_ca_ignores_the_host_name(pg_tls: PostgresServer) -> None:
    result = await run_test(
        connection_spec(pg_tls.postgres_spec(host="127.0.0.1", sslMode="verify-ca")),
        pg_tls.secret_data(ca=True),
    )
    assert_connected(result, pg_tls)


# --- credentials that cannot be used: no connection is attempted --------------------------------


async def test_missing_password(pg_plain: PostgresServer, silent_server: SilentServer) -> None:
    planted = pg_plain.password
    # the value sits under a misspelt key: it must not be used, nor shown
    data = {"username": b64(pg_plain.user), "pasword": b64(planted)}
    accepted_before = silent_server.connections_accepted
    result = await run_test(connection_spec(pg_plain.postgres_spec(port=silent_server.port)), data)
    assert_failed_at(result, Reason.SECRET_KEY_MISSING, "credentials", planted)
    assert "'password'" in result.message
    assert silent_server.connections_accepted == accepted_before


async def test_empty_password(pg_plain: PostgresServer) -> None:
    data = {"username": b64(pg_plain.user), "password": ""}
    result = await run_test(connection_spec(pg_plain.postgres_spec()), data)
    assert_failed_at(result, Reason.SECRET_KEY_MISSING, "credentials")


async def test_missing_mapped_key_names_the_data_key(pg_plain: PostgresServer) -> None:
    data = {"PGUSER": b64(pg_plain.user), "password": b64(pg_plain.password)}
    keys = {"username": "PGUSER", "password": "PGPASSWORD"}
    result = await run_test(connection_spec(pg_plain.postgres_spec(), keys=keys), data)
    assert_failed_at(result, Reason.SECRET_KEY_MISSING, "credentials", pg_plain.password)
    assert "'PGPASSWORD'" in result.message


async def test_malformed_ca(pg_tls: PostgresServer) -> None:
    data = pg_tls.secret_data()
    data["ca.crt"] = b64(
        f"-----BEGIN CERTIFICATE-----\n{pg_tls.password}\n-----END CERTIFICATE-----\n"
    )
    result = await run_test(
        connection_spec(pg_tls.postgres_spec(host="localhost", sslMode="verify-full")), data
    )
    assert_failed_at(result, Reason.INVALID_CREDENTIALS, "credentials", pg_tls.password)
    assert "ca.crt" in result.message


async def test_secret_not_found(pg_plain: PostgresServer) -> None:
    result = await run_test(connection_spec(pg_plain.postgres_spec()), None)
    assert result.reason is Reason.SECRET_NOT_FOUND
    assert check_names(result) == ["spec", "credentials"]
    assert result.checks[-1].result is CheckResult.FAILED
