"""Pure parts of the in-use protection: kinds, users, messages and the finalizer decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from warehouse_operator.inuse.model import (
    BLOCKED_CONDITION,
    FINALIZER,
    ConnectionView,
    InUseKind,
    Plan,
    UsersIndex,
    allows_delete_in_use,
    blocked_conditions,
    blocked_message,
    connection_of,
    format_users,
    index_entry,
    parse_kinds,
    plan,
    user_ref,
    users_in_list,
)
from warehouse_operator.settings import DEFAULT_IN_USE_KINDS

LABEL = "warehouse-operator.io/connection"
OVERRIDE = "warehouse-operator.io/allow-delete-in-use"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def deployment(name: str, connection: str | None, namespace: str = "team-a") -> dict[str, Any]:
    labels = {LABEL: connection} if connection is not None else {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
    }


def connection(
    *,
    finalizers: list[str] | None = None,
    deleting: bool = False,
    override: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> ConnectionView:
    meta: dict[str, Any] = {
        "name": "warehouse",
        "namespace": "team-a",
        "uid": "u-1",
        "resourceVersion": "42",
        "generation": 3,
    }
    if finalizers is not None:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = "2026-05-01T12:00:00Z"
    if override is not None:
        meta["annotations"] = {OVERRIDE: override}
    return ConnectionView.from_body({"metadata": meta, "status": {"conditions": conditions or []}})


# --- kinds ---------------------------------------------------------------------------------------


def test_default_kinds_parse() -> None:
    kinds = parse_kinds(DEFAULT_IN_USE_KINDS)
    assert kinds[0] == InUseKind("apps", "v1", "deployments")
    assert kinds[-1] == InUseKind("batch", "v1", "cronjobs")
    assert [str(k) for k in kinds] == list(DEFAULT_IN_USE_KINDS)


def test_core_kinds_and_duplicates_and_blanks() -> None:
    kinds = parse_kinds(["v1/pods", " apps/v1/Deployments ", "apps/v1/deployments", ""])
    assert kinds == (InUseKind("", "v1", "pods"), InUseKind("apps", "v1", "deployments"))
    assert kinds[0].group_version == "v1"
    assert kinds[1].group_version == "apps/v1"


@pytest.mark.parametrize(
    "text", ["deployments", "apps/v1/deployments/extra", "apps//deployments", "a b/v1/x"]
)
def test_malformed_kinds_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="group/version/plural"):
        parse_kinds([text])


# --- users ---------------------------------------------------------------------------------------


def test_connection_label_and_user_names() -> None:
    assert connection_of(deployment("api", "warehouse")) == "warehouse"
    assert connection_of(deployment("api", None)) is None
    assert connection_of(deployment("api", "  ")) is None
    assert user_ref(deployment("api", "warehouse")) == "deployment/api"
    assert user_ref({"metadata": {"name": "etl"}}, "Job") == "job/etl"


def test_index_entry_keys_users_by_namespace_and_connection() -> None:
    assert index_entry(deployment("api", "warehouse")) == {
        ("team-a", "warehouse"): "deployment/api"
    }
    assert index_entry(deployment("api", None)) == {}


def test_users_in_a_list_response_take_the_kind_from_the_list() -> None:
    listing = {
        "kind": "CronJobList",
        "apiVersion": "batch/v1",
        "items": [
            {"metadata": {"name": "nightly"}},
            {"metadata": {"name": "going", "deletionTimestamp": "2026-05-01T12:00:00Z"}},
        ],
    }
    assert users_in_list(listing) == ["cronjob/nightly"]
    assert users_in_list({}) == []


def test_users_are_listed_sorted_once_and_capped() -> None:
    assert format_users(["job/etl", "deployment/api", "job/etl"]) == "deployment/api, job/etl"
    many = [f"job/j{i:02d}" for i in range(13)]
    text = format_users(many, limit=10)
    assert text.startswith("job/j00, job/j01")
    assert text.endswith("job/j09 and 3 more")


def test_blocked_message_names_users_and_the_ways_out() -> None:
    message = blocked_message(["job/etl", "deployment/api"])
    assert "deployment/api, job/etl" in message
    assert OVERRIDE in message
    assert LABEL in message


@pytest.mark.parametrize(
    ("value", "allowed"),
    [("true", True), ("True", True), (" true ", True), ("yes", False), ("", False)],
)
def test_override_annotation(value: str, allowed: bool) -> None:
    assert allows_delete_in_use({"metadata": {"annotations": {OVERRIDE: value}}}) is allowed
    assert allows_delete_in_use({OVERRIDE: value}) is allowed
    assert allows_delete_in_use(None) is False
    assert allows_delete_in_use({"metadata": {}}) is False


# --- decisions -----------------------------------------------------------------------------------


def test_a_used_connection_gets_the_finalizer_next_to_others() -> None:
    view = connection(finalizers=["example.com/other"])
    assert plan(view, ["deployment/api"]) == Plan(finalizers=("example.com/other", FINALIZER))


def test_an_unused_connection_never_carries_it() -> None:
    assert plan(connection(), []).empty
    assert plan(connection(finalizers=[FINALIZER, "example.com/other"]), []) == Plan(
        finalizers=("example.com/other",)
    )


def test_the_override_removes_it_even_with_users() -> None:
    view = connection(finalizers=[FINALIZER], override="true")
    assert plan(view, ["deployment/api"]) == Plan(finalizers=())
    assert plan(connection(override="true"), ["deployment/api"]).empty


def test_protected_and_used_is_a_steady_state() -> None:
    assert plan(connection(finalizers=[FINALIZER]), ["deployment/api"]).empty


def test_no_finalizer_is_added_to_a_connection_being_deleted() -> None:
    assert plan(connection(deleting=True), ["deployment/api"]).empty


def test_a_deletion_held_by_users_is_reported_once() -> None:
    view = connection(finalizers=[FINALIZER], deleting=True)
    todo = plan(view, ["job/etl", "deployment/api"])
    assert todo.finalizers is None
    assert todo.blocked == blocked_message(["deployment/api", "job/etl"])

    reported = connection(
        finalizers=[FINALIZER],
        deleting=True,
        conditions=blocked_conditions(view, todo.blocked, NOW),
    )
    assert plan(reported, ["deployment/api", "job/etl"]).empty
    # the users changed: the message follows
    assert plan(reported, ["job/etl"]).blocked == blocked_message(["job/etl"])


def test_a_deletion_whose_last_user_left_goes_on() -> None:
    view = connection(finalizers=[FINALIZER], deleting=True)
    assert plan(view, []) == Plan(finalizers=())


def test_blocked_condition_keeps_the_other_conditions() -> None:
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "Unreachable",
        "message": "x",
        "lastTransitionTime": "2026-04-01T00:00:00Z",
    }
    view = connection(finalizers=[FINALIZER], deleting=True, conditions=[ready])
    conditions = blocked_conditions(view, "held", NOW)
    assert conditions[0] == ready
    blocked = conditions[1]
    assert blocked["type"] == BLOCKED_CONDITION
    assert blocked["status"] == "True"
    assert blocked["reason"] == "InUse"
    assert blocked["message"] == "held"
    assert blocked["observedGeneration"] == 3
    assert blocked["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    # rewritten with new users: the transition time stays
    again = blocked_conditions(
        connection(finalizers=[FINALIZER], deleting=True, conditions=conditions),
        "held by fewer",
        datetime(2026, 5, 2, tzinfo=UTC),
    )
    assert [c["type"] for c in again] == ["Ready", BLOCKED_CONDITION]
    assert again[1]["lastTransitionTime"] == "2026-05-01T12:00:00Z"


def test_connection_view_reads_leniently() -> None:
    view = ConnectionView.from_body(
        {"metadata": {"name": "x", "finalizers": ["a", 3], "generation": "2"}}
    )
    assert view.finalizers == ("a",)
    assert view.generation is None
    assert view.resource_version is None
    assert view.key == ("", "x")
    assert not view.deleting


# --- the index -----------------------------------------------------------------------------------

DEPLOYMENTS = InUseKind("apps", "v1", "deployments")
JOBS = InUseKind("batch", "v1", "jobs")


def test_index_follows_labels_added_changed_removed_and_deletions() -> None:
    index = UsersIndex()
    key, other = ("team-a", "warehouse"), ("team-a", "lake")
    assert index.update(DEPLOYMENTS, deployment("api", "warehouse"), "ADDED") == [key]
    job = {
        "kind": "Job",
        "metadata": {"name": "etl", "namespace": "team-a", "labels": {LABEL: "warehouse"}},
    }
    assert index.update(JOBS, job, None) == [key]
    assert index.users("team-a", "warehouse") == ["deployment/api", "job/etl"]

    # a status update of a user changes nothing: no connection to recheck
    assert index.update(DEPLOYMENTS, deployment("api", "warehouse"), "MODIFIED") == []
    # relabelled to another connection: both are rechecked
    assert index.update(DEPLOYMENTS, deployment("api", "lake"), "MODIFIED") == [key, other]
    assert index.users("team-a", "warehouse") == ["job/etl"]
    assert index.users("team-a", "lake") == ["deployment/api"]
    # label removed
    assert index.update(DEPLOYMENTS, deployment("api", None), "MODIFIED") == [other]
    assert index.users("team-a", "lake") == []
    # deleted (the body of a DELETED event still carries the label)
    assert index.update(JOBS, job, "DELETED") == [key]
    assert index.users("team-a", "warehouse") == []
    # never labelled: nothing
    assert index.update(DEPLOYMENTS, deployment("web", None), "ADDED") == []


def test_index_keeps_namespaces_and_kinds_apart() -> None:
    index = UsersIndex()
    index.update(DEPLOYMENTS, deployment("api", "warehouse", namespace="team-a"), None)
    index.update(DEPLOYMENTS, deployment("api", "warehouse", namespace="team-b"), None)
    same_name_job = {
        "kind": "Job",
        "metadata": {"name": "api", "namespace": "team-a", "labels": {LABEL: "warehouse"}},
    }
    index.update(JOBS, same_name_job, None)
    assert index.users("team-a", "warehouse") == ["deployment/api", "job/api"]
    assert index.users("team-b", "warehouse") == ["deployment/api"]
    index.update(DEPLOYMENTS, deployment("api", "warehouse", namespace="team-a"), "DELETED")
    assert index.users("team-a", "warehouse") == ["job/api"]
