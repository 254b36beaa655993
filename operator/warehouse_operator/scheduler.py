"""When each connection is tested: one operator-wide scheduler.

Fed by the kopf handlers with what the watches see, it holds each connection's next due time
(interval with jitter, or capped exponential backoff while failing), runs tests on a fixed pool
of workers (the global concurrency limit), puts new and changed connections ahead of routine
re-tests, and writes each result with one status PATCH. No per-object tasks, no finalizers.

The parts: ``workqueue`` (queue, timers, gates, workers), ``connection`` (what is held of each
connection), ``secretcache`` (referenced Secrets), ``reconcile`` (one test and its write) and
``statuswriter`` (the status, shared with the other writers of it). This module joins them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from warehouse_operator import metrics
from warehouse_operator.connection import Key, Seen, Tracked, spec_view
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.probe import EgressPolicy, warm_up
from warehouse_operator.reconcile import BACKOFF_BASE, JITTER, Reconciler, backoff_delay, jittered
from warehouse_operator.secretcache import SecretCache
from warehouse_operator.statuswriter import StatusWriter
from warehouse_operator.tasks import cancel_and_wait_all
from warehouse_operator.workqueue import Gate, WorkQueue

__all__ = ["BACKOFF_BASE", "JITTER", "ROUTINE", "URGENT", "Scheduler", "backoff_delay", "jittered"]

logger = logging.getLogger(__name__)

URGENT = 0
ROUTINE = 1
SLOW_LANE = "slow-lane"


def destination_gate(destination: str) -> str:
    return "dest:" + destination


class Scheduler:
    def __init__(
        self,
        api: KubeApi,
        *,
        max_concurrent: int = 50,
        default_interval: float = 300.0,
        policy: EgressPolicy | None = None,
        startup_spread: float = 30.0,
        max_per_destination: int | None = None,
        max_slow: int | None = None,
        status_writer: StatusWriter | None = None,
    ) -> None:
        self.api = api
        self.max_concurrent = max_concurrent
        self.default_interval = default_interval
        self.policy = policy or EgressPolicy()
        self.startup_spread = startup_spread
        # Gates keep one slow backend from taking every worker: at most ``max_per_destination``
        # tests talk to one backend at once, and tests whose last run timed out share a slow
        # lane of ``max_slow`` workers.
        self.max_per_destination = max_per_destination or max(1, max_concurrent // 2)
        self.max_slow = max_slow or max(1, max_concurrent // 5)
        self.tracked: dict[Key, Tracked] = {}
        self.status_writer = status_writer or StatusWriter(api)
        self.secrets = SecretCache(api, self._retest)
        # The worker and the gates are held while the backend is being talked to, not while the
        # result is written: a slow API must not make tests wait (it measured twice the test's
        # own latency in a burst). The connection itself stays in the queue's hands until its
        # result is written, so it is never tested twice at once.
        self.queue: WorkQueue[Key] = WorkQueue(
            self._handle,
            workers=max_concurrent,
            gates=self._gates,
            wanted=self._wanted,
            rerun_priority=URGENT,
            busy_changed=metrics.TESTS_IN_PROGRESS.inc,
            name="whc",
        )
        self.reconciler = Reconciler(
            api,
            self.status_writer,
            self.secrets,
            policy=self.policy,
            current=lambda t: self.tracked.get(t.key) is t,
            active=self.queue.active,
        )
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def active(self) -> asyncio.Event:
        """Set while this replica may test (it leads)."""
        return self.queue.active

    @property
    def running_tests(self) -> int:
        return self.queue.busy

    @property
    def peak_running_tests(self) -> int:
        return self.queue.peak_busy

    @property
    def tests_done(self) -> int:
        return self.reconciler.tests_done

    def start(self, *, active: bool = True) -> None:
        self.queue.start(active=active)

    def resume(self) -> None:
        """Start testing (this replica leads)."""
        self.queue.resume()

    def pause(self) -> None:
        """Stop testing at once (the lease is lost): running tests are cancelled, unwritten,
        and queued again for whenever this replica leads again."""
        self.queue.pause()

    async def stop(self) -> None:
        await cancel_and_wait_all(self._background)
        await self.secrets.stop()
        await self.queue.stop()

    # --- what the watches see -------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any], event_type: str | None = None) -> None:
        """A WarehouseConnection was listed, added or modified (or deleted)."""
        seen = Seen.from_body(body)
        key = seen.key
        if event_type == "DELETED":
            self.forget(key)
            return
        t = self.tracked.get(key)
        if t is not None and t.uid is not None and seen.uid is not None and t.uid != seen.uid:
            self.forget(key)  # deleted and created again under the same name
            t = None
        # a follower writes nothing: what the leader wrote is the truth it must take over
        following = not self.active.is_set()
        self.status_writer.observe(body, trusted=t is None or following)
        status = self.status_writer.status(key)
        if t is None:
            self._track(seen, status)
            return
        if following and isinstance(body.get("status"), Mapping):
            t.take_status(status)
        changed = seen.spec_hash != t.spec_hash
        requested = (
            seen.test_request is not None
            and seen.test_request != t.handled_request
            and seen.test_request != t.test_request
        )
        t.uid = seen.uid or t.uid
        t.generation = seen.generation
        t.test_request = seen.test_request
        if changed:
            self._unref(t)
            t.spec, t.spec_hash = seen.spec, seen.spec_hash
            t.view = spec_view(seen.spec, self.default_interval)
            self._ref(t)
        if t.suspended:
            self.queue.cancel(key)
            return
        if changed or requested:
            self.queue.add(key, URGENT)

    def _track(self, seen: Seen, status: Mapping[str, Any]) -> None:
        t = Tracked(
            key=seen.key,
            uid=seen.uid,
            spec=seen.spec,
            spec_hash=seen.spec_hash,
            generation=seen.generation,
            view=spec_view(seen.spec, self.default_interval),
            test_request=seen.test_request,
            handled_request=None,
        )
        t.take_status(status)
        self.tracked[t.key] = t
        self._ref(t)
        if t.suspended:
            return
        warm_up(t.provider)  # import its driver now, in a thread, if not yet imported
        if not status:
            t.pending_write = asyncio.create_task(self.reconciler.write_pending(t))
            self._background.add(t.pending_write)
            t.pending_write.add_done_callback(self._background.discard)
        if t.status_is_current(status):
            # known and tested before (an operator restart): spread re-tests out, no stampede
            spread = min(self.startup_spread, t.interval) if t.interval > 0 else self.startup_spread
            self.queue.add_after(t.key, random.uniform(0, spread), ROUTINE)
        else:
            self.queue.add(t.key, URGENT)

    def forget(self, key: Key) -> None:
        t = self.tracked.pop(key, None)
        self.status_writer.forget(key)
        self.queue.forget(key)
        if t is not None:
            self._unref(t)
            metrics.forget_connection(key[0], key[1], t.provider)

    def observe_secret(self, namespace: str, name: str, data: Mapping[str, Any] | None) -> None:
        """A Secret was listed, added, modified (``data``) or deleted (None)."""
        self.secrets.observe(namespace, name, data)

    def secrets_listed(self, items: list[tuple[str, str, str]]) -> None:
        """A complete listing of Secrets' (namespace, name, resourceVersion)."""
        self.secrets.listed(items)

    def secret_changed(self, kind: str, namespace: str, name: str, version: str) -> None:
        self.secrets.changed(kind, namespace, name, version)

    def _retest(self, users: Iterable[Key]) -> None:
        """Test now every connection that uses a Secret that changed."""
        for key in users:
            t = self.tracked.get(key)
            if t is not None and not t.suspended:
                self.queue.add(key, URGENT)

    def _ref(self, t: Tracked) -> None:
        if t.secret_name:
            self.secrets.ref((t.key[0], t.secret_name), t.key)

    def _unref(self, t: Tracked) -> None:
        if t.secret_name:
            self.secrets.unref((t.key[0], t.secret_name), t.key)

    # --- the work -------------------------------------------------------------------------------

    def _wanted(self, key: Key) -> bool:
        t = self.tracked.get(key)
        return t is not None and not t.suspended

    def _gates(self, key: Key) -> Sequence[Gate]:
        t = self.tracked.get(key)
        gates: list[Gate] = []
        if t is not None and t.destination:
            gates.append((destination_gate(t.destination), self.max_per_destination))
        if t is not None and t.slow:
            gates.append((SLOW_LANE, self.max_slow))
        return gates

    async def _handle(self, key: Key, release: Callable[[], None]) -> None:
        t = self.tracked.get(key)
        if t is None:
            return
        try:
            outcome = await self.reconciler.test(t, release)
        except Exception as exc:
            # never lose a connection to a bug or an API outage: try again later
            logger.error("testing %s/%s failed unexpectedly; retrying later", *key, exc_info=exc)
            if self.tracked.get(key) is t:
                self.queue.add_after(key, jittered(BACKOFF_BASE), ROUTINE)
            return
        if outcome.gone:
            if self.tracked.get(key) is t:
                self.forget(key)  # the object is gone
            return
        if outcome.spec_changed:
            self.queue.add(key, URGENT)  # after this run: it is still being handled
        if outcome.next_in is not None:
            self.queue.add_after(key, outcome.next_in, ROUTINE)
