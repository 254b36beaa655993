"""What the scheduler holds of each connection, and what it reads from an object, leniently.

Invalid specs are still tested (their test reports what is wrong), so nothing here rejects a
spec: what cannot be read takes its default.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from warehouse_operator.models import TEST_REQUESTED_ANNOTATION, parse_duration
from warehouse_operator.providers import backend_key, canonical_name

Key = tuple[str, str]  # (namespace, name)


def int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _spec_hash(spec: Any) -> str:
    text = json.dumps(spec, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SpecView:
    """What scheduling needs from a spec."""

    secret_name: str | None
    provider: str | None
    suspended: bool
    interval: float
    destination: str


def spec_view(spec: Any, default_interval: float) -> SpecView:
    if not isinstance(spec, Mapping):
        return SpecView(None, None, False, default_interval, "")
    ref = spec.get("credentialsSecretRef")
    secret = str_or_none(ref.get("name")) if isinstance(ref, Mapping) else None
    interval = default_interval
    raw_interval = spec.get("testInterval")
    if isinstance(raw_interval, str):
        with contextlib.suppress(ValueError):
            interval = parse_duration(raw_interval)
    return SpecView(
        secret,
        canonical_name(spec.get("provider")),
        spec.get("suspend") is True,
        interval,
        backend_key(spec),
    )


@dataclass(frozen=True)
class Seen:
    """One watch event's object, as far as scheduling reads it."""

    key: Key
    uid: str | None
    generation: int | None
    test_request: str | None
    spec: Any
    spec_hash: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Seen:
        meta = body.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        annotations = meta.get("annotations")
        generation = meta.get("generation")
        spec = body.get("spec")
        return cls(
            key=(str(meta.get("namespace") or ""), str(meta.get("name") or "")),
            uid=str_or_none(meta.get("uid")),
            generation=generation if isinstance(generation, int) else None,
            test_request=str_or_none(annotations.get(TEST_REQUESTED_ANNOTATION))
            if isinstance(annotations, Mapping)
            else None,
            spec=spec,
            spec_hash=_spec_hash(spec),
        )


@dataclass(eq=False, slots=True)
class Tracked:
    """One connection the scheduler knows. Its status lives in the status writer."""

    key: Key
    uid: str | None
    spec: Any
    spec_hash: str
    generation: int | None
    view: SpecView
    test_request: str | None
    handled_request: str | None
    failures: int = 0
    slow: bool = False  # the last test timed out: it runs in the slow lane
    pending_write: asyncio.Task[None] | None = None  # the "Pending" status of a new connection
    pending_writing: bool = False  # that write has begun (it is not cancelled then)

    @property
    def secret_name(self) -> str | None:
        return self.view.secret_name

    @property
    def provider(self) -> str | None:
        return self.view.provider

    @property
    def suspended(self) -> bool:
        return self.view.suspended

    @property
    def interval(self) -> float:
        return self.view.interval

    @property
    def destination(self) -> str:
        return self.view.destination

    def take_status(self, status: Mapping[str, Any]) -> None:
        """What a status says of the test history: its request handled, its failure count."""
        self.handled_request = str_or_none(status.get("lastHandledTestRequest"))
        self.failures = int_or_zero(status.get("consecutiveFailures"))

    def status_is_current(self, status: Mapping[str, Any]) -> bool:
        """Tested before, for this generation and the latest test request."""
        if not status.get("lastTestedAt"):
            return False
        if self.generation is not None and status.get("observedGeneration") != self.generation:
            return False
        return self.test_request is None or self.test_request == self.handled_request
