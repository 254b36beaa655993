"""Leader election on a ``coordination.k8s.io/v1`` Lease, the way client-go and controller-runtime do it.

Every replica watches, keeps its scheduler's view of the connections warm, serves the admission
webhook and answers ``/readyz`` with 200; only the replica holding the Lease runs tests and
writes finalizers. Followers are ready on purpose (as in controller-runtime): readiness means
"this process works and can take over", so a rolling update is never held up by followers and
the webhook Service keeps endpoints on every replica.

The protocol (client-go's ``leaderelection`` package):

- a candidate takes the Lease when nobody holds it (``holderIdentity`` empty, as left by a
  clean shutdown) or when the holder's record has not changed for ``leaseDurationSeconds``
  as measured on the candidate's own monotonic clock (no trust in other machines' clocks);
- every write carries the ``resourceVersion`` it read: a 409 means another replica wrote
  first, and the attempt is lost, never retried blindly;
- the leader renews every ``retry_period``; when it has not managed to renew for
  ``renew_deadline`` (shorter than the lease duration, so it stops before anyone else can
  start), or when it sees another holder, it stops leading at once;
- on a clean shutdown the leader releases the Lease (empty holder, 1 s duration) so that a
  follower takes over within one retry period instead of a whole lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from warehouse_operator.kube.errors import Conflict, describe
from warehouse_operator.kube.paths import object_path
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.metrics import IS_LEADER, LEADER_TRANSITIONS
from warehouse_operator.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

LEASE_API_VERSION = "coordination.k8s.io/v1"
JITTER = 1.2  # client-go's JitterFactor: retries are spread over [period, 1.2 * period]
RELEASE_TIMEOUT = 1.0  # seconds for the release of the Lease at shutdown, GET and PUT together


@dataclass(frozen=True)
class LeaderTimings:
    """client-go's defaults; tests shorten them."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline:
            raise ValueError("the lease duration must be longer than the renew deadline")
        if not self.renew_deadline > JITTER * self.retry_period:
            raise ValueError("the renew deadline must be longer than 1.2 retry periods")
        if self.retry_period <= 0:
            raise ValueError("the retry period must be positive")


def make_identity(hostname: str | None = None) -> str:
    """Pod name (``HOSTNAME``) plus a random suffix: a restarted pod is a new candidate."""
    return f"{hostname or socket.gethostname()}_{secrets.token_hex(4)}"


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime, the format of Lease times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The spec of a Lease, as leader election reads and writes it."""

    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec")
        spec = spec if isinstance(spec, Mapping) else {}

        def _int(value: Any) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        def _str(value: Any) -> str | None:
            return value if isinstance(value, str) and value else None

        return cls(
            holder=_str(spec.get("holderIdentity")) or "",
            lease_duration_seconds=_int(spec.get("leaseDurationSeconds")),
            acquire_time=_str(spec.get("acquireTime")),
            renew_time=_str(spec.get("renewTime")),
            transitions=_int(spec.get("leaseTransitions")),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


def held_by_other(record: LeaseRecord, identity: str, observed_at: float, now: float) -> bool:
    """True when someone else holds the lease and it has not expired.

    ``observed_at`` is when this replica last saw the record change, on its own clock: the
    holder's ``renewTime`` is never compared with the local clock (clocks differ).
    """
    if not record.holder or record.holder == identity:
        return False
    return observed_at + max(record.lease_duration_seconds, 1) > now


def claim(record: LeaseRecord | None, identity: str, duration: float, now: datetime) -> LeaseRecord:
    """The record to write to take or renew the lease."""
    stamp = micro_time(now)
    seconds = max(1, round(duration))
    if record is None:
        return LeaseRecord(identity, seconds, stamp, stamp, 0)
    if record.holder == identity:
        return replace(record, lease_duration_seconds=seconds, renew_time=stamp)
    return LeaseRecord(identity, seconds, stamp, stamp, record.transitions + 1)


def released(record: LeaseRecord, now: datetime) -> LeaseRecord:
    """What a leader writes on a clean shutdown: nobody holds it, anyone may take it now."""
    stamp = micro_time(now)
    return LeaseRecord("", 1, stamp, stamp, record.transitions)


class LeaderElector:
    """Runs the election loop; calls ``on_started_leading`` / ``on_stopped_leading`` on transitions."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaderTimings | None = None,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or LeaderTimings()
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self.is_leader = False
        self._task: asyncio.Task[None] | None = None
        self._label = f"{namespace}/{name}"
        IS_LEADER.labels(self._label).set(0)

    @property
    def path(self) -> str:
        return object_path(LEASE_API_VERSION, "leases", self.namespace, self.name)

    @property
    def _collection(self) -> str:
        return object_path(LEASE_API_VERSION, "leases", self.namespace)

    @property
    def _request_timeout(self) -> float:
        # one call never outlives the time left to renew
        return max(0.5, min(self.timings.retry_period * 2, self.timings.renew_deadline / 2))

    # --- the loop ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="whc-leader-election")

    async def stop(self) -> None:
        """Stop electing; a leader releases the Lease (clean shutdown)."""
        await cancel_and_wait(self._task)
        self._task = None
        await self.release()

    async def run(self) -> None:
        """Acquire, lead until the lease is lost, try again; forever (cancel to stop)."""
        while True:
            await self._acquire()
            await self._lead()

    async def _acquire(self) -> None:
        logger.info("waiting to lead: Lease %s, identity %s", self._label, self.identity)
        while True:
            if await self._attempt():
                break
            await asyncio.sleep(self.timings.retry_period * random.uniform(1.0, JITTER))
        self.is_leader = True
        IS_LEADER.labels(self._label).set(1)
        LEADER_TRANSITIONS.labels(self._label, "acquired").inc()
        logger.info(
            "became the leader (Lease %s, identity %s): testing here", self._label, self.identity
        )
        self._on_started()

    async def _lead(self) -> None:
        while True:
            await asyncio.sleep(self.timings.retry_period)
            while True:
                if await self._attempt():
                    break
                if self._observed is not None and self._observed.holder not in ("", self.identity):
                    self._stop_leading("lost", f"the Lease is now held by {self._observed.holder}")
                    return
                left = self._renewed_at + self.timings.renew_deadline - self._clock()
                if left <= 0:
                    self._stop_leading(
                        "lost", f"it could not be renewed for {self.timings.renew_deadline:g}s"
                    )
                    return
                await asyncio.sleep(min(self.timings.retry_period, left))

    def _stop_leading(self, transition: str, why: str = "") -> None:
        self.is_leader = False
        IS_LEADER.labels(self._label).set(0)
        LEADER_TRANSITIONS.labels(self._label, transition).inc()
        if transition == "released":
            logger.info("released the Lease %s: testing stopped here", self._label)
        else:
            logger.warning(
                "lost the Lease %s (%s): testing stopped here", self._label, why or "stopped"
            )
        self._on_stopped()

    async def _attempt(self) -> bool:
        """One try to acquire or renew; False on a lost race, a valid foreign lease or an API failure."""
        try:
            async with asyncio.timeout(self._request_timeout * 2):
                return await self._try_acquire_or_renew()
        except asyncio.CancelledError:
            raise
        except Conflict:
            logger.debug("Lease %s: another replica wrote first", self._label)
            return False
        except Exception as exc:
            logger.warning("Lease %s could not be read or written: %s", self._label, describe(exc))
            return False

    async def _try_acquire_or_renew(self) -> bool:
        timeout, now = self._request_timeout, datetime.now(UTC)
        lease = await self.api.get_object(self.path, timeout=timeout, retries=0)
        if not isinstance(lease, Mapping):
            record = claim(None, self.identity, self.timings.lease_duration, now)
            body = {
                "apiVersion": LEASE_API_VERSION,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": record.to_spec(),
            }
            await self.api.create_object(self._collection, body, timeout=timeout, retries=0)
            self._observe(record)
            self._renewed_at = self._clock()
            return True

        current = LeaseRecord.from_lease(lease)
        if current != self._observed:
            self._observe(current)
        if held_by_other(current, self.identity, self._observed_at, self._clock()):
            return False
        if current.holder != self.identity and self.is_leader:
            # the lease expired under us (or was released by someone): never claim a renewal
            # across a gap in which another replica may have led
            return False
        record = claim(current, self.identity, self.timings.lease_duration, now)
        await self.api.replace_object(
            self.path, _lease_body(lease, record), timeout=timeout, retries=0
        )
        self._observe(record)
        self._renewed_at = self._clock()
        return True

    def _observe(self, record: LeaseRecord) -> None:
        self._observed = record
        self._observed_at = self._clock()

    async def release(self) -> None:
        """Give the lease up (clean shutdown) so that a follower takes over at once."""
        if not self.is_leader:
            return
        self._stop_leading("released")
        # at most RELEASE_TIMEOUT: a stop never waits on an API that does not answer (the
        # Lease then simply expires)
        timeout = min(self._request_timeout, RELEASE_TIMEOUT)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(RELEASE_TIMEOUT):
                lease = await self.api.get_object(self.path, timeout=timeout, retries=0)
                if not isinstance(lease, Mapping):
                    return
                current = LeaseRecord.from_lease(lease)
                if current.holder != self.identity:
                    return  # someone else holds it already: leave it alone
                body = _lease_body(lease, released(current, datetime.now(UTC)))
                await self.api.replace_object(self.path, body, timeout=timeout, retries=0)


def _lease_body(lease: Mapping[str, Any], record: LeaseRecord) -> dict[str, Any]:
    """The Lease to PUT: its identity and ``resourceVersion`` (the precondition), the new spec."""
    metadata = lease.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    kept = ("name", "namespace", "uid", "resourceVersion", "labels", "annotations")
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": "Lease",
        "metadata": {key: metadata[key] for key in kept if key in metadata},
        "spec": record.to_spec(),
    }
