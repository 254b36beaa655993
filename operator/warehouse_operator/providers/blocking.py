"""One way to run a blocking driver's calls: a bounded pool of threads, a deadline per call.

The Snowflake connector and Google's client libraries block. Their calls run here, never on the
event loop, on at most ``max_workers`` threads per provider. A call that is still running when
its deadline passes (or when its test is cancelled) cannot always be interrupted: it keeps its
thread until the driver's own timeouts end it, and is *abandoned* meanwhile (a result that
comes too late is handed to ``cleanup``, so a late connection is closed). A new call waits for
a free thread until its deadline; when every thread is held by an abandoned call it fails at
once, instead of queueing behind servers that never answered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from warehouse_operator.models import ProbeFailure, Reason

T = TypeVar("T")

OVERRUN = "no answer within the test's timeout"

# A test that gets no thread is failed as ProviderError, not Timeout. Its server was never
# contacted: Timeout ("no answer within testTimeout") would send the person to look at a
# backend that may be fine, and the scheduler would move the connection to the lane kept for
# slow backends. The message says what holds the threads; the test is retried with backoff.
NO_THREAD = Reason.PROVIDER_ERROR


@dataclass(frozen=True)
class Deadline:
    """The moment (``time.monotonic()``) a test's blocking calls must be done by."""

    at: float

    @classmethod
    def within(cls, timeout: float) -> Deadline:
        """A little before the caller's own ``timeout``, so that a hang is reported by the
        provider, with the stage and the host that did not answer."""
        return cls(time.monotonic() + max(timeout - min(0.25, timeout / 10), 0.001))

    def remaining(self) -> float:
        return self.at - time.monotonic()


class _Call:
    __slots__ = ("abandoned", "finished")

    def __init__(self) -> None:
        self.finished = False
        self.abandoned = False


class BlockingCallRunner(Generic[T]):
    """Runs blocking calls on at most ``max_workers`` threads, without ever queueing forever.

    ``label`` names the provider in messages ("all 16 Snowflake worker threads ...").
    """

    def __init__(self, max_workers: int, name: str, label: str = "") -> None:
        self.max_workers = max_workers
        self.label = label
        self._name = name
        self._lock = threading.Lock()
        self._busy = 0
        self._abandoned = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    @property
    def abandoned(self) -> int:
        with self._lock:
            return self._abandoned

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix=self._name
                )
            return self._pool

    def _thread(self) -> str:
        return f"{self.label} worker thread" if self.label else "worker thread"

    async def _reserve(self, deadline: float) -> None:
        while True:
            with self._lock:
                if self._busy < self.max_workers:
                    self._busy += 1
                    return
                stuck = self._abandoned
            if stuck >= self.max_workers:
                raise ProbeFailure(
                    NO_THREAD,
                    f"the test was not started: all {self.max_workers} {self._thread()}s are still "
                    "held by earlier tests whose servers never answered",
                )
            if time.monotonic() >= deadline:
                raise ProbeFailure(
                    NO_THREAD,
                    f"the test was not started: no free {self._thread()} within the test's "
                    f"timeout ({self.max_workers} busy)",
                )
            await asyncio.sleep(0.02)

    def _finish(self, call: _Call) -> bool:
        """Release the call's thread; True when nobody waits for its result any more."""
        with self._lock:
            call.finished = True
            self._busy -= 1
            if call.abandoned:
                self._abandoned -= 1
            return call.abandoned

    async def run(
        self,
        fn: Callable[[], T],
        *,
        deadline: float,
        overrun: str = OVERRUN,
        cleanup: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``fn`` on a worker thread and return its result (or raise its exception).

        When ``deadline`` passes first, the call is abandoned and ProbeFailure(Timeout,
        ``overrun``) is raised; ``cleanup`` gets the result should it come later.
        """
        if time.monotonic() >= deadline:
            raise ProbeFailure(Reason.TIMEOUT, overrun)
        await self._reserve(deadline)
        call = _Call()

        def work() -> T:
            try:
                result = fn()
            except BaseException:
                self._finish(call)
                raise
            if self._finish(call) and cleanup is not None:
                _quietly(cleanup, result)
            return result

        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        try:
            job = self._executor().submit(work)
        except BaseException:
            self._finish(call)
            raise

        def deliver(done: concurrent.futures.Future[T]) -> None:
            if waiter.done():
                return
            error = done.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(done.result())

        def hand_over(done: concurrent.futures.Future[T]) -> None:
            # the loop may be gone when an abandoned call ends: nobody is waiting then
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, done)

        job.add_done_callback(hand_over)
        try:
            finished, _ = await asyncio.wait({waiter}, timeout=deadline - time.monotonic())
        except asyncio.CancelledError:
            self._abandon(call, job, waiter, cleanup)
            raise
        if not finished:
            self._abandon(call, job, waiter, cleanup)
            raise ProbeFailure(Reason.TIMEOUT, overrun)
        return waiter.result()

    def _abandon(
        self,
        call: _Call,
        job: concurrent.futures.Future[T],
        waiter: asyncio.Future[T],
        cleanup: Callable[[T], None] | None,
    ) -> None:
        """Nobody waits for the call any more: count it, and clean up what it returns."""
        waiter.cancel()
        with self._lock:
            finished_first = call.finished
            if not finished_first:
                call.abandoned = True
                self._abandoned += 1
        if finished_first and cleanup is not None:
            # it ended just as its waiter gave up: its result is not left open
            job.add_done_callback(functools.partial(_cleanup_result, cleanup))

    def detach(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the background (closing a connection); nobody waits for it."""
        call = _Call()
        with self._lock:
            self._busy += 1

        def work() -> None:
            try:
                _quietly(lambda _: fn(), None)
            finally:
                self._finish(call)

        try:
            self._executor().submit(work)
        except RuntimeError:  # interpreter shutting down
            self._finish(call)


def _quietly(fn: Callable[[Any], object], arg: Any) -> None:
    try:
        fn(arg)
    except Exception:  # cleanup of a test nobody waits for: nothing useful to do with errors
        return


def _cleanup_result(cleanup: Callable[[Any], None], done: concurrent.futures.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is None:
        _quietly(cleanup, done.result())
