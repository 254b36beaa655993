"""Stand-ins for what surrounds the code under test: a recording Kubernetes API, a network audit.

Neither replaces any part of the operator: the scheduler, ``run_test``, the providers and the
drivers run as they do in production. ``RecordingApi`` (``tests.support.fake_kube``) sits where
``kube.KubeClient`` sits (the ``kube.KubeApi`` port); ``NetworkAudit`` only watches, through
Python's audit hooks.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, settings

from tests.support.encoding import b64
from tests.support.fake_kube import Patch, PostedEvent, RecordingApi
from tests.support.waiting import poll_until_async
from warehouse_operator.probe import EgressPolicy

__all__ = [
    "DENY_ALL",
    "NetworkAudit",
    "Patch",
    "PostedEvent",
    "RecordingApi",
    "b64",
    "fuzz",
    "loopback_connection",
    "wait_until",
]

# No test in this suite sends a packet beyond 127.0.0.1: where a test needs no server, its
# egress policy denies every address, so the most a valid spec can reach is DestinationDenied.
DENY_ALL = EgressPolicy.from_cidrs([], ["0.0.0.0/0", "::/0"])


def fuzz(max_examples: int, *, shrink: bool = True) -> settings:
    """Settings of the property-based tests: no per-example deadline (examples include real
    sockets and threads), no example database (CI starts fresh; failures print a blob).

    ``WHC_FUZZ_SCALE=N`` multiplies every example count, for longer runs than CI's.
    """
    phases = tuple(Phase) if shrink else tuple(p for p in Phase if p is not Phase.shrink)
    scale = float(os.environ.get("WHC_FUZZ_SCALE", "1"))
    return settings(
        max_examples=max(1, round(max_examples * scale)),
        phases=phases,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


async def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` holds within ``timeout`` seconds (polled on the event loop often:
    the fuzz tests wait thousands of times). Tests assert on it, some with their own message."""
    return bool(await poll_until_async(condition, timeout, interval=0.01))


def loopback_connection(
    namespace: str,
    name: str,
    ref: dict[str, Any],
    *,
    generation: int | None = 1,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A WarehouseConnection as a watch delivers it: PostgreSQL database ``app`` on 127.0.0.1,
    credentials from the Secret reference ``ref``."""
    metadata: dict[str, Any] = {"namespace": namespace, "name": name, "uid": f"uid-{name}"}
    if generation is not None:
        metadata["generation"] = generation
    body: dict[str, Any] = {"metadata": metadata}
    if status is not None:
        body["status"] = status
    body["spec"] = {
        "provider": "postgres",
        "credentialsSecretRef": ref,
        "postgres": {"host": "127.0.0.1", "database": "app"},
    }
    return body


@dataclass(frozen=True)
class NetworkCall:
    event: str  # "socket.getaddrinfo" | "socket.connect"
    target: str


class NetworkAudit:
    """Records name lookups and socket connects made from Python, while recording is on.

    Built on ``sys.addaudithook`` (a hook cannot be removed, so one is installed per process
    and is idle unless a ``recording()`` block is active). libpq connects from C and raises no
    audit event; tests that use this rely on the egress check, which runs before libpq.
    """

    _instance: NetworkAudit | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self.calls: list[NetworkCall] = []
        sys.addaudithook(self._hook)

    @classmethod
    def get(cls) -> NetworkAudit:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._active or event not in ("socket.getaddrinfo", "socket.connect"):
            return
        target = repr(args[0]) if event == "socket.getaddrinfo" else repr(args[1])
        with self._lock:
            self.calls.append(NetworkCall(event, target))

    @contextmanager
    def recording(self) -> Iterator[list[NetworkCall]]:
        """Yields the list that receives the calls made inside the block."""
        with self._lock:
            start = len(self.calls)
            self._active += 1
        found: list[NetworkCall] = []
        try:
            yield found
        finally:
            with self._lock:
                self._active -= 1
                found.extend(self.calls[start:])
                if not self._active:
                    self.calls.clear()
