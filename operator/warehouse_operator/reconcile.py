"""One test of one connection: Secret -> ``run_test`` -> status -> one write -> events -> metrics.

The result is written through the status writer, as the owner of every status field but the
conditions other writers own; the next due time follows from the result (the interval when it
passed, capped exponential backoff while it fails).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from warehouse_operator import metrics
from warehouse_operator.connection import Tracked
from warehouse_operator.kube.errors import describe
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.models import ProbeResult, Reason
from warehouse_operator.probe import EgressPolicy, run_test
from warehouse_operator.secretcache import SecretCache, api_failure
from warehouse_operator.status import OWN_CONDITIONS, Event, compute_status, pending_status
from warehouse_operator.statuswriter import Owner, StatusWriter

logger = logging.getLogger("warehouse_operator.scheduler")

OWNER = Owner("scheduler", OWN_CONDITIONS, fields=True)
BACKOFF_BASE = 5.0
JITTER = 0.1
PENDING_WRITES = 8  # "Pending" writes at once: a burst of new objects must not flood the API


def backoff_delay(failures: int, interval: float) -> float:
    """Exponential backoff after ``failures`` consecutive failures, capped by the interval."""
    return float(min(interval, BACKOFF_BASE * (2 ** max(0, min(failures, 20) - 1))))


def jittered(delay: float) -> float:
    return delay * (1 + random.uniform(-JITTER, JITTER))


@dataclass(frozen=True)
class Outcome:
    gone: bool = False  # the object no longer exists
    next_in: float | None = None  # seconds until the next test (None: no timer)
    spec_changed: bool = False  # the spec changed while testing: test the new one


class Reconciler:
    def __init__(
        self,
        api: KubeApi,
        writer: StatusWriter,
        secrets: SecretCache,
        *,
        policy: EgressPolicy,
        current: Callable[[Tracked], bool],
        active: asyncio.Event,
    ) -> None:
        """``current(t)``: ``t`` is still the connection of its key (not deleted meanwhile);
        ``active``: set while this replica may write."""
        self.api = api
        self.writer = writer
        self.secrets = secrets
        self.policy = policy
        self._current = current
        self._active = active
        self._pending_writes = asyncio.Semaphore(PENDING_WRITES)
        self.tests_done = 0

    async def write_pending(self, t: Tracked) -> None:
        """Say "Pending" for a new connection, so kstatus (Flux) and Argo CD wait for its first
        test instead of taking a status-less object as ready."""
        async with self._pending_writes:
            if self.writer.status(t.key) or not self._current(t) or not self._active.is_set():
                return
            t.pending_writing = True
            status = pending_status(None, generation=t.generation, now=datetime.now(UTC))
            try:
                await self.writer.write(t.key, OWNER, status)
            except Exception as exc:  # the test's own write will follow anyway
                logger.debug("pending status of %s/%s not written: %s", *t.key, describe(exc))

    async def _secret(self, t: Tracked) -> dict[str, object] | None:
        if not t.secret_name:
            return None
        return await self.secrets.get((t.key[0], t.secret_name))

    async def test(self, t: Tracked, release: Callable[[], None]) -> Outcome:
        """Test ``t`` and write its result; ``release`` is called once the backend is done with."""
        namespace, name = t.key
        spec, spec_hash, generation, request = t.spec, t.spec_hash, t.generation, t.test_request
        started = time.monotonic()
        try:
            secret = await self._secret(t)
        except Exception as exc:  # the API refused or failed: report it, not a crash
            result = ProbeResult(
                reason=Reason.SECRET_NOT_FOUND,
                message=f"Secret {t.secret_name!r} could not be read: {api_failure(exc)}",
            )
        else:
            result = await run_test(spec, secret, policy=self.policy)
        elapsed = time.monotonic() - started
        release()
        pending_write, t.pending_write = t.pending_write, None
        if pending_write is not None:
            if not t.pending_writing:
                # the result is here before the "Pending" write began: it is no longer news,
                # and waiting for it would queue this result behind other connections' writes
                pending_write.cancel()
            t.pending_writing = False
            await asyncio.gather(pending_write, return_exceptions=True)  # never overtake it
        if not self._current(t):
            return Outcome()  # deleted meanwhile
        now = datetime.now(UTC)
        new_status, events = compute_status(
            self.writer.status(t.key), result, generation=generation, now=now, test_request=request
        )
        if await self.writer.write(t.key, OWNER, new_status) is None:
            return Outcome(gone=True)
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
        next_in = None
        if t.interval > 0 and not t.suspended:
            delay = t.interval if result.ok else backoff_delay(t.failures, t.interval)
            next_in = jittered(delay)
        return Outcome(next_in=next_in, spec_changed=spec_hash != t.spec_hash)

    async def _post_event(self, t: Tracked, event: Event) -> None:
        try:
            await self.api.post_event(
                t.key[0], t.key[1], t.uid, event.type, event.reason, event.message
            )
        except Exception as exc:  # an event is worth less than the status that was written
            logger.warning(
                "could not post event %s for %s/%s: %s", event.reason, *t.key, describe(exc)
            )
