"""The operator process, end to end, with PostgreSQL: what a user sees through the API."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.kube_cluster import TEST_REQUESTED_ANNOTATION, assert_condition
from tests.support.kube_e2e import E2E

pytestmark = pytest.mark.e2e


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _next_second() -> None:
    """lastTestedAt has one-second resolution: make sure the next test lands in a later second."""
    time.sleep(1.05 - (time.time() % 1.0))


def _tested_after(previous: str | None) -> Any:
    def predicate(status: dict[str, Any]) -> bool:
        tested = status.get("lastTestedAt")
        return bool(tested) and tested != previous

    return predicate


def _orders_connected(e2e: E2E, interval: str) -> dict[str, Any]:
    """The connection "orders" to the test server, tested every ``interval``, once Connected."""
    e2e.create_pg_secret("pg")
    e2e.ns.create_connection("orders", e2e.postgres_spec("pg", testInterval=interval))
    return e2e.wait_for_phase("orders", "Connected")


def _retested(
    e2e: E2E, reached: Callable[[dict[str, Any]], bool], what: str, before: str
) -> dict[str, Any]:
    """ "orders" once ``reached(status)`` holds, checked to come from a test after the one at
    ``before`` that found it Connected."""
    obj = e2e.wait_for("orders", reached, timeout=15, what=what)
    assert obj["status"]["lastTestedAt"] != before
    assert obj["status"]["phase"] == "Connected"
    return obj


def test_create_becomes_connected(e2e: E2E) -> None:
    e2e.create_pg_secret("pg")
    e2e.ns.create_connection("orders", e2e.postgres_spec("pg"))

    obj = e2e.wait_for_phase("orders", "Connected")
    status = obj["status"]
    assert status["reason"] == "Connected"
    assert isinstance(status["latencyMs"], int)
    assert status["latencyMs"] >= 0
    tested = _parse_time(status["lastTestedAt"])
    assert status["lastTestedAt"].endswith("Z")  # RFC 3339, UTC
    assert abs(time.time() - tested.timestamp()) < 60
    assert status["lastConnectedAt"] == status["lastTestedAt"]
    assert status["consecutiveFailures"] == 0
    assert status["serverVersion"].startswith("PostgreSQL ")
    assert status["observedGeneration"] == obj["metadata"]["generation"] == 1
    assert_condition(status, "Ready", "True", reason="Connected")
    assert_condition(status, "Reconciling", "False")
    assert_condition(status, "Stalled", "False")
    assert [c["name"] for c in status["checks"]][-1] == "query"
    assert all(c["result"] == "Passed" for c in status["checks"])
    assert e2e.ns.event_reasons("orders") == [("Normal", "Connected")]


def test_wrong_password_fails_and_fixing_the_secret_alone_reconnects(e2e: E2E) -> None:
    canary = "canary-" + secrets.token_hex(16)
    e2e.create_pg_secret("pg", password=canary)
    # testInterval 0s: no periodic tests and no retries, so only the Secret change can re-test
    e2e.ns.create_connection("orders", e2e.postgres_spec("pg", testInterval="0s"))

    failed = e2e.wait_for_authentication_failure("orders")
    failed_checks = [c["name"] for c in failed["checks"] if c["result"] == "Failed"]
    assert failed_checks == ["authenticate"]

    e2e.ns.update_secret("pg", {"password": e2e.pg.password})
    connected = e2e.wait_for_phase("orders", "Connected", timeout=15)["status"]
    assert connected["consecutiveFailures"] == 0
    assert_condition(connected, "Ready", "True")
    assert e2e.ns.event_reasons("orders") == [
        ("Warning", "AuthenticationFailed"),
        ("Normal", "Connected"),
    ]


def test_test_request_annotation_triggers_a_test(e2e: E2E) -> None:
    first = _orders_connected(e2e, "1h")
    first_tested = first["status"]["lastTestedAt"]
    assert "lastHandledTestRequest" not in first["status"]

    _next_second()
    requested = e2e.ns.request_test("orders")
    obj = _retested(
        e2e,
        lambda s: s.get("lastHandledTestRequest") == requested,
        "the test request handled",
        first_tested,
    )
    assert obj["metadata"]["annotations"][TEST_REQUESTED_ANNOTATION] == requested

    # the same value again is not a new request: no further test
    second_tested = obj["status"]["lastTestedAt"]
    _next_second()
    e2e.ns.annotate("orders", "example.com/unrelated", "touch")  # a write that changes no spec
    time.sleep(2.0)
    assert e2e.ns.status("orders")["lastTestedAt"] == second_tested
    # one transition only: no event for a re-test that changed nothing
    assert e2e.ns.event_reasons("orders") == [("Normal", "Connected")]


def test_spec_change_triggers_a_test(e2e: E2E) -> None:
    first = _orders_connected(e2e, "1h")
    first_tested = first["status"]["lastTestedAt"]

    _next_second()
    patched = e2e.ns.patch_spec("orders", {"testTimeout": "5s", "displayName": "Orders database"})
    generation = patched["metadata"]["generation"]
    assert generation == first["metadata"]["generation"] + 1
    obj = _retested(
        e2e,
        lambda s: s.get("observedGeneration") == generation,
        "a test of the new generation",
        first_tested,
    )
    assert assert_condition(obj["status"], "Ready", "True")["observedGeneration"] == generation

    # a spec change that breaks the connection shows at once
    _next_second()
    e2e.ns.patch_spec("orders", {"postgres": {"database": "no_such_db"}})
    e2e.wait_for_phase("orders", "Failed", timeout=15)


def test_missing_secret_then_created(e2e: E2E) -> None:
    e2e.ns.create_connection("orders", e2e.postgres_spec("pg", testInterval="0s"))
    failed = e2e.wait_for_phase("orders", "Failed", "SecretNotFound")["status"]
    assert "pg" in failed["message"]
    assert_condition(failed, "Stalled", "True", reason="SecretNotFound")

    e2e.create_pg_secret("pg")
    e2e.wait_for_phase("orders", "Connected", timeout=15)
    assert e2e.ns.event_reasons("orders") == [
        ("Warning", "SecretNotFound"),
        ("Normal", "Connected"),
    ]


def test_suspend_stops_tests_and_resume_restarts_them(e2e: E2E) -> None:
    first = _orders_connected(e2e, "1s")
    # periodic tests run
    e2e.ns.wait_for(
        "orders",
        _tested_after(first["status"]["lastTestedAt"]),
        timeout=10,
        what="a periodic re-test",
    )

    e2e.ns.patch_spec("orders", {"suspend": True})
    time.sleep(1.5)  # a test already running when the spec changed may still finish
    frozen = e2e.ns.status("orders")
    time.sleep(4.0)  # four intervals
    after = e2e.ns.status("orders")
    assert after["lastTestedAt"] == frozen["lastTestedAt"]
    assert after["phase"] == "Connected"  # status keeps its last values

    e2e.ns.patch_spec("orders", {"suspend": False})
    e2e.ns.wait_for(
        "orders", _tested_after(frozen["lastTestedAt"]), timeout=10, what="tests after resuming"
    )
    assert e2e.ns.event_reasons("orders") == [("Normal", "Connected")]


def test_deletion_is_immediate(e2e: E2E) -> None:
    e2e.create_pg_secret("pg")
    e2e.ns.create_connection("orders", e2e.postgres_spec("pg", testInterval="1s"))
    e2e.ns.create_connection("reports", e2e.postgres_spec("pg", testInterval="1s"))
    e2e.wait_for_phase("orders", "Connected")
    reports = e2e.wait_for_phase("reports", "Connected", timeout=15)
    assert not reports["metadata"].get("finalizers")

    # with the operator running
    e2e.ns.delete_connection("orders")
    with pytest.raises(ApiException) as info:
        e2e.ns.get_connection("orders")
    assert info.value.status == 404

    # and with the operator gone: nothing waits for it
    assert e2e.operator.stop() == 0  # a clean shutdown on SIGTERM
    e2e.ns.delete_connection("reports")
    with pytest.raises(ApiException) as info:
        e2e.ns.get_connection("reports")
    assert info.value.status == 404


def test_events_only_on_transitions(e2e: E2E) -> None:
    obj = _orders_connected(e2e, "1s")
    tested = obj["status"]["lastTestedAt"]
    for _ in range(2):  # two more successful tests: nothing changed, so no event
        tested = e2e.ns.wait_for("orders", _tested_after(tested), timeout=10, what="a re-test")[
            "status"
        ]["lastTestedAt"]
    assert e2e.ns.event_reasons("orders") == [("Normal", "Connected")]

    e2e.ns.update_secret("pg", {"password": "wrong-" + secrets.token_hex(12)})
    failed = e2e.ns.wait_for_phase("orders", "Failed", "AuthenticationFailed", timeout=15)
    # failing again and again (backoff is capped by the 1s interval) is not a new transition
    e2e.ns.wait_for(
        "orders",
        lambda s: int(s.get("consecutiveFailures", 0)) >= 3,
        timeout=15,
        what="three failures",
    )
    assert failed["status"]["reason"] == "AuthenticationFailed"
    assert e2e.ns.event_reasons("orders") == [
        ("Normal", "Connected"),
        ("Warning", "AuthenticationFailed"),
    ]

    e2e.ns.update_secret("pg", {"password": e2e.pg.password})
    e2e.ns.wait_for_phase("orders", "Connected", timeout=15)
    assert e2e.ns.event_reasons("orders") == [
        ("Normal", "Connected"),
        ("Warning", "AuthenticationFailed"),
        ("Normal", "Connected"),
    ]


@pytest.mark.operator_args("--log-level", "DEBUG")
def test_canary_password_never_leaks(e2e: E2E) -> None:
    """With debug logging, through every path that handles a Secret: none of its values
    appears in the operator's log, the events or the status."""
    canary = "canary-" + secrets.token_hex(16)
    other = "canary-other-" + secrets.token_hex(16)
    e2e.create_pg_secret("wrong", password=canary, note=other)
    e2e.create_pg_secret("right", note=other)
    e2e.ns.create_connection("bad", e2e.postgres_spec("wrong", testInterval="1s"))
    e2e.ns.create_connection("good", e2e.postgres_spec("right", testInterval="1s"))
    e2e.ns.create_connection("missing", e2e.postgres_spec("absent", testInterval="1s"))
    e2e.wait_for_phase(
        "bad",
        "Failed",
        "AuthenticationFailed",
    )
    e2e.wait_for_phase("good", "Connected", timeout=15)
    e2e.wait_for_phase("missing", "Failed", "SecretNotFound", timeout=15)

    # the Secret changes, is requested again, is created late, is deleted
    e2e.ns.update_secret("wrong", {"password": canary + "-2"})
    e2e.ns.request_test("bad")
    e2e.create_pg_secret("absent", password=canary + "-3")
    e2e.wait_for_phase("missing", "Failed", "AuthenticationFailed", timeout=15)
    e2e.ns.delete_secret("right")
    e2e.wait_for_phase("good", "Failed", "SecretNotFound", timeout=15)
    assert "DEBUG" in e2e.operator.log_text()  # debug logging was really on

    e2e.assert_no_secret_leaks()
    assert {canary, other} <= e2e.secret_values()


@pytest.mark.operator_args("--startup-spread", "1s")
def test_operator_restart_retests_and_catches_up(e2e: E2E) -> None:
    first = _orders_connected(e2e, "1h")

    # a restart tests again (spread over --startup-spread), but nothing changed: no event
    assert e2e.operator.stop() == 0
    _next_second()
    e2e.operator.start()
    e2e.wait_for(
        "orders",
        _tested_after(first["status"]["lastTestedAt"]),
        what="a test after the restart",
    )
    assert e2e.ns.event_reasons("orders") == [("Normal", "Connected")]

    # what changed while the operator was down is found when it comes back
    assert e2e.operator.stop() == 0
    e2e.ns.update_secret("pg", {"password": "wrong-" + secrets.token_hex(12)})
    e2e.operator.start()
    e2e.wait_for_phase(
        "orders",
        "Failed",
        "AuthenticationFailed",
    )
    assert e2e.ns.event_reasons("orders") == [
        ("Normal", "Connected"),
        ("Warning", "AuthenticationFailed"),
    ]


@pytest.mark.operator_tracebacks_expected
def test_api_server_outage(e2e: E2E) -> None:
    if e2e.target.emulator is None:
        pytest.skip("restarts the API server: only possible with the emulator")
    _orders_connected(e2e, "1s")

    e2e.target.emulator.stop()
    time.sleep(30.0)  # 30 s without an API: tests keep running, their writes fail and are retried
    e2e.target.emulator.start()
    assert e2e.operator.running

    # the watches come back: a Secret change made after the outage is acted on
    e2e.ns.update_secret("pg", {"password": "wrong-" + secrets.token_hex(12)})
    e2e.wait_for_phase("orders", "Failed", "AuthenticationFailed", timeout=60)
    e2e.ns.update_secret("pg", {"password": e2e.pg.password})
    e2e.wait_for_phase("orders", "Connected", timeout=30)
