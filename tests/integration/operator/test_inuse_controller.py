"""The in-use controller in-process against the API emulator: what it does when its watch
has not (yet) seen the users that the API has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.support.kube_cluster import Kube, Namespace
from warehouse_operator.inuse import FINALIZER, InUseController, parse_kinds
from warehouse_operator.kube import KubeClient
from warehouse_operator.probe import EgressPolicy
from warehouse_operator.scheduler import Scheduler
from warehouse_operator.settings import DEFAULT_IN_USE_KINDS
from warehouse_operator.statuswriter import StatusWriter

from .conftest import create_workload, unreachable_connection


@pytest.fixture
async def controller(api: KubeClient) -> AsyncIterator[InUseController]:
    running = InUseController(api, parse_kinds(DEFAULT_IN_USE_KINDS))
    running.start(leading=True)
    yield running
    await running.stop()


async def _settle(controller: InUseController) -> None:
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not controller.pending:
            await asyncio.sleep(0.1)
            return


async def test_protection_stays_when_only_the_api_knows_the_users(
    kube: Kube, ns: Namespace, api: KubeClient, controller: InUseController
) -> None:
    # a protected connection, deleted while nobody watched; its user exists in the API only
    ns.create_connection("used", unreachable_connection())
    ns.patch_connection("used", {"metadata": {"finalizers": [FINALIZER]}})
    create_workload(kube, ns.name, "Deployment", "api", "used")
    ns.delete_connection("used")

    controller.observe_connection(ns.get_connection("used"), "MODIFIED")  # no user event seen
    await _settle(controller)
    obj = ns.get_connection("used")
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    blocked = [c for c in obj["status"]["conditions"] if c["type"] == "DeletionBlocked"]
    assert len(blocked) == 1
    assert "deployment/api" in blocked[0]["message"]


async def test_protection_goes_when_the_api_confirms_there_are_no_users(
    ns: Namespace, api: KubeClient, controller: InUseController
) -> None:
    ns.create_connection("stale", unreachable_connection())
    ns.patch_connection("stale", {"metadata": {"finalizers": [FINALIZER, "example.com/keep"]}})
    controller.observe_connection(ns.get_connection("stale"), "ADDED")
    await _settle(controller)
    assert ns.get_connection("stale")["metadata"]["finalizers"] == ["example.com/keep"]
    assert controller.writes == 1


async def test_nothing_is_written_while_not_leading(
    kube: Kube, ns: Namespace, api: KubeClient, controller: InUseController
) -> None:
    controller.stop_leading()
    ns.create_connection("used", unreachable_connection())
    create_workload(kube, ns.name, "Deployment", "api", "used")
    deployment = kube.api_client.sanitize_for_serialization(
        k8s.AppsV1Api(kube.api_client).read_namespaced_deployment("api", ns.name)
    )
    deployment.setdefault("kind", "Deployment")
    controller.observe_connection(ns.get_connection("used"), "ADDED")
    controller.observe_user(controller.kinds[0], deployment, "ADDED")
    await asyncio.sleep(0.3)
    assert ns.get_connection("used")["metadata"].get("finalizers") is None
    assert controller.writes == 0

    controller.start_leading()  # what changed meanwhile is caught up at once
    await _settle(controller)
    assert ns.get_connection("used")["metadata"]["finalizers"] == [FINALIZER]


def _types(obj: dict[str, Any]) -> list[str]:
    return [c["type"] for c in (obj.get("status") or {}).get("conditions") or []]


async def _held_deletion(kube: Kube, ns: Namespace, name: str) -> None:
    ns.create_connection(name, unreachable_connection())
    ns.patch_connection(name, {"metadata": {"finalizers": [FINALIZER]}})
    create_workload(kube, ns.name, "Deployment", "api", name)
    ns.delete_connection(name)


@pytest.mark.parametrize("shared", [True, False], ids=["one-writer", "two-writers"])
async def test_a_test_result_keeps_the_deletion_blocked_condition(
    kube: Kube, ns: Namespace, api: KubeClient, shared: bool
) -> None:
    """The scheduler writes a result while a deletion is held: DeletionBlocked stays, and the
    in-use controller has nothing to put back. With writers apart (as a stale view would be),
    the scheduler's conditional write conflicts once, reads the object and lands."""
    await _held_deletion(kube, ns, "held")
    writer = StatusWriter(api)
    scheduler = Scheduler(
        api,
        max_concurrent=1,
        policy=EgressPolicy.from_cidrs([], ["0.0.0.0/0", "::/0"]),
        status_writer=writer,
    )
    controller = InUseController(
        api, parse_kinds(DEFAULT_IN_USE_KINDS), status_writer=writer if shared else None
    )
    # the scheduler sees the object first, without the condition; it does not test yet
    scheduler.observe(ns.get_connection("held"), "MODIFIED")
    controller.start(leading=True)
    controller.observe_connection(ns.get_connection("held"), "MODIFIED")
    await _settle(controller)
    assert _types(ns.get_connection("held")) == ["DeletionBlocked"]
    scheduler.start()
    try:
        for _ in range(100):
            if (ns.get_connection("held").get("status") or {}).get("lastTestedAt"):
                break
            await asyncio.sleep(0.05)
        obj = ns.get_connection("held")
        assert obj["status"]["reason"] == "SecretNotFound"
        assert sorted(_types(obj)) == ["DeletionBlocked", "Ready", "Reconciling", "Stalled"]
        assert writer.conflicts == (0 if shared else 1)
        controller.observe_connection(obj, "MODIFIED")
        await _settle(controller)
        assert controller.writes == 1  # nothing was dropped, nothing is put back
    finally:
        await scheduler.stop()
        await controller.stop()
