"""The one small interface every provider implements, and the helpers they share.

A provider knows nothing of Kubernetes: it gets a validated spec and the Secret's data, and
it either returns a ``ProbeSuccess`` or raises ``ProbeFailure`` with a reason and a message
that a person understands. ``probe.py`` adds the policy, the timeout and the redaction.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from warehouse_operator.models import Check, CheckResult, ConnectionSpec, ProbeFailure
from warehouse_operator.secrets import SecretData


@dataclass(frozen=True)
class Destination:
    """A host and port the test will connect to, checked against the egress policy first."""

    host: str
    port: int
    what: str = "server"


Resolved = Mapping[str, Sequence[str]]


@dataclass
class ProbeSuccess:
    server_version: str | None = None
    message: str | None = None
    public_key_fingerprint: str | None = None
    warehouse_state: str | None = None


@dataclass
class Stages:
    """Records the stages of one test for ``status.checks``, in order, with durations."""

    checks: list[Check] = field(default_factory=list)

    def passed(self, name: str, message: str = "", duration_ms: int = 0) -> None:
        self.checks.append(
            Check(name=name, result=CheckResult.PASSED, message=message, duration_ms=duration_ms)
        )

    def failed(self, name: str, message: str, duration_ms: int = 0) -> None:
        self.checks.append(
            Check(name=name, result=CheckResult.FAILED, message=message, duration_ms=duration_ms)
        )

    def skipped(self, name: str, message: str = "") -> None:
        self.checks.append(Check(name=name, result=CheckResult.SKIPPED, message=message))

    @contextmanager
    def stage(self, name: str, ok_message: str = "") -> Iterator[StageNote]:
        """Time a stage; a ProbeFailure (or any error) inside it marks the stage Failed."""
        note = StageNote(ok_message)
        started = time.monotonic()
        try:
            yield note
        except ProbeFailure as exc:
            self.failed(name, exc.message, ms_since(started))
            raise
        except BaseException:
            self.failed(name, "interrupted", ms_since(started))
            raise
        self.passed(name, note.message, ms_since(started))

    def names(self) -> set[str]:
        return {c.name for c in self.checks}


@dataclass
class StageNote:
    """Lets the code inside a stage set the message recorded when the stage passes."""

    message: str = ""


def ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


class Provider(Protocol):
    """What the registry holds for each provider name."""

    name: str
    aliases: tuple[str, ...]  # other names ``spec.provider`` may give it
    driver_modules: tuple[str, ...]  # imported lazily: see ``load_driver``

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> Any:
        """Typed credentials from the Secret (pure, no I/O), or raise ProbeFailure."""
        ...

    def destinations(self, spec: ConnectionSpec, credentials: Any) -> list[Destination]:
        """Every host the test will connect to, for the egress policy."""
        ...

    async def probe(
        self,
        spec: ConnectionSpec,
        credentials: Any,
        *,
        timeout: float,
        stages: Stages,
        resolved: Resolved | None = None,
    ) -> ProbeSuccess:
        """Connect, authenticate and run the lightweight query within ``timeout`` seconds.

        ``resolved`` maps each destination host to the addresses the egress policy checked;
        a provider connects to those (where its driver allows) so that a second DNS answer
        (rebinding) cannot send the test somewhere the policy would refuse.

        Must not block the event loop. Raises ProbeFailure on a classified failure.
        """
        ...

    def backend_key(self, block: Mapping[str, Any]) -> str:
        """Which backend the provider's block of a raw (possibly invalid) spec names, as a
        URL-like key (``postgres://host:port``); lenient, never raises."""
        ...

    def stage_order(self) -> list[str]:
        """Names of the stages after ``credentials`` and ``destination``, for Skipped rows."""
        ...


# Drivers are imported the first time a provider is needed, not at start-up (an operator with
# no Snowflake connections never carries the Snowflake connector), and in a thread: importing
# psycopg takes ~0.25 s and the Snowflake connector ~0.7 s, which would otherwise stall the event
# loop (every other test, watch and status write) while it runs.

_loading: dict[str, asyncio.Future[None]] = {}
_loaded: set[str] = set()  # providers whose driver import has finished (a module is in
# sys.modules from the moment its import *starts*, so sys.modules cannot tell)


def _import_all(name: str, modules: Sequence[str]) -> None:
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        pass  # the test itself reports the missing driver, as a ProviderError
    finally:
        _loaded.add(name)


def load_driver(provider: Provider) -> asyncio.Future[None] | None:
    """Start importing ``provider``'s driver in a thread (once); None when already imported."""
    if provider.name in _loaded:
        return None
    loop = asyncio.get_running_loop()
    future = _loading.get(provider.name)
    if future is None or future.get_loop() is not loop:
        future = loop.run_in_executor(None, _import_all, provider.name, provider.driver_modules)
        _loading[provider.name] = future
    return future


async def driver_loaded(provider: Provider) -> None:
    """Wait until ``provider``'s driver is imported (without blocking the event loop)."""
    future = load_driver(provider)
    if future is not None:
        await asyncio.shield(future)
