from datetime import UTC, datetime, timedelta

from warehouse_operator.models import Check, CheckResult, ProbeResult, Reason
from warehouse_operator.status import compute_status, merge_patch

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
OK = ProbeResult(
    reason=Reason.CONNECTED,
    message="connected in 12 ms",
    latency_ms=12,
    server_version="PostgreSQL 15.18",
    checks=(Check(name="connect", result=CheckResult.PASSED, duration_ms=12),),
)
AUTH = ProbeResult(
    reason=Reason.AUTHENTICATION_FAILED, message="password authentication failed for user 'app'"
)
TIMEOUT = ProbeResult(reason=Reason.TIMEOUT, message="no answer")
NO_SECRET = ProbeResult(reason=Reason.SECRET_NOT_FOUND, message="Secret 'db' was not found")


def cond(status: dict[str, object], type_: str) -> dict[str, object]:
    conds = status["conditions"]
    assert isinstance(conds, list)
    return next(c for c in conds if c["type"] == type_)


def test_first_success() -> None:
    status, events = compute_status(None, OK, generation=3, now=T0, test_request=None)
    assert status["phase"] == "Connected"
    assert status["reason"] == "Connected"
    assert status["latencyMs"] == 12
    assert status["serverVersion"] == "PostgreSQL 15.18"
    assert status["lastTestedAt"] == status["lastConnectedAt"] == "2026-01-01T12:00:00Z"
    assert status["consecutiveFailures"] == 0
    assert status["observedGeneration"] == 3
    assert status["checks"] == [
        {"name": "connect", "result": "Passed", "message": "", "durationMs": 12}
    ]
    assert cond(status, "Ready")["status"] == "True"
    assert cond(status, "Ready")["observedGeneration"] == 3
    assert cond(status, "Reconciling")["status"] == "False"
    assert cond(status, "Stalled")["status"] == "False"
    assert [(e.type, e.reason) for e in events] == [("Normal", "Connected")]


def test_failure_keeps_last_success_facts() -> None:
    ok, _ = compute_status(None, OK, generation=1, now=T0, test_request=None)
    t1 = T0 + timedelta(minutes=5)
    failed, events = compute_status(ok, AUTH, generation=1, now=t1, test_request=None)
    assert failed["phase"] == "Failed"
    assert failed["reason"] == "AuthenticationFailed"
    assert failed["latencyMs"] == 12
    assert failed["lastConnectedAt"] == "2026-01-01T12:00:00Z"
    assert failed["lastTestedAt"] == "2026-01-01T12:05:00Z"
    assert failed["consecutiveFailures"] == 1
    ready = cond(failed, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "AuthenticationFailed"
    assert ready["lastTransitionTime"] == "2026-01-01T12:05:00Z"
    assert [(e.type, e.reason) for e in events] == [("Warning", "AuthenticationFailed")]


def test_no_event_when_nothing_changes_and_transition_time_is_kept() -> None:
    first, _ = compute_status(None, AUTH, generation=1, now=T0, test_request=None)
    second, events = compute_status(
        first, AUTH, generation=1, now=T0 + timedelta(minutes=1), test_request=None
    )
    assert events == []
    assert second["consecutiveFailures"] == 2
    assert cond(second, "Ready")["lastTransitionTime"] == "2026-01-01T12:00:00Z"


def test_new_failure_reason_is_a_new_warning() -> None:
    first, _ = compute_status(None, AUTH, generation=1, now=T0, test_request=None)
    _, events = compute_status(first, TIMEOUT, generation=1, now=T0, test_request=None)
    assert [(e.type, e.reason) for e in events] == [("Warning", "Timeout")]


def test_recovery_is_one_normal_event() -> None:
    failed, _ = compute_status(None, TIMEOUT, generation=1, now=T0, test_request=None)
    ok, events = compute_status(failed, OK, generation=1, now=T0, test_request=None)
    assert ok["consecutiveFailures"] == 0
    assert [(e.type, e.reason) for e in events] == [("Normal", "Connected")]
    _, events = compute_status(ok, OK, generation=1, now=T0, test_request=None)
    assert events == []


def test_stalled_when_a_person_must_act() -> None:
    status, _ = compute_status(None, NO_SECRET, generation=None, now=T0, test_request=None)
    stalled = cond(status, "Stalled")
    assert stalled["status"] == "True"
    assert stalled["reason"] == "SecretNotFound"
    assert "observedGeneration" not in status
    assert "observedGeneration" not in stalled


def test_test_request_is_recorded_and_kept() -> None:
    first, _ = compute_status(None, OK, generation=1, now=T0, test_request="2026-01-01T11:59:00Z")
    assert first["lastHandledTestRequest"] == "2026-01-01T11:59:00Z"
    second, _ = compute_status(first, OK, generation=1, now=T0, test_request=None)
    assert second["lastHandledTestRequest"] == "2026-01-01T11:59:00Z"


def test_fingerprint_goes_to_snowflake_status() -> None:
    result = AUTH.model_copy(update={"public_key_fingerprint": "SHA256:abc="})
    status, _ = compute_status(None, result, generation=1, now=T0, test_request=None)
    assert status["snowflake"] == {"publicKeyFingerprint": "SHA256:abc="}


def test_merge_patch_removes_stale_keys() -> None:
    patch = merge_patch({"phase": "Failed", "snowflake": {"x": 1}}, {"phase": "Connected"})
    assert patch == {"phase": "Connected", "snowflake": None}


def test_pending_status_makes_gitops_tools_wait() -> None:
    from warehouse_operator.status import pending_status

    status = pending_status(None, generation=1, now=T0)
    assert status["phase"] == "Pending"
    assert "reason" not in status  # reasons are test outcomes; there is none yet
    assert cond(status, "Reconciling")["status"] == "True"
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Stalled")["status"] == "False"
    assert status["observedGeneration"] == 1


def test_conditions_of_others_are_kept() -> None:
    blocked = {
        "type": "DeletionBlocked",
        "status": "True",
        "reason": "InUse",
        "message": "in use by deployment/api",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    first, _ = compute_status(
        {"conditions": [blocked]}, OK, generation=1, now=T0, test_request=None
    )
    assert cond(first, "DeletionBlocked") == blocked
    assert [c["type"] for c in first["conditions"]] == [
        "Ready",
        "Reconciling",
        "Stalled",
        "DeletionBlocked",
    ]
