"""The operator process, end to end, with Snowflake: fakesnow behind the strict login front.

Password and key-pair logins through the real operator, the real connector and the front
that refuses logins the way Snowflake does. The harness checks after every test that no
Secret value (nor a line of the private key) reached the operator's log, events or status.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.kube_cluster import assert_condition
from tests.support.kube_e2e import E2E
from tests.support.probe_results import SNOWFLAKE_CHECKS
from tests.support.snowflake_testbed import METADATA_ONLY, PASSWORD, PASSWORD_USER

if TYPE_CHECKING:  # the plugin below is imported by pytest, so that its asserts are rewritten
    from tests.e2e.providers_peers import SnowflakePeer

pytest_plugins = ["tests.e2e.providers_peers"]
pytestmark = pytest.mark.e2e


@pytest.fixture
def snowflake(e2e: E2E, snowflake_peer: SnowflakePeer) -> SnowflakePeer:
    # the harness's leak checks also look for every line of the registered private key
    e2e.extra_secret_values |= snowflake_peer.key_secret_values()
    return snowflake_peer


def checks_of(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["result"], c.get("message", "")) for c in status["checks"]}


def test_password_login_connected(e2e: E2E, snowflake: SnowflakePeer) -> None:
    statements, logins = len(snowflake.front.statements), len(snowflake.front.logins)
    e2e.ns.create_secret("snowflake-credentials", snowflake.password_secret())
    e2e.ns.create_connection("analytics", snowflake.password_spec("snowflake-credentials"))

    obj = e2e.wait_for_phase("analytics", "Connected")
    status = obj["status"]
    assert status["reason"] == "Connected"
    assert re.fullmatch(r"Snowflake \d+\.\d+\.\d+", status["serverVersion"])
    assert isinstance(status["latencyMs"], int)
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert "snowflake" not in status  # no key pair, no fingerprint
    assert [c["name"] for c in status["checks"]] == SNOWFLAKE_CHECKS
    assert all(c["result"] == "Passed" for c in status["checks"])
    checks = checks_of(status)
    # the user name comes from the Secret: whether it is shown is the operator's choice
    assert re.fullmatch(r"authenticated as '.+' with a password", checks["authenticate"][1])
    assert checks["role"][1] == "role 'ANALYST' is granted and in use"
    # a suspended warehouse is healthy, and the test left it suspended
    assert "'REPORTING_WH' is SUSPENDED" in checks["warehouse"][1]
    assert "not resumed" in checks["warehouse"][1]
    assert snowflake.front.account.warehouses["REPORTING_WH"].state == "SUSPENDED"
    sent = snowflake.front.statements_since(statements)
    assert sent, "the operator sent no statement"
    assert all(METADATA_ONLY.match(s) for s in sent), sent
    assert [
        (r.user, r.authenticator, r.code, r.role, r.database, r.warehouse)
        for r in snowflake.front.logins_since(logins)
    ] == [(PASSWORD_USER.lower(), "SNOWFLAKE", "OK", "ANALYST", "ANALYTICS", "REPORTING_WH")]
    assert_condition(status, "Ready", "True", reason="Connected")
    assert_condition(status, "Stalled", "False")
    assert e2e.ns.event_reasons("analytics") == [("Normal", "Connected")]


def test_key_pair_login_connected_with_the_key_fingerprint(
    e2e: E2E, snowflake: SnowflakePeer, tmp_path: Path
) -> None:
    logins = len(snowflake.front.logins)
    e2e.ns.create_secret("etl-credentials", snowflake.key_pair_secret())
    e2e.ns.create_connection("etl", snowflake.key_pair_spec("etl-credentials"))

    status = e2e.wait_for_phase("etl", "Connected")["status"]
    expected = snowflake.registered_key_fingerprint(tmp_path)
    assert status["snowflake"] == {"publicKeyFingerprint": expected}
    assert re.fullmatch(r"Snowflake \d+\.\d+\.\d+", status["serverVersion"])
    assert [c["name"] for c in status["checks"]] == SNOWFLAKE_CHECKS
    checks = checks_of(status)
    assert checks["authenticate"][0] == "Passed"
    assert checks["authenticate"][1].endswith(f"with a key pair ({expected})")
    assert checks["warehouse"] == ("Passed", "warehouse 'LOAD_WH' is STARTED")
    assert [(r.authenticator, r.code, r.role) for r in snowflake.front.logins_since(logins)] == [
        ("SNOWFLAKE_JWT", "OK", "LOADER")
    ]
    assert_condition(status, "Ready", "True", reason="Connected")
    assert e2e.ns.event_reasons("etl") == [("Normal", "Connected")]


def test_wrong_password_fails_and_fixing_the_secret_alone_reconnects(
    e2e: E2E, snowflake: SnowflakePeer
) -> None:
    canary = "canary-" + secrets.token_hex(16)
    logins = len(snowflake.front.logins)
    e2e.ns.create_secret("snowflake-credentials", snowflake.password_secret(canary))
    # testInterval 0s: no periodic tests and no retries, so only the Secret change can re-test
    e2e.ns.create_connection(
        "analytics", snowflake.password_spec("snowflake-credentials", testInterval="0s")
    )

    failed = e2e.wait_for_authentication_failure("analytics")
    assert "390100" in failed["message"]
    assert [c["name"] for c in failed["checks"] if c["result"] == "Failed"] == ["authenticate"]
    assert "snowflake" not in failed

    e2e.ns.update_secret("snowflake-credentials", {"password": PASSWORD})
    connected = e2e.wait_for_phase("analytics", "Connected", timeout=20)["status"]
    assert connected["consecutiveFailures"] == 0
    assert connected["observedGeneration"] == 1  # the spec never changed: the Secret did it
    assert_condition(connected, "Ready", "True", reason="Connected")
    assert [r.code for r in snowflake.front.logins_since(logins)] == ["390100", "OK"]
    assert e2e.ns.event_reasons("analytics") == [
        ("Warning", "AuthenticationFailed"),
        ("Normal", "Connected"),
    ]
    assert canary in e2e.secret_values()  # the leak check at teardown looks for it
