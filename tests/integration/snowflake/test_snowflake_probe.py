"""The Snowflake test, end to end: ``probe.run_test`` (what the operator runs), the real
``snowflake-connector-python``, fakesnow behind the strict front."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.encoding import b64
from tests.support.probe_results import SNOWFLAKE_CHECKS, assert_not_leaked
from tests.support.snowflake_emulator import (
    refused_port,
    self_signed_tls_listener,
    silent_listener,
)
from tests.support.snowflake_front import StrictSnowflakeFront
from tests.support.snowflake_testbed import (
    ACCOUNT,
    KEY_USER,
    METADATA_ONLY,
    PASSPHRASE,
    PASSWORD,
    PASSWORD_USER,
    KeyMaterial,
    openssl_fingerprint,
)
from tests.support.waiting import poll_until_async
from warehouse_operator.models import CheckResult, ProbeResult, Reason
from warehouse_operator.probe import run_test
from warehouse_operator.providers import snowflake as snowflake_provider
from warehouse_operator.providers.blocking import BlockingCallRunner

pytestmark = pytest.mark.integration


def secret(**values: str) -> dict[str, str]:
    return {k: b64(v) for k, v in values.items()}


def connection_spec(
    endpoint: str, *, test_timeout: str = "10s", **snowflake: Any
) -> dict[str, Any]:
    block = {"account": ACCOUNT, "endpoint": endpoint, **snowflake}
    return {
        "provider": "snowflake",
        "credentialsSecretRef": {"name": "snowflake-credentials"},
        "snowflake": {k: v for k, v in block.items() if v is not None},
        "testTimeout": test_timeout,
    }


def analyst_spec(front: StrictSnowflakeFront, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "warehouse": "reporting_wh",
        "database": "analytics",
        "role": "ANALYST",
        **overrides,
    }
    return connection_spec(front.url, **fields)


def password_secret(password: str = PASSWORD) -> dict[str, str]:
    return secret(username=PASSWORD_USER.lower(), password=password)


def key_spec(front: StrictSnowflakeFront, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "authMethod": "keyPair",
        "warehouse": "LOAD_WH",
        "database": "RAW",
        "role": "LOADER",
        **overrides,
    }
    return connection_spec(front.url, **fields)


def check(result: ProbeResult, name: str) -> tuple[CheckResult, str]:
    for c in result.checks:
        if c.name == name:
            return c.result, c.message
    raise AssertionError(f"no check {name!r} in {[c.name for c in result.checks]}")


# --- Connected ---------------------------------------------------------------------------------


async def test_password_login_connected_without_resuming_a_suspended_warehouse(
    snowflake_front: StrictSnowflakeFront,
) -> None:
    mark = len(snowflake_front.statements)
    result = await run_test(analyst_spec(snowflake_front), password_secret())

    assert result.reason is Reason.CONNECTED, result.message
    assert [c.name for c in result.checks] == SNOWFLAKE_CHECKS
    assert all(c.result is CheckResult.PASSED for c in result.checks)
    assert result.server_version is not None
    assert re.fullmatch(r"Snowflake \d+\.\d+\.\d+", result.server_version)
    assert result.latency_ms is not None
    assert result.latency_ms >= 0
    assert result.public_key_fingerprint is None
    # a suspended warehouse is healthy, and the test said what state it found
    assert result.warehouse_state == "SUSPENDED"
    _state, message = check(result, "warehouse")
    assert "SUSPENDED" in message
    assert "not resumed" in message
    # nothing but metadata reached the server, and the warehouse is still suspended
    sent = snowflake_front.statements_since(mark)
    assert sent, "the test sent no statement"
    assert all(METADATA_ONLY.match(s) for s in sent), sent
    assert snowflake_front.account.warehouses["REPORTING_WH"].state == "SUSPENDED"
    login = snowflake_front.logins[-1]
    assert (login.code, login.role, login.database, login.warehouse) == (
        "OK",
        "ANALYST",
        "ANALYTICS",
        "REPORTING_WH",
    )
    assert_not_leaked(result, PASSWORD)


async def test_started_warehouse_state_is_reported(
    snowflake_front: StrictSnowflakeFront, registered_key: KeyMaterial
) -> None:
    result = await run_test(
        key_spec(snowflake_front), secret(user=KEY_USER, private_key=registered_key.pkcs8)
    )
    assert result.reason is Reason.CONNECTED, result.message
    assert result.warehouse_state == "STARTED"
    assert "'LOAD_WH' is STARTED" in check(result, "warehouse")[1]


async def test_without_role_database_or_warehouse_the_defaults_are_used(
    snowflake_front: StrictSnowflakeFront,
) -> None:
    result = await run_test(connection_spec(snowflake_front.url), password_secret())
    assert result.reason is Reason.CONNECTED, result.message
    assert check(result, "role") == (
        CheckResult.PASSED,
        "no role in spec; the user's default role 'ANALYST' is in use",
    )
    assert check(result, "database")[0] is CheckResult.SKIPPED
    assert check(result, "warehouse")[0] is CheckResult.SKIPPED
    assert result.warehouse_state is None


@pytest.mark.parametrize("encoding", ["pkcs8", "pkcs1", "pkcs8_encrypted", "pkcs1_encrypted"])
async def test_key_pair_login_connected(
    snowflake_front: StrictSnowflakeFront,
    registered_key: KeyMaterial,
    encoding: str,
    tmp_path: Path,
) -> None:
    pem = getattr(registered_key, encoding)
    values = {"username": KEY_USER.lower(), "private_key": pem}
    if encoding.endswith("_encrypted"):
        values["private_key_passphrase"] = PASSPHRASE
    mark = len(snowflake_front.logins)

    result = await run_test(key_spec(snowflake_front), secret(**values))

    assert result.reason is Reason.CONNECTED, result.message
    assert [c.name for c in result.checks] == SNOWFLAKE_CHECKS
    expected = openssl_fingerprint(registered_key.public_pem, tmp_path)
    assert result.public_key_fingerprint == expected
    assert expected in check(result, "authenticate")[1]
    assert [(r.authenticator, r.code) for r in snowflake_front.logins_since(mark)] == [
        ("SNOWFLAKE_JWT", "OK")
    ]
    assert_not_leaked(result, pem, PASSPHRASE)


# --- refused by the server ----------------------------------------------------------------------


async def test_wrong_password_is_authentication_failed(
    snowflake_front: StrictSnowflakeFront,
) -> None:
    result = await run_test(analyst_spec(snowflake_front), password_secret("not-the-password-1"))
    assert result.reason is Reason.AUTHENTICATION_FAILED
    assert "390100" in result.message
    assert "incorrect username or password" in result.message
    assert check(result, "connect")[0] is CheckResult.PASSED
    assert check(result, "authenticate")[0] is CheckResult.FAILED
    assert snowflake_front.logins[-1].code == "390100"
    assert_not_leaked(result, "not-the-password-1")


async def test_unknown_user_is_authentication_failed(snowflake_front: StrictSnowflakeFront) -> None:
    result = await run_test(
        analyst_spec(snowflake_front), secret(username="MALLORY", password=PASSWORD)
    )
    assert result.reason is Reason.AUTHENTICATION_FAILED
    assert_not_leaked(result, PASSWORD)


async def test_unregistered_key_is_authentication_failed_with_its_fingerprint(
    snowflake_front: StrictSnowflakeFront,
    stranger_key: KeyMaterial,
    tmp_path: Path,
) -> None:
    result = await run_test(
        key_spec(snowflake_front), secret(username=KEY_USER, private_key=stranger_key.pkcs8)
    )
    assert result.reason is Reason.AUTHENTICATION_FAILED
    assert "390144" in result.message
    assert "JWT token is invalid" in result.message
    # shown on failure too: that is when it is compared with DESCRIBE USER's RSA_PUBLIC_KEY_FP
    expected = openssl_fingerprint(stranger_key.public_pem, tmp_path)
    assert result.public_key_fingerprint == expected
    assert expected in result.message
    assert snowflake_front.logins[-1].code == "390144"
    assert_not_leaked(result, stranger_key.pkcs8)


async def test_key_of_another_user_is_authentication_failed(
    snowflake_front: StrictSnowflakeFront, registered_key: KeyMaterial
) -> None:
    result = await run_test(
        key_spec(snowflake_front, role=None, warehouse=None, database=None),
        secret(username=PASSWORD_USER, private_key=registered_key.pkcs8),
    )
    assert result.reason is Reason.AUTHENTICATION_FAILED
    assert "390144" in result.message


async def test_role_not_granted_is_permission_denied(snowflake_front: StrictSnowflakeFront) -> None:
    result = await run_test(analyst_spec(snowflake_front, role="SYSADMIN"), password_secret())
    assert result.reason is Reason.PERMISSION_DENIED
    assert "'SYSADMIN' is not granted" in result.message
    assert "390189" in result.message
    assert check(result, "authenticate")[0] is CheckResult.PASSED
    assert check(result, "role")[0] is CheckResult.FAILED


@pytest.mark.parametrize(
    ("overrides", "failed_stage", "named"),
    [
        ({"database": "NO_SUCH_DB"}, "database", "database 'NO_SUCH_DB'"),
        ({"database": "FINANCE"}, "database", "database 'FINANCE'"),  # exists, not granted
        ({"schema": "NO_SUCH_SCHEMA"}, "database", "schema analytics.NO_SUCH_SCHEMA"),
        ({"warehouse": "NO_SUCH_WH"}, "warehouse", "warehouse 'NO_SUCH_WH'"),
        ({"warehouse": "ADMIN_WH"}, "warehouse", "warehouse 'ADMIN_WH'"),  # exists, not granted
    ],
)
async def test_missing_or_unauthorized_object_is_not_found(
    snowflake_front: StrictSnowflakeFront,
    overrides: dict[str, str],
    failed_stage: str,
    named: str,
) -> None:
    result = await run_test(analyst_spec(snowflake_front, **overrides), password_secret())
    assert result.reason is Reason.NOT_FOUND
    assert named in result.message
    assert "does not exist or not authorized" in result.message
    assert "390201" in result.message
    assert check(result, failed_stage)[0] is CheckResult.FAILED
    assert snowflake_front.logins[-1].code == "390201"


# --- credentials that cannot be used: no network at all -----------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {
                "private_key": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
            },
            "is not a valid PEM private key",
        ),
        ({"private_key": "just some text, not a key"}, "is not a PEM private key"),
        (
            {"private_key": "pkcs8_encrypted", "private_key_passphrase": "wrong-passphrase-42"},
            "could not be decrypted",
        ),
        (
            {"private_key": "pkcs1_encrypted", "private_key_passphrase": "wrong-passphrase-42"},
            "could not be decrypted",
        ),
        ({"private_key": "pkcs8_encrypted"}, "is encrypted, but the Secret has no"),
    ],
    ids=["bad-pem-body", "not-pem", "wrong-passphrase", "wrong-passphrase-pkcs1", "no-passphrase"],
)
async def test_unusable_private_key_is_invalid_credentials(
    snowflake_front: StrictSnowflakeFront,
    registered_key: KeyMaterial,
    values: dict[str, str],
    expected: str,
) -> None:
    values = dict(values)
    if hasattr(registered_key, values["private_key"]):
        values["private_key"] = getattr(registered_key, values["private_key"])
    mark = len(snowflake_front.logins)
    result = await run_test(key_spec(snowflake_front), secret(username=KEY_USER, **values))
    assert result.reason is Reason.INVALID_CREDENTIALS
    assert expected in result.message
    assert check(result, "credentials")[0] is CheckResult.FAILED
    assert [c.name for c in result.checks] == ["spec", "credentials"]
    assert snowflake_front.logins_since(mark) == []
    assert_not_leaked(result, *values.values())


async def test_missing_private_key_is_secret_key_missing(
    snowflake_front: StrictSnowflakeFront,
) -> None:
    result = await run_test(key_spec(snowflake_front), secret(username=KEY_USER))
    assert result.reason is Reason.SECRET_KEY_MISSING
    assert "'private_key'" in result.message


# --- the network -----------------------------------------------------------------------------


async def test_refused_endpoint_is_unreachable_at_once(
    snowflake_front: StrictSnowflakeFront,
) -> None:
    port = refused_port()
    started = time.monotonic()
    result = await run_test(
        connection_spec(f"http://127.0.0.1:{port}", warehouse="X"), password_secret()
    )
    elapsed = time.monotonic() - started
    assert result.reason is Reason.UNREACHABLE
    assert "connection refused" in result.message
    assert str(port) in result.message
    assert check(result, "connect")[0] is CheckResult.FAILED
    assert elapsed < 2.0


async def test_untrusted_certificate_is_tls_error(tmp_path: Path) -> None:
    with self_signed_tls_listener(tmp_path) as port:
        result = await run_test(
            connection_spec(f"https://127.0.0.1:{port}", test_timeout="5s"), password_secret()
        )
    assert result.reason is Reason.TLS_ERROR
    assert result.message == (
        f"TLS with 127.0.0.1:{port} failed: the server's certificate did not verify"
    )
    assert check(result, "connect")[0] is CheckResult.PASSED
    assert check(result, "authenticate")[0] is CheckResult.FAILED
    assert_not_leaked(result, PASSWORD)


async def test_https_endpoint_that_speaks_plain_http_is_tls_error(
    snowflake_front: StrictSnowflakeFront,
) -> None:
    endpoint = snowflake_front.url.replace("http://", "https://")
    result = await run_test(connection_spec(endpoint, test_timeout="5s"), password_secret())
    assert result.reason is Reason.TLS_ERROR
    assert "did not answer TLS" in result.message


async def test_silent_endpoint_times_out_without_delaying_a_healthy_test(
    snowflake_front: StrictSnowflakeFront,
) -> None:
    with silent_listener() as port:
        silent = connection_spec(f"http://127.0.0.1:{port}", test_timeout="2s")
        finished: dict[str, float] = {}

        async def timed(name: str, spec: dict[str, Any]) -> ProbeResult:
            result = await run_test(spec, password_secret())
            finished[name] = time.monotonic()
            return result

        started = time.monotonic()
        hung, healthy = await asyncio.gather(
            timed("silent", silent), timed("healthy", analyst_spec(snowflake_front))
        )

    assert hung.reason is Reason.TIMEOUT
    assert "2s" in hung.message
    assert check(hung, "connect")[0] is CheckResult.PASSED
    login_result, login_message = check(hung, "authenticate")
    assert login_result is CheckResult.FAILED
    assert "no answer" in login_message
    assert finished["silent"] - started < 2.0 + 0.5
    assert healthy.reason is Reason.CONNECTED, healthy.message
    assert finished["healthy"] - started < 1.5
    assert_not_leaked(hung, PASSWORD)


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> BlockingCallRunner[Any]:
    """The Snowflake provider's blocking calls, on one worker thread for this test."""
    runner = BlockingCallRunner[Any](1, "snowflake-test", "Snowflake")
    monkeypatch.setattr(snowflake_provider.PROVIDER, "runner", runner)
    return runner


async def test_threads_held_by_hung_logins_fail_new_tests_fast_then_recover(
    snowflake_front: StrictSnowflakeFront, one_thread: BlockingCallRunner[Any]
) -> None:
    runner = one_thread
    with silent_listener() as port:
        # Given up on from outside after 0.3 s (as run_test's own timeout does it: by
        # cancelling the probe), while the driver's login waits up to its 2 s timeouts.
        silent = connection_spec(f"http://127.0.0.1:{port}", test_timeout="2s")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run_test(silent, password_secret()), timeout=0.3)
        assert runner.abandoned == 1  # the login is still waiting for the silent server

        started = time.monotonic()
        refused = await run_test(analyst_spec(snowflake_front), password_secret())
        assert time.monotonic() - started < 0.5
        assert refused.reason is Reason.PROVIDER_ERROR  # its server was never contacted
        assert "all 1 Snowflake worker threads are still held" in refused.message
        assert check(refused, "authenticate")[0] is CheckResult.FAILED

        # the driver gives up within its own timeouts, and the thread is free again
        await poll_until_async(lambda: not runner.busy, 5)
        assert (runner.busy, runner.abandoned) == (0, 0)
    recovered = await run_test(analyst_spec(snowflake_front), password_secret())
    assert recovered.reason is Reason.CONNECTED, recovered.message


async def test_a_hung_key_pair_login_frees_its_thread_within_the_budget(
    registered_key: KeyMaterial, one_thread: BlockingCallRunner[Any]
) -> None:
    """The connector's key-pair login waits 10 s per request unless held to the budget."""
    runner = one_thread
    with silent_listener() as port:
        started = time.monotonic()
        result = await run_test(
            connection_spec(f"http://127.0.0.1:{port}", test_timeout="1s", authMethod="keyPair"),
            secret(username=KEY_USER, private_key=registered_key.pkcs8),
        )
        assert result.reason is Reason.TIMEOUT
        await poll_until_async(lambda: not runner.busy, 12 - (time.monotonic() - started))
        freed_after = time.monotonic() - started
    assert runner.busy == 0
    assert freed_after < 3.0


# --- secrets never shown -------------------------------------------------------------------------


async def test_planted_secrets_never_reach_results_or_logs(
    snowflake_front: StrictSnowflakeFront,
    registered_key: KeyMaterial,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with silent_listener() as silent_port:
        cases = [
            (analyst_spec(snowflake_front), password_secret()),
            (analyst_spec(snowflake_front, role="SYSADMIN"), password_secret()),
            (analyst_spec(snowflake_front), secret(username="ALICE", password=PASSWORD + "x")),
            (
                key_spec(snowflake_front),
                secret(
                    username=KEY_USER,
                    private_key=registered_key.pkcs8_encrypted,
                    private_key_passphrase=PASSPHRASE,
                ),
            ),
            (
                key_spec(snowflake_front),
                secret(
                    username=KEY_USER,
                    private_key=registered_key.pkcs8_encrypted,
                    private_key_passphrase=PASSPHRASE + "x",
                ),
            ),
            (
                connection_spec(f"http://127.0.0.1:{silent_port}", test_timeout="1s"),
                password_secret(),
            ),
        ]
        results = [await run_test(spec, data) for spec, data in cases]

    assert [r.reason for r in results] == [
        Reason.CONNECTED,
        Reason.PERMISSION_DENIED,
        Reason.AUTHENTICATION_FAILED,
        Reason.CONNECTED,
        Reason.INVALID_CREDENTIALS,
        Reason.TIMEOUT,
    ]
    planted = [PASSWORD, PASSPHRASE, registered_key.pkcs8_encrypted, registered_key.pkcs8]
    for result in results:
        assert_not_leaked(result, *planted)
    # the connector's chatter (request bodies, tokens) stays below the level it may log at
    assert logging.getLogger("snowflake.connector").getEffectiveLevel() >= logging.WARNING
    assert not [
        r for r in caplog.records if r.name.startswith("snowflake") and r.levelno < logging.WARNING
    ]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    for value in planted:
        assert value not in logged
        for line in value.splitlines():
            if len(line) >= 12 and "-----" not in line:
                assert line not in logged
