"""When each connection is tested: one operator-wide scheduler.

Fed by the kopf handlers with what the watches see, it holds each connection's next due time
(interval with jitter, or capped exponential backoff while failing), runs tests on a fixed pool
of workers (the global concurrency limit), puts new and changed connections ahead of routine
re-tests, and writes each result with one status PATCH. No per-object tasks, no finalizers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import heapq
import itertools
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from warehouse_operator import metrics
from warehouse_operator.kube.errors import Forbidden, describe
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.models import TEST_REQUESTED_ANNOTATION, ProbeResult, Reason, parse_duration
from warehouse_operator.probe import EgressPolicy, run_test, warm_up
from warehouse_operator.status import Event, compute_status, merge_patch, pending_status

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)

URGENT = 0
ROUTINE = 1
BACKOFF_BASE = 5.0
JITTER = 0.1
_MISSING = object()


class SecretUnreadable(Exception):
    pass


@dataclass
class Tracked:
    key: Key
    uid: str | None
    spec: Any
    spec_hash: str
    generation: int | None
    secret_name: str | None
    provider: str | None
    destination: str
    test_request: str | None
    handled_request: str | None
    status: dict[str, Any]
    suspended: bool
    interval: float
    due: float | None = None
    queued: bool = False
    running: bool = False
    rerun: bool = False
    failures: int = 0
    slow: bool = False  # the last test timed out: it runs in the slow lane
    extra: dict[str, Any] = field(default_factory=dict)


def _spec_hash(spec: Any) -> str:
    text = json.dumps(spec, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class SpecView:
    """What scheduling needs from a spec, read leniently: invalid specs are still tested."""

    secret_name: str | None
    provider: str | None
    suspended: bool
    interval: float
    destination: str


def _spec_view(spec: Any, default_interval: float) -> SpecView:
    if not isinstance(spec, Mapping):
        return SpecView(None, None, False, default_interval, "")
    ref = spec.get("credentialsSecretRef")
    secret = _str_or_none(ref.get("name")) if isinstance(ref, Mapping) else None
    provider = _str_or_none(spec.get("provider"))
    if provider == "postgresql":
        provider = "postgres"
    interval = default_interval
    raw_interval = spec.get("testInterval")
    if isinstance(raw_interval, str):
        with contextlib.suppress(ValueError):
            interval = parse_duration(raw_interval)
    return SpecView(
        secret, provider, spec.get("suspend") is True, interval, _destination(spec, provider)
    )


def _destination(spec: Mapping[str, Any], provider: str | None) -> str:
    """Which backend a test talks to, so that one slow backend cannot take every worker."""
    block = spec.get(provider or "")
    if not isinstance(block, Mapping):
        return ""
    if provider == "postgres":
        return f"postgres://{block.get('host')}:{block.get('port', 5432)}"
    if provider == "snowflake":
        return f"snowflake://{block.get('endpoint') or block.get('account')}"
    if provider == "bigquery":
        return f"bigquery://{block.get('endpoint') or 'default'}"
    return ""


def backoff_delay(failures: int, interval: float) -> float:
    """Exponential backoff after ``failures`` consecutive failures, capped by the interval."""
    return float(min(interval, BACKOFF_BASE * (2 ** max(0, min(failures, 20) - 1))))


def jittered(delay: float) -> float:
    return delay * (1 + random.uniform(-JITTER, JITTER))


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
    ) -> None:
        self.api = api
        self.max_concurrent = max_concurrent
        self.default_interval = default_interval
        self.policy = policy or EgressPolicy()
        self.startup_spread = startup_spread
        # Gates keep one slow backend from taking every worker: at most ``max_per_destination``
        # tests talk to one backend at once, and tests whose last run timed out share a slow
        # lane of ``max_slow`` workers. A test that meets a full gate is parked (no worker
        # waits) and goes back to the ready queue, with its priority, when the gate frees.
        self.max_per_destination = max_per_destination or max(1, max_concurrent // 2)
        self.max_slow = max_slow or max(1, max_concurrent // 5)
        self._gate_running: dict[str, int] = {}
        self._parked: dict[str, collections.deque[tuple[int, Key]]] = {}
        self.tracked: dict[Key, Tracked] = {}
        self._refs: dict[Key, set[Key]] = {}  # (namespace, secret name) -> connections
        self._secrets: dict[Key, dict[str, Any] | None] = {}  # only referenced Secrets
        self._ready: asyncio.PriorityQueue[tuple[int, int, Key]] = asyncio.PriorityQueue()
        self._timers: list[tuple[float, int, Key]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending_writes = asyncio.Semaphore(8)
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._secret_versions: dict[Key, str] = {}  # referenced Secrets' last resourceVersion
        self._fetching: dict[Key, bool] = {}  # Secret reads under way (True: read again after)
        self._background: set[asyncio.Task[None]] = set()
        self.active = asyncio.Event()  # set while this replica may test (leader)
        self.running_tests = 0
        self.peak_running_tests = 0
        self.tests_done = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, *, active: bool = True) -> None:
        if active:
            self.active.set()
        self._tasks.append(asyncio.create_task(self._dispatch(), name="whc-dispatcher"))
        for i in range(self.max_concurrent):
            self._tasks.append(asyncio.create_task(self._work(), name=f"whc-worker-{i}"))

    def resume(self) -> None:
        """Start testing (this replica leads)."""
        self.active.set()

    def pause(self) -> None:
        """Stop testing at once (the lease is lost): running tests are cancelled, unwritten,
        and queued again for whenever this replica leads again."""
        self.active.clear()
        for task in list(self._running.values()):
            task.cancel()

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._background, *self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # --- what the watches see -------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any], event_type: str | None = None) -> None:
        """A WarehouseConnection was listed, added or modified (or deleted)."""
        meta = body.get("metadata") or {}
        key: Key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event_type == "DELETED":
            self.forget(key)
            return
        spec = body.get("spec")
        uid = _str_or_none(meta.get("uid"))
        generation = meta.get("generation") if isinstance(meta.get("generation"), int) else None
        annotations = meta.get("annotations") or {}
        request = (
            _str_or_none(annotations.get(TEST_REQUESTED_ANNOTATION))
            if isinstance(annotations, Mapping)
            else None
        )
        view = _spec_view(spec, self.default_interval)
        spec_hash = _spec_hash(spec)

        t = self.tracked.get(key)
        if t is not None and t.uid is not None and uid is not None and t.uid != uid:
            self.forget(key)  # deleted and created again under the same name
            t = None
        if t is None:
            status = body.get("status")
            status = dict(status) if isinstance(status, Mapping) else {}
            t = Tracked(
                key=key,
                uid=uid,
                spec=spec,
                spec_hash=spec_hash,
                generation=generation,
                secret_name=view.secret_name,
                provider=view.provider,
                destination=view.destination,
                test_request=request,
                handled_request=_str_or_none(status.get("lastHandledTestRequest")),
                status=status,
                suspended=view.suspended,
                interval=view.interval,
                failures=_int_or_zero(status.get("consecutiveFailures")),
            )
            self.tracked[key] = t
            self._ref(t)
            if t.suspended:
                return
            warm_up(t.provider)  # import its driver now, in a thread, if not yet imported
            if not t.status:
                # a new connection: say "Pending" at once, so kstatus (Flux) and Argo CD wait
                # for its first test instead of taking a status-less object as ready
                t.extra["pending_write"] = asyncio.create_task(self._write_pending(t))
            if self._status_is_current(t):
                # known and tested before (an operator restart): spread re-tests out, no stampede
                spread = (
                    min(self.startup_spread, t.interval) if t.interval > 0 else self.startup_spread
                )
                self._schedule_in(t, random.uniform(0, spread))
            else:
                self._enqueue(t, URGENT)
            return

        if not self.active.is_set():
            # a follower writes nothing: what the leader wrote is the truth it must take over
            status = body.get("status")
            if isinstance(status, Mapping):
                t.status = dict(status)
                t.handled_request = _str_or_none(status.get("lastHandledTestRequest"))
                t.failures = _int_or_zero(status.get("consecutiveFailures"))
        changed = spec_hash != t.spec_hash
        requested = (
            request is not None and request != t.handled_request and request != t.test_request
        )
        t.uid = uid or t.uid
        t.generation = generation
        t.test_request = request
        if changed:
            self._unref(t)
            t.spec, t.spec_hash = spec, spec_hash
            t.secret_name, t.provider, t.suspended = view.secret_name, view.provider, view.suspended
            t.interval, t.destination = view.interval, view.destination
            self._ref(t)
        if t.suspended:
            t.due = None  # its timer entry is now stale and will be dropped
            return
        if changed or requested:
            self._enqueue(t, URGENT)

    def forget(self, key: Key) -> None:
        t = self.tracked.pop(key, None)
        if t is not None:
            self._unref(t)
            t.due = None
            metrics.forget_connection(key[0], key[1], t.provider)

    def observe_secret(self, namespace: str, name: str, data: Mapping[str, Any] | None) -> None:
        """A Secret was listed, added, modified (``data``) or deleted (None)."""
        skey = (namespace, name)
        users = self._refs.get(skey)
        if not users:
            return  # nobody uses it: keep nothing of it in memory
        new = dict(data) if data is not None else None
        old = self._secrets.get(skey, _MISSING)
        self._secrets[skey] = new
        if old is not _MISSING and old != new:
            self._retest_users(skey)

    # Secrets are watched as metadata only: for a referenced Secret, a new resourceVersion
    # means one GET of its data; the data of Secrets nobody uses never reaches the operator.

    def secrets_listed(self, items: list[tuple[str, str, str]]) -> None:
        """A complete listing of Secrets' (namespace, name, resourceVersion)."""
        present = {(ns, name): version for ns, name, version in items}
        for skey in list(self._refs):
            if skey in present:
                self._secret_version(skey, present[skey])
            elif skey in self._secrets and self._secrets[skey] is not None:
                self._secret_versions.pop(skey, None)
                self.observe_secret(*skey, None)  # deleted while the watch was away

    def secret_changed(self, kind: str, namespace: str, name: str, version: str) -> None:
        skey = (namespace, name)
        if skey not in self._refs:
            return
        if kind == "DELETED":
            self._secret_versions.pop(skey, None)
            self.observe_secret(namespace, name, None)
        else:
            self._secret_version(skey, version)

    def _secret_version(self, skey: Key, version: str) -> None:
        if self._secret_versions.get(skey) == version:
            return
        never_read = skey not in self._secrets and skey not in self._secret_versions
        self._secret_versions[skey] = version
        if never_read:
            return  # the first test that needs it reads it
        if skey in self._fetching:
            self._fetching[skey] = True  # read it again when the read under way ends
            return
        self._fetching[skey] = False
        task = asyncio.create_task(self._refetch(skey))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refetch(self, skey: Key) -> None:
        try:
            while True:
                self._fetching[skey] = False
                try:
                    data = await self.api.get_secret_data(*skey)
                except Exception as exc:
                    # forget what we had: the next test reads it afresh
                    logger.warning(
                        "Secret %s/%s changed but could not be read: %s", *skey, _api_failure(exc)
                    )
                    self._secrets.pop(skey, None)
                    self._retest_users(skey)
                    return
                if skey in self._refs:
                    self.observe_secret(*skey, data)
                if not self._fetching.get(skey):
                    return
        finally:
            self._fetching.pop(skey, None)

    def _retest_users(self, skey: Key) -> None:
        """Test now every connection that uses this Secret."""
        for key in list(self._refs.get(skey, ())):
            t = self.tracked.get(key)
            if t is not None and not t.suspended:
                self._enqueue(t, URGENT)

    def _ref(self, t: Tracked) -> None:
        if t.secret_name:
            self._refs.setdefault((t.key[0], t.secret_name), set()).add(t.key)

    def _unref(self, t: Tracked) -> None:
        if not t.secret_name:
            return
        skey = (t.key[0], t.secret_name)
        users = self._refs.get(skey)
        if users is not None:
            users.discard(t.key)
            if not users:
                del self._refs[skey]
                self._secrets.pop(skey, None)
                self._secret_versions.pop(skey, None)

    def _status_is_current(self, t: Tracked) -> bool:
        status = t.status
        if not status.get("lastTestedAt"):
            return False
        if t.generation is not None and status.get("observedGeneration") != t.generation:
            return False
        return t.test_request is None or t.test_request == t.handled_request

    # --- queues -------------------------------------------------------------------------------

    def _enqueue(self, t: Tracked, priority: int) -> None:
        if t.running:
            t.rerun = True
            return
        t.due = None
        if t.queued:
            if priority == URGENT and t.extra.get("priority") != URGENT:
                t.extra["priority"] = URGENT
                self._ready.put_nowait(
                    (URGENT, next(self._seq), t.key)
                )  # the stale entry is skipped
            return
        t.queued = True
        t.extra["priority"] = priority
        self._ready.put_nowait((priority, next(self._seq), t.key))

    def _schedule_in(self, t: Tracked, delay: float) -> None:
        due = time.monotonic() + max(0.0, delay)
        t.due = due
        heapq.heappush(self._timers, (due, next(self._seq), t.key))
        if self._timers[0][2] == t.key:
            self._wake.set()

    async def _dispatch(self) -> None:
        while True:
            await self.active.wait()
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                due, _, key = heapq.heappop(self._timers)
                t = self.tracked.get(key)
                if t is not None and t.due == due and not t.suspended:
                    t.due = None
                    self._enqueue(t, ROUTINE)
            timeout = self._timers[0][0] - now if self._timers else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _gates(self, t: Tracked) -> list[tuple[str, int]]:
        gates = []
        if t.destination:
            gates.append(("dest:" + t.destination, self.max_per_destination))
        if t.slow:
            gates.append(("slow-lane", self.max_slow))
        return gates

    def _try_enter(self, t: Tracked, priority: int) -> list[str] | None:
        """Take a place at every gate of ``t``, or park it at the first full one."""
        gates = self._gates(t)
        for name, limit in gates:
            if self._gate_running.get(name, 0) >= limit:
                self._parked.setdefault(name, collections.deque()).append((priority, t.key))
                return None
        for name, _ in gates:
            self._gate_running[name] = self._gate_running.get(name, 0) + 1
        return [name for name, _ in gates]

    def _leave(self, names: list[str]) -> None:
        for name in names:
            left = self._gate_running.get(name, 1) - 1
            if left > 0:
                self._gate_running[name] = left
            else:
                self._gate_running.pop(name, None)
            parked = self._parked.get(name)
            if parked:
                priority, key = parked.popleft()
                if not parked:
                    del self._parked[name]
                self._ready.put_nowait((priority, next(self._seq), key))

    async def _work(self) -> None:
        while True:
            priority, _, key = await self._ready.get()
            await self.active.wait()
            t = self.tracked.get(key)
            if t is None or not t.queued or t.extra.get("priority") != priority or t.suspended:
                continue
            entered = self._try_enter(t, priority)
            if entered is None:
                continue  # parked: it comes back when its gate frees
            t.queued = False
            t.running = True
            self.running_tests += 1
            metrics.TESTS_IN_PROGRESS.inc()
            self.peak_running_tests = max(self.peak_running_tests, self.running_tests)
            # The worker and the gates are held while the backend is being talked to, not while
            # the result is written: a slow API must not make tests wait (it measured twice the
            # test's own latency in a burst). The connection itself stays "running" until its
            # result is written, so it is never tested twice at once.
            probed = asyncio.Event()
            task = asyncio.create_task(self._test(t, probed))
            self._running[t.key] = task
            task.add_done_callback(functools.partial(self._finished, t))
            waiter = asyncio.create_task(probed.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                task.cancel()
                raise
            finally:
                waiter.cancel()
                self.running_tests -= 1
                metrics.TESTS_IN_PROGRESS.dec()
                self._leave(entered)

    def _finished(self, t: Tracked, task: asyncio.Task[None]) -> None:
        """A test and the writing of its result are over (or were cancelled, or failed)."""
        if self._running.get(t.key) is task:
            del self._running[t.key]
        t.running = False
        if task.cancelled():
            t.rerun = True  # paused mid-test: nothing was written, test again later
        elif (exc := task.exception()) is not None:
            # never lose a connection to a bug or an API outage: try again later
            logger.error("testing %s/%s failed unexpectedly; retrying later", *t.key, exc_info=exc)
            if self.tracked.get(t.key) is t:
                self._schedule_in(t, jittered(BACKOFF_BASE))
        if t.rerun and self.tracked.get(t.key) is t:
            t.rerun = False
            self._enqueue(t, URGENT)

    # --- one test -----------------------------------------------------------------------------

    async def _write_pending(self, t: Tracked) -> None:
        async with self._pending_writes:
            if t.status or self.tracked.get(t.key) is not t or not self.active.is_set():
                return
            t.extra["pending_writing"] = True
            status = pending_status(None, generation=t.generation, now=datetime.now(UTC))
            try:
                response = await self.api.patch_status(t.key[0], t.key[1], status)
            except Exception as exc:  # the test's own write will follow anyway
                logger.debug("pending status of %s/%s not written: %s", *t.key, _api_failure(exc))
                return
            if response is not None and not t.status:
                t.status = status

    async def _secret_for(self, t: Tracked) -> dict[str, Any] | None:
        if not t.secret_name:
            return None
        skey = (t.key[0], t.secret_name)
        if skey in self._secrets:
            return self._secrets[skey]
        data = await self.api.get_secret_data(*skey)
        if skey in self._refs and skey not in self._secrets:
            self._secrets[skey] = data
        return data

    async def _test(self, t: Tracked, probed: asyncio.Event | None = None) -> None:
        namespace, name = t.key
        spec, spec_hash, generation, request = t.spec, t.spec_hash, t.generation, t.test_request
        started = time.monotonic()
        try:
            secret = await self._secret_for(t)
        except Exception as exc:  # the API refused or failed: report it, not a crash
            result = ProbeResult(
                reason=Reason.SECRET_NOT_FOUND,
                message=f"Secret {t.secret_name!r} could not be read: {_api_failure(exc)}",
            )
        else:
            result = await run_test(spec, secret, policy=self.policy)
        elapsed = time.monotonic() - started
        if probed is not None:
            probed.set()  # the backend is done with: the worker and the gates are free
        pending_write = t.extra.pop("pending_write", None)
        if pending_write is not None:
            if not t.extra.pop("pending_writing", False):
                # the result is here before the "Pending" write began: it is no longer news,
                # and waiting for it would queue this result behind other connections' writes
                pending_write.cancel()
            await asyncio.gather(pending_write, return_exceptions=True)  # never overtake it
        if self.tracked.get(t.key) is not t:
            return  # deleted meanwhile
        now = datetime.now(UTC)
        new_status, events = compute_status(
            t.status, result, generation=generation, now=now, test_request=request
        )
        response = await self.api.patch_status(namespace, name, merge_patch(t.status, new_status))
        if response is None:
            self.forget(t.key)  # the object is gone
            return
        t.status = new_status
        t.handled_request = request if request is not None else t.handled_request
        t.failures = 0 if result.ok else t.failures + 1
        t.slow = result.reason is Reason.TIMEOUT
        self.tests_done += 1
        metrics.record_test(
            namespace, name, t.provider, result.ok, result.reason.value, elapsed, now.timestamp()
        )
        for event in events:
            # transitions only: a log line per test would drown real news at scale
            logger.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)
            await self._post_event(t, event)
        logger.debug(
            "%s/%s tested: %s in %.0f ms", namespace, name, result.reason.value, elapsed * 1000
        )
        if spec_hash != t.spec_hash:
            t.rerun = True  # the spec changed while testing: test the new one
        if t.interval > 0 and not t.suspended:
            delay = t.interval if result.ok else backoff_delay(t.failures, t.interval)
            self._schedule_in(t, jittered(delay))

    async def _post_event(self, t: Tracked, event: Event) -> None:
        try:
            await self.api.post_event(
                t.key[0], t.key[1], t.uid, event.type, event.reason, event.message
            )
        except Exception as exc:  # an event is worth less than the status that was written
            logger.warning(
                "could not post event %s for %s/%s: %s", event.reason, *t.key, _api_failure(exc)
            )


def _api_failure(exc: Exception) -> str:
    if isinstance(exc, Forbidden):
        return "the operator is not allowed to read Secrets in this namespace"
    return describe(exc)
