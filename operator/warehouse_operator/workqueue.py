"""A work queue apart from the work: keys, priorities, timers, gates and a fixed pool of workers.

What is queued is a key; what is done for a key is the handler's business. The queue promises:

- a key is handled by one worker at a time; a key added while it is being handled is *dirty*
  and handled again, at the first priority, once the current run ends ("dirty while processing");
- lower priority numbers go first; adding a queued key again can only raise its priority;
- ``add_after`` holds a key back until its time (the latest call wins; ``add`` and ``cancel``
  drop it);
- gates: a key may name gates, each with a limit of keys handled at once; a key that meets a
  full gate is parked (no worker waits) and goes back to the ready queue, with its priority,
  when that gate frees;
- a handler may ``release`` its worker and gates before it ends (the rest of its run, e.g. a
  slow write, then holds only the key);
- ``pause`` cancels every run (their keys are handled again after ``resume``); ``stop`` ends all.

It knows nothing else of the operator, so its rules can be read and tested on their own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

Release = Callable[[], None]
Handler = Callable[[K, Release], Awaitable[None]]
Gate = tuple[str, int]  # (name, limit)


@dataclass(eq=False)
class _Entry:
    queued: bool = False
    priority: int = 0
    processing: bool = False
    dirty: bool = False
    due: float | None = None


def _no_gates(_: object) -> Sequence[Gate]:
    return ()


def _always(_: object) -> bool:
    return True


class WorkQueue(Generic[K]):
    def __init__(
        self,
        handler: Handler[K],
        *,
        workers: int,
        gates: Callable[[K], Sequence[Gate]] = _no_gates,
        wanted: Callable[[K], bool] = _always,
        rerun_priority: int = 0,
        busy_changed: Callable[[int], None] | None = None,
        name: str = "work",
    ) -> None:
        """``wanted(key)`` is asked before a key is handled (False: drop it); ``busy_changed``
        hears +1 / -1 as workers take and free keys."""
        self._handler = handler
        self._workers = workers
        self._gates_of = gates
        self._wanted = wanted
        self._rerun_priority = rerun_priority
        self._busy_changed = busy_changed
        self._name = name
        self._entries: dict[K, _Entry] = {}
        self._ready: asyncio.PriorityQueue[tuple[int, int, K]] = asyncio.PriorityQueue()
        self._timers: list[tuple[float, int, int, K]] = []  # (due, seq, priority, key)
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._gate_running: dict[str, int] = {}
        self._parked: dict[str, collections.deque[tuple[int, K]]] = {}
        self._runs: dict[K, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.active = asyncio.Event()
        self.busy = 0
        self.peak_busy = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, *, active: bool = True) -> None:
        if active:
            self.active.set()
        self._tasks.append(asyncio.create_task(self._dispatch(), name=f"{self._name}-timers"))
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"{self._name}-worker-{i}"))

    def resume(self) -> None:
        self.active.set()

    def pause(self) -> None:
        """Handle nothing more until ``resume``; runs under way are cancelled and rerun later."""
        self.active.clear()
        for task in list(self._runs.values()):
            task.cancel()

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._runs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # --- keys ---------------------------------------------------------------------------------

    def add(self, key: K, priority: int) -> None:
        """Handle ``key`` soon (again after its current run, if it is being handled)."""
        entry = self._entries.setdefault(key, _Entry())
        if entry.processing:
            entry.dirty = True
            return
        entry.due = None
        if entry.queued:
            if priority < entry.priority:
                entry.priority = priority
                self._ready.put_nowait((priority, next(self._seq), key))  # the old one is stale
            return
        entry.queued, entry.priority = True, priority
        self._ready.put_nowait((priority, next(self._seq), key))

    def add_after(self, key: K, delay: float, priority: int) -> None:
        entry = self._entries.setdefault(key, _Entry())
        due = time.monotonic() + max(0.0, delay)
        entry.due = due
        heapq.heappush(self._timers, (due, next(self._seq), priority, key))
        if self._timers[0][3] == key:
            self._wake.set()

    def cancel(self, key: K) -> None:
        """Drop the key's timer and its place in the ready queue (a run under way goes on)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.due = None
            entry.queued = False
            entry.dirty = False

    def forget(self, key: K) -> None:
        """Forget the key: a run under way ends without a rerun; a later ``add`` starts afresh."""
        self._entries.pop(key, None)

    def processing(self, key: K) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.processing

    def dirty(self, key: K) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.dirty

    def gate_load(self, gate: str) -> int:
        return self._gate_running.get(gate, 0)

    # --- the machinery --------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            await self.active.wait()
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                due, _, priority, key = heapq.heappop(self._timers)
                entry = self._entries.get(key)
                if entry is not None and entry.due == due and self._wanted(key):
                    entry.due = None
                    self.add(key, priority)
            timeout = self._timers[0][0] - now if self._timers else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _try_enter(self, key: K, priority: int) -> list[str] | None:
        """Take a place at every gate of ``key``, or park it at the first full one."""
        gates = list(self._gates_of(key))
        for gate, limit in gates:
            if self._gate_running.get(gate, 0) >= limit:
                self._parked.setdefault(gate, collections.deque()).append((priority, key))
                return None
        for gate, _ in gates:
            self._gate_running[gate] = self._gate_running.get(gate, 0) + 1
        return [gate for gate, _ in gates]

    def _leave(self, gates: list[str]) -> None:
        for gate in gates:
            left = self._gate_running.get(gate, 1) - 1
            if left > 0:
                self._gate_running[gate] = left
            else:
                self._gate_running.pop(gate, None)
            parked = self._parked.get(gate)
            if parked:
                priority, key = parked.popleft()
                if not parked:
                    del self._parked[gate]
                self._ready.put_nowait((priority, next(self._seq), key))

    def _busy(self, delta: int) -> None:
        self.busy += delta
        self.peak_busy = max(self.peak_busy, self.busy)
        if self._busy_changed is not None:
            self._busy_changed(delta)

    async def _work(self) -> None:
        while True:
            priority, _, key = await self._ready.get()
            await self.active.wait()
            entry = self._entries.get(key)
            if entry is None or not entry.queued or entry.priority != priority:
                continue  # a stale entry: dropped, or queued again at a higher priority
            if not self._wanted(key):
                entry.queued = False
                continue
            entered = self._try_enter(key, priority)
            if entered is None:
                continue  # parked: it comes back when its gate frees
            entry.queued = False
            entry.processing = True
            self._busy(+1)
            released = asyncio.Event()
            task = asyncio.create_task(self._run(key, entry, released.set))
            waiter = asyncio.create_task(released.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                task.cancel()
                raise
            finally:
                waiter.cancel()
                self._busy(-1)
                self._leave(entered)

    async def _run(self, key: K, entry: _Entry, release: Release) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._runs[key] = task
        cancelled = False
        try:
            await self._handler(key, release)
        except asyncio.CancelledError:
            cancelled = True  # paused mid-run: handle it again later
        except Exception:
            logger.exception("%s: handling %r failed", self._name, key)
        finally:
            if self._runs.get(key) is task:
                del self._runs[key]
            entry.processing = False
            if cancelled:
                entry.dirty = True
            if entry.dirty and self._entries.get(key) is entry:
                entry.dirty = False
                self.add(key, self._rerun_priority)
