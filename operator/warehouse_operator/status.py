"""(old status, test result, generation, now) -> new status and events. Pure: no I/O.

Status is computed in this one place; conditions follow ``metav1.Condition`` and keep their
``lastTransitionTime`` while their status does not change, so GitOps tools see real transitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from warehouse_operator.models import Phase, ProbeResult, Reason


@dataclass(frozen=True)
class Event:
    """A Kubernetes event to post about the connection."""

    type: str  # Normal | Warning
    reason: str
    message: str


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    old_conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """One metav1.Condition; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    previous = next(
        (c for c in old_conditions if isinstance(c, Mapping) and c.get("type") == type_), None
    )
    transition = rfc3339(now)
    if (
        previous is not None
        and previous.get("status") == value
        and previous.get("lastTransitionTime")
    ):
        transition = str(previous["lastTransitionTime"])
    cond: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def _old_conditions(old: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    conds = old.get("conditions")
    return [c for c in conds if isinstance(c, Mapping)] if isinstance(conds, list) else []


OWN_CONDITIONS = frozenset({"Ready", "Reconciling", "Stalled"})


def _foreign(conds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Conditions this module does not own (e.g. ``DeletionBlocked``): kept as they are."""
    return [dict(c) for c in conds if c.get("type") not in OWN_CONDITIONS]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def compute_status(
    old: Mapping[str, Any] | None,
    result: ProbeResult,
    *,
    generation: int | None,
    now: datetime,
    test_request: str | None,
) -> tuple[dict[str, Any], list[Event]]:
    """The status to write after a finished test, and the events its transition deserves."""
    old = old if isinstance(old, Mapping) else {}
    old_phase = old.get("phase")
    old_reason = old.get("reason")
    ok = result.ok
    phase = Phase.CONNECTED if ok else Phase.FAILED
    conds = _old_conditions(old)

    status: dict[str, Any] = {
        "phase": phase.value,
        "reason": result.reason.value,
        "message": result.message,
        "lastTestedAt": rfc3339(now),
        "consecutiveFailures": 0 if ok else _int(old.get("consecutiveFailures")) + 1,
        "checks": [c.model_dump(by_alias=True, mode="json") for c in result.checks],
    }
    # "of the last successful test": a failure keeps what the last success found
    for key in ("latencyMs", "lastConnectedAt", "serverVersion"):
        if key in old and old[key] is not None:
            status[key] = old[key]
    if ok:
        status["lastConnectedAt"] = rfc3339(now)
        if result.latency_ms is not None:
            status["latencyMs"] = result.latency_ms
        if result.server_version:
            status["serverVersion"] = result.server_version
    if generation is not None:
        status["observedGeneration"] = generation
    if test_request is not None:
        status["lastHandledTestRequest"] = test_request
    elif old.get("lastHandledTestRequest") is not None:
        status["lastHandledTestRequest"] = old["lastHandledTestRequest"]
    if result.public_key_fingerprint:
        status["snowflake"] = {"publicKeyFingerprint": result.public_key_fingerprint}

    stalled = result.reason.needs_human
    status["conditions"] = [
        condition(conds, "Ready", ok, result.reason.value, result.message, generation, now),
        condition(
            conds,
            "Reconciling",
            False,
            "TestCompleted",
            "the latest test has finished",
            generation,
            now,
        ),
        condition(
            conds,
            "Stalled",
            stalled,
            result.reason.value if stalled else "NoActionNeeded",
            result.message if stalled else "the connection can be tested without a change",
            generation,
            now,
        ),
    ]
    status["conditions"] += _foreign(conds)

    events: list[Event] = []
    if ok and old_phase != Phase.CONNECTED.value:
        events.append(Event("Normal", Reason.CONNECTED.value, result.message))
    elif not ok and (old_phase != Phase.FAILED.value or old_reason != result.reason.value):
        events.append(Event("Warning", result.reason.value, result.message))
    return status, events


def pending_status(
    old: Mapping[str, Any] | None, *, generation: int | None, now: datetime
) -> dict[str, Any]:
    """Status of a connection not tested yet: ``Reconciling`` True, so GitOps tools wait for it."""
    conds = _old_conditions(old if isinstance(old, Mapping) else {})
    message = "the first test of this connection is pending"
    status: dict[str, Any] = {
        "phase": Phase.PENDING.value,
        "message": message,
        "consecutiveFailures": 0,
        "conditions": [
            condition(conds, "Ready", False, "TestPending", message, generation, now),
            condition(conds, "Reconciling", True, "TestPending", message, generation, now),
            condition(
                conds,
                "Stalled",
                False,
                "NoActionNeeded",
                "the connection can be tested",
                generation,
                now,
            ),
        ],
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` at the top level (None removes a key)."""
    patch: dict[str, Any] = dict(new)
    for key in old or {}:
        if key not in new:
            patch[key] = None
    return patch
