"""The elector in-process, against the API emulator: lease loss, API outages, stolen leases."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from tests.support.kube_cluster import Namespace
from tests.support.kubeapi import KubeAPIServer
from warehouse_operator.kube import KubeClient
from warehouse_operator.leader import (
    LeaderElector,
    LeaderTimings,
    LeaseRecord,
    make_identity,
    micro_time,
)

TIMINGS = LeaderTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.25)


class Replica:
    """One elector and what a scheduler would see of it: an 'active' flag and its transitions."""

    def __init__(self, api: KubeClient, namespace: str, name: str = "lease") -> None:
        self.active = asyncio.Event()
        self.changes: list[tuple[float, str]] = []
        self.elector = LeaderElector(
            api,
            namespace=namespace,
            name=name,
            identity=make_identity("pod"),
            timings=TIMINGS,
            on_started_leading=self._started,
            on_stopped_leading=self._stopped,
        )

    def _started(self) -> None:
        self.active.set()
        self.changes.append((time.monotonic(), "started"))

    def _stopped(self) -> None:
        self.active.clear()
        self.changes.append((time.monotonic(), "stopped"))


async def _until(predicate: object, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def replicas(api: KubeClient, ns: Namespace) -> AsyncIterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        with contextlib.suppress(Exception):
            await replica.elector.stop()


async def test_exactly_one_leader_and_a_crashed_one_is_replaced_after_the_lease_duration(
    api: KubeClient, ns: Namespace, replicas: list[Replica]
) -> None:
    a, b = Replica(api, ns.name), Replica(api, ns.name)
    replicas += [a, b]
    crashed = asyncio.create_task(a.elector.run())  # run() without stop(): a crash, no release
    await _until(a.active.is_set, 5)
    b.elector.start()

    both = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        both += a.active.is_set() and b.active.is_set()
        await asyncio.sleep(0.01)
    assert both == 0
    assert a.active.is_set()
    assert not b.active.is_set()

    crashed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await crashed
    gone = time.monotonic()
    await _until(b.active.is_set, 10)
    waited = time.monotonic() - gone
    # a follower waits a full lease duration of silence (on its own clock) before taking over
    assert (
        TIMINGS.lease_duration - 0.5
        <= waited
        <= TIMINGS.lease_duration + 2 * TIMINGS.retry_period + 1
    )


async def test_leader_steps_down_within_the_renew_deadline_when_the_api_is_gone(
    api: KubeClient, ns: Namespace, kubeapi: KubeAPIServer, replicas: list[Replica]
) -> None:
    a = Replica(api, ns.name)
    replicas.append(a)
    a.elector.start()
    await _until(a.active.is_set, 5)
    kubeapi.stop()
    try:
        outage = time.monotonic()
        await _until(lambda: not a.active.is_set(), 10)
        stepped_down = time.monotonic() - outage
    finally:
        kubeapi.start()
    # it stops testing before anyone else could take the lease (renew deadline < lease duration)
    assert stepped_down <= TIMINGS.renew_deadline + 0.9
    assert stepped_down < TIMINGS.lease_duration
    # and leads again once the API is back (the Lease still names it)
    await _until(a.active.is_set, 10)
    assert [what for _, what in a.changes] == ["started", "stopped", "started"]


async def test_leader_stops_at_once_when_another_holder_takes_the_lease(
    api: KubeClient, ns: Namespace, replicas: list[Replica]
) -> None:
    a = Replica(api, ns.name)
    replicas.append(a)
    a.elector.start()
    await _until(a.active.is_set, 5)

    # someone else writes the Lease (e.g. a replica that saw it expire during a partition)
    path = a.elector.path
    lease = await api.get_object(path)
    now = micro_time(datetime.now(UTC))
    intruder = LeaseRecord("intruder", 30, now, now, 7)
    lease["spec"] = intruder.to_spec()
    await api.replace_object(path, lease)
    stolen = time.monotonic()
    await _until(lambda: not a.active.is_set(), 5)
    lost_after = time.monotonic() - stolen
    assert lost_after <= TIMINGS.retry_period + 1.0
    assert a.elector.is_leader is False

    # and it does not take the lease back while the intruder's is valid
    await asyncio.sleep(1.0)
    assert not a.active.is_set()
    current = await api.get_object(path)
    assert current["spec"]["holderIdentity"] == "intruder"


async def test_release_hands_over_within_a_retry_period(
    api: KubeClient, ns: Namespace, replicas: list[Replica]
) -> None:
    a, b = Replica(api, ns.name), Replica(api, ns.name)
    replicas += [a, b]
    a.elector.start()
    await _until(a.active.is_set, 5)
    b.elector.start()
    await asyncio.sleep(0.5)
    assert not b.active.is_set()

    released = time.monotonic()
    await a.elector.stop()
    assert not a.active.is_set()
    await _until(b.active.is_set, 5)
    assert time.monotonic() - released <= TIMINGS.retry_period * 1.2 + 1.0
    lease = await api.get_object(b.elector.path)
    assert lease["spec"]["holderIdentity"] == b.elector.identity
    assert lease["spec"]["leaseTransitions"] == 1
