"""Admission decisions and the AdmissionReview answer (pure)."""

from __future__ import annotations

from typing import Any

from warehouse_operator.webhooks import (
    ALLOW,
    Decision,
    decide_create,
    decide_delete,
    review_response,
)

OVERRIDE = "warehouse-operator.io/allow-delete-in-use"


def conn(name: str = "warehouse", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team-a", **meta}}


# --- decisions -----------------------------------------------------------------------------------


def test_delete_in_use_is_a_409_conflict_naming_the_users() -> None:
    decision = decide_delete(conn(), ["job/etl", "deployment/api"])
    assert decision.allowed is False
    assert decision.code == 409
    assert decision.reason == "Conflict"
    assert "'warehouse' is in use by deployment/api, job/etl" in decision.message
    assert OVERRIDE in decision.message
    assert decision.outcome == "denied"


def test_delete_without_users_or_with_the_override_or_in_a_dying_namespace() -> None:
    assert decide_delete(conn(), []) == ALLOW
    assert decide_delete(conn(annotations={OVERRIDE: "true"}), ["deployment/api"]) == ALLOW
    assert decide_delete(conn(annotations={OVERRIDE: "false"}), ["deployment/api"]).allowed is False
    assert decide_delete(conn(), ["deployment/api"], namespace_terminating=True) == ALLOW


def test_create_with_one_per_namespace() -> None:
    new = conn("second")
    others = [conn("first")]
    decision = decide_create(new, others, one_per_namespace=True)
    assert (decision.allowed, decision.code, decision.reason) == (False, 403, "Forbidden")
    assert "'team-a' already has a WarehouseConnection (first)" in decision.message
    assert decide_create(new, others, one_per_namespace=False) == ALLOW
    assert decide_create(new, [], one_per_namespace=True) == ALLOW
    # the object itself (a retried create) and connections on their way out do not count
    assert decide_create(new, [conn("second")], one_per_namespace=True) == ALLOW
    going = conn("first", deletionTimestamp="2026-05-01T12:00:00Z")
    assert decide_create(new, [going], one_per_namespace=True) == ALLOW


def test_review_response_shapes() -> None:
    assert review_response("u-1", ALLOW) == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u-1", "allowed": True},
    }
    denied = review_response("u-2", Decision(False, 409, "Conflict", "in use"))
    assert denied["response"] == {
        "uid": "u-2",
        "allowed": False,
        "status": {"status": "Failure", "code": 409, "reason": "Conflict", "message": "in use"},
    }
    assert Decision(False, 500, "InternalError", "x").outcome == "error"
