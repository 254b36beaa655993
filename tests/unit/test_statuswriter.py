"""The one status writer: owners' parts merged, conflicts retried, echoes never go back in time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.fake_kube import RecordingApi
from warehouse_operator.inuse import OWNER as IN_USE
from warehouse_operator.kube.errors import Conflict
from warehouse_operator.probe import EgressPolicy
from warehouse_operator.reconcile import OWNER as SCHEDULER
from warehouse_operator.scheduler import Scheduler
from warehouse_operator.statuswriter import StatusWriter, merge

KEY = ("ns", "a")
BLOCKED = {"type": "DeletionBlocked", "status": "True", "reason": "InUse", "message": "held"}
READY = {"type": "Ready", "status": "False", "reason": "Unreachable", "message": "x"}


def obj(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "namespace": "ns",
            "name": "a",
            "uid": "u1",
            "generation": 1,
            "annotations": spec.pop("annotations", {}),
        },
        "spec": {
            "provider": "postgres",
            "credentialsSecretRef": {"name": "db"},
            "postgres": {"host": "127.0.0.1", "database": "app"},
        },
    }
    if status is not None:
        body["status"] = status
    return body


def types(status: dict[str, Any]) -> list[str]:
    return [c["type"] for c in status.get("conditions") or []]


def test_merge_replaces_only_what_the_owner_owns_in_place() -> None:
    known = {"phase": "Failed", "conditions": [READY, BLOCKED]}
    ready = {**READY, "status": "True"}
    merged = merge(known, SCHEDULER, {"phase": "Connected", "conditions": [ready, BLOCKED]})
    assert merged == {"phase": "Connected", "conditions": [ready, BLOCKED]}
    cleared = merge(merged, IN_USE, {"conditions": []})
    assert cleared == {"phase": "Connected", "conditions": [ready]}
    # an owner of one condition neither adds nor drops fields
    assert merge({"phase": "Failed"}, IN_USE, {"phase": "X", "conditions": [BLOCKED]}) == {
        "phase": "Failed",
        "conditions": [BLOCKED],
    }


async def test_a_conflicting_write_reads_once_merges_and_lands() -> None:
    api = RecordingApi()
    writer = StatusWriter(api)
    first = await writer.write(KEY, SCHEDULER, {"phase": "Failed", "conditions": [READY]})
    assert first is not None
    api.write_as_other("ns", "a", {"conditions": [READY, BLOCKED]})  # its event not seen yet
    written = await writer.write(KEY, SCHEDULER, {"phase": "Connected", "conditions": [READY]})
    assert written is not None
    assert api.conflicts == 1
    assert len(api.object_reads) == 1
    assert api.objects[KEY]["status"] == {"phase": "Connected", "conditions": [READY, BLOCKED]}


async def test_a_conflict_on_an_object_without_a_namespace_is_read_back_and_lands() -> None:
    # found by the scheduler fuzz: the recording API read a namespace-less object's path
    # wrong, so the re-read after a conflict found nothing and the result was dropped as for
    # a deleted object (the fuzz then saw a connection never tested)
    api = RecordingApi()
    writer = StatusWriter(api)
    key = ("", "c3")
    writer.observe({"metadata": {"name": "c3", "resourceVersion": "d\x04x"}, "status": {}})
    api.write_as_other("", "c3", {"phase": "Other"})
    written = await writer.write(key, SCHEDULER, {"phase": "Connected", "conditions": [READY]})
    assert written is not None
    assert api.conflicts == 1
    assert api.objects[key]["status"]["phase"] == "Connected"


async def test_a_write_that_always_conflicts_gives_up_and_a_gone_object_is_none() -> None:
    api = RecordingApi()
    writer = StatusWriter(api, attempts=2)
    writer.observe(api.add(obj()))

    async def other_writes_first(*args: Any, **kwargs: Any) -> Any:
        api.write_as_other("ns", "a", {"phase": "Other"})
        return await RecordingApi.patch_status(api, *args, **kwargs)

    api.patch_status = other_writes_first  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        await writer.write(KEY, SCHEDULER, {"phase": "Connected"})
    assert api.conflicts == 2
    del api.patch_status  # the instance's override: writes land again
    api.gone.add(KEY)
    assert await writer.write(KEY, IN_USE, {"conditions": [BLOCKED]}) is None
    assert writer.status(KEY) == {}
    # deleted between a conflict and the read that follows it
    api.gone.clear()
    writer.observe(api.add(obj()))
    api.write_as_other("ns", "a", {"phase": "Other"})

    async def deleted(path: str, **_: Any) -> Any:
        return None

    api.get_object = deleted  # type: ignore[method-assign]
    assert await writer.write(KEY, SCHEDULER, {"phase": "Connected"}) is None


async def test_a_late_echo_of_our_own_write_does_not_take_the_cache_back() -> None:
    api = RecordingApi()
    writer = StatusWriter(api)
    writer.observe(api.add(obj()))
    await writer.write(KEY, SCHEDULER, {"phase": "Pending"})
    echo_of_first = api.objects[KEY]
    await writer.write(KEY, SCHEDULER, {"phase": "Failed"})
    writer.observe(echo_of_first)  # arrives after the second write's response
    assert writer.status(KEY)["phase"] == "Failed"
    # opaque versions: an echo is known by the versions our writes produced
    opaque = {**echo_of_first, "metadata": {**echo_of_first["metadata"], "resourceVersion": "x"}}
    writer.forget(KEY)
    writer.observe(opaque)
    await writer.write(KEY, SCHEDULER, {"phase": "Connected"})  # conflicts: "x" is not current
    writer.observe(echo_of_first)
    assert writer.status(KEY)["phase"] == "Connected"
    assert api.conflicts == 1
    assert len(api.object_reads) == 1
    # someone else's change is adopted at once
    writer.observe(api.write_as_other("ns", "a", {"conditions": [BLOCKED]}))
    assert types(writer.status(KEY)) == ["DeletionBlocked"]


async def settle(seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)


DENY = EgressPolicy.from_cidrs([], ["0.0.0.0/0", "::/0"])


async def test_a_result_written_while_a_deletion_is_held_keeps_the_condition() -> None:
    """The scheduler and the in-use controller share the writer: no drop and re-add."""
    api = RecordingApi()
    writer = StatusWriter(api)
    s = Scheduler(api, max_concurrent=2, policy=DENY, status_writer=writer)
    s.start()
    try:
        s.observe(api.add(obj()), "ADDED")
        await settle()
        assert await writer.write(KEY, IN_USE, {"conditions": [BLOCKED]}) is not None
        writes = len(api.patches)
        requested = obj(annotations={"warehouse-operator.io/test-requested-at": "r1"})
        s.observe(api.add(requested | {"status": api.objects[KEY]["status"]}), "MODIFIED")
        await settle()
        assert len(api.patches) == writes + 1  # the result, once: nothing put back after it
        stored = api.objects[KEY]["status"]
        assert types(stored) == ["Ready", "Reconciling", "Stalled", "DeletionBlocked"]
        assert stored["lastHandledTestRequest"] == "r1"
        assert api.conflicts == 0
        assert api.object_reads == []
    finally:
        await s.stop()


async def test_steady_state_costs_one_write_per_test_and_no_read() -> None:
    api = RecordingApi()
    s = Scheduler(api, max_concurrent=1, policy=DENY)
    s.start()
    try:
        s.observe(api.add(obj()), "ADDED")
        await settle()
        for n in range(5):
            echo = api.objects[KEY]  # the watch event of our last write, seen late
            request = obj(annotations={"warehouse-operator.io/test-requested-at": f"r{n}"})
            s.observe(api.add(request | {"status": echo["status"]}), "MODIFIED")
            await settle(0.1)
            s.observe(echo, "MODIFIED")
        assert len(api.results) == 6
        assert len(api.patches) == len(api.results) + len(api.pending_of())
        assert api.conflicts == 0
        assert api.object_reads == []
    finally:
        await s.stop()
