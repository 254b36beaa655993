"""The bounded worker pool blocking drivers (Snowflake's connector, Google's clients) run on.

Real threads blocked on events stand in for logins that hang: what is tested is the pool's
accounting (busy, abandoned), that it never queues forever, and that results nobody waits
for are cleaned up.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from warehouse_operator.models import ProbeFailure, Reason
from warehouse_operator.providers import REGISTRY
from warehouse_operator.providers.blocking import BlockingCallRunner, Deadline


def far() -> float:
    return time.monotonic() + 30


async def settle(runner: BlockingCallRunner[object], busy: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while runner.busy != busy and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert runner.busy == busy


async def test_runs_off_the_event_loop_and_returns_the_result() -> None:
    runner: BlockingCallRunner[object] = BlockingCallRunner(2, "t-result")
    loop_thread = threading.get_ident()
    result = await runner.run(lambda: threading.get_ident(), deadline=far())
    assert result != loop_thread
    assert (runner.busy, runner.abandoned) == (0, 0)


async def test_exceptions_propagate_and_release_the_thread() -> None:
    runner: BlockingCallRunner[object] = BlockingCallRunner(1, "t-error")

    def boom() -> object:
        raise ValueError("driver said no")

    with pytest.raises(ValueError, match="driver said no"):
        await runner.run(boom, deadline=far())
    assert runner.busy == 0


async def test_hung_calls_are_abandoned_then_new_calls_fail_fast_until_they_end() -> None:
    runner: BlockingCallRunner[object] = BlockingCallRunner(1, "t-hung", "Snowflake")
    release = threading.Event()
    cleaned: list[object] = []

    def hung_login() -> object:
        release.wait(10)
        return "late connection"

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            runner.run(hung_login, deadline=far(), cleanup=cleaned.append), timeout=0.1
        )
    assert (runner.busy, runner.abandoned) == (1, 1)

    started = time.monotonic()
    with pytest.raises(ProbeFailure) as caught:
        await runner.run(lambda: "never runs", deadline=far())
    assert time.monotonic() - started < 0.5
    assert caught.value.reason is Reason.PROVIDER_ERROR  # nothing was asked of any server
    assert "all 1 Snowflake worker threads are still held" in caught.value.message

    release.set()
    await settle(runner, 0)
    assert runner.abandoned == 0
    assert cleaned == ["late connection"]  # the connection nobody took is closed
    assert await runner.run(lambda: "fresh", deadline=far()) == "fresh"


async def test_a_busy_pool_is_waited_for_only_until_the_deadline() -> None:
    runner: BlockingCallRunner[object] = BlockingCallRunner(1, "t-busy", "Snowflake")
    release = threading.Event()
    first = asyncio.create_task(runner.run(lambda: release.wait(10), deadline=far()))
    await settle(runner, 1)

    started = time.monotonic()
    with pytest.raises(ProbeFailure) as caught:
        await runner.run(lambda: "late", deadline=time.monotonic() + 0.2)
    waited = time.monotonic() - started
    assert 0.15 < waited < 1.0
    assert caught.value.reason is Reason.PROVIDER_ERROR
    assert "no free Snowflake worker thread" in caught.value.message

    # a call that can wait gets the thread as soon as it is free
    second = asyncio.create_task(runner.run(lambda: "second", deadline=far()))
    await asyncio.sleep(0.05)
    release.set()
    assert await first is True
    assert await second == "second"
    assert (runner.busy, runner.abandoned) == (0, 0)


async def test_cleanup_runs_when_the_call_ends_just_as_its_waiter_gives_up() -> None:
    runner: BlockingCallRunner[object] = BlockingCallRunner(1, "t-race")
    cleaned: list[object] = []
    started, go = threading.Event(), threading.Event()

    def login() -> object:
        started.set()
        go.wait(5)
        return "conn"

    task = asyncio.create_task(runner.run(login, deadline=far(), cleanup=cleaned.append))
    while not started.is_set():
        await asyncio.sleep(0.001)
    go.set()
    # Hold the event loop while the call finishes: its result is queued for the loop, and
    # the cancel below arrives before it is delivered.
    time.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["conn"]  # the finished call's connection is not left open
    assert (runner.busy, runner.abandoned) == (0, 0)


async def test_detached_work_runs_and_releases() -> None:
    runner: BlockingCallRunner[object] = BlockingCallRunner(1, "t-detach")
    done = threading.Event()
    runner.detach(done.set)
    assert done.wait(5)
    await settle(runner, 0)

    def fails() -> None:
        raise OSError("close failed")

    runner.detach(fails)  # errors of background cleanup are swallowed
    await settle(runner, 0)


async def test_a_call_that_overruns_its_deadline_is_abandoned_and_timed_out() -> None:
    runner: BlockingCallRunner[object] = BlockingCallRunner(1, "t-overrun")
    release = threading.Event()
    cleaned: list[object] = []

    def hung() -> object:
        release.wait(10)
        return "late"

    started = time.monotonic()
    with pytest.raises(ProbeFailure) as caught:
        await runner.run(
            hung,
            deadline=time.monotonic() + 0.2,
            overrun="db:1 did not answer",
            cleanup=cleaned.append,
        )
    assert 0.15 < time.monotonic() - started < 1.0
    assert (caught.value.reason, caught.value.message) == (Reason.TIMEOUT, "db:1 did not answer")
    assert (runner.busy, runner.abandoned) == (1, 1)
    release.set()
    await settle(runner, 0)
    assert cleaned == ["late"]


async def test_nothing_starts_once_the_deadline_has_passed() -> None:
    runner: BlockingCallRunner[object] = BlockingCallRunner(1, "t-late")
    ran: list[bool] = []
    with pytest.raises(ProbeFailure) as caught:
        await runner.run(lambda: ran.append(True), deadline=time.monotonic() - 0.1)
    assert caught.value.reason is Reason.TIMEOUT
    assert ran == []
    assert runner.busy == 0


@pytest.mark.parametrize("provider", ["snowflake", "bigquery"])
async def test_every_blocking_provider_fails_a_test_alike_when_its_threads_are_held(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same pool, same outcome: when abandoned calls hold every thread, ProviderError at once."""
    shared = REGISTRY[provider].runner  # type: ignore[attr-defined]
    runner: BlockingCallRunner[object] = BlockingCallRunner(1, "t-provider", shared.label)
    monkeypatch.setattr(REGISTRY[provider], "runner", runner)
    assert isinstance(shared, BlockingCallRunner)
    release = threading.Event()
    with pytest.raises(ProbeFailure):
        await runner.run(lambda: release.wait(10), deadline=time.monotonic() + 0.05)
    with pytest.raises(ProbeFailure) as caught:
        await REGISTRY[provider].runner.run(lambda: "never runs", deadline=far())  # type: ignore[attr-defined]
    release.set()
    assert caught.value.reason is Reason.PROVIDER_ERROR
    label = {"snowflake": "Snowflake", "bigquery": "BigQuery"}[provider]
    assert f"all 1 {label} worker threads are still held" in caught.value.message
    await settle(runner, 0)


def test_a_deadline_ends_a_little_before_the_callers_timeout() -> None:
    before = time.monotonic()
    assert 1.79 < Deadline.within(2).at - before <= 1.81  # 10 % of it, up to 0.25 s
    assert 0.08 < Deadline.within(0.1).remaining() <= 0.09
    assert Deadline.within(0).remaining() <= 0.001
