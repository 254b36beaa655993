"""Waiting for a condition, with a deadline and a failure that says what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["eventually", "poll_until", "poll_until_async", "wait_until"]


def poll_until(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.05,
    *,
    give_up: Callable[[], bool] | None = None,
) -> Any:
    """Call ``predicate`` until it returns something true (returned) or ``timeout`` seconds pass
    or ``give_up()`` holds after a false answer (then its last, false, answer is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline or (give_up is not None and give_up()):
            return value
        time.sleep(interval)


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """``predicate``'s first true answer; AssertionError naming ``what`` after ``timeout`` s."""
    value = poll_until(predicate, timeout, interval)
    if not value:
        raise AssertionError(f"{what}: not within {timeout:g}s")
    return value


async def poll_until_async(check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """``poll_until`` on the event loop: ``check`` may return an awaitable, and the loop keeps
    running between tries. Its first true answer, or its last (false) one after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(interval)


async def eventually(
    check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """``wait_until`` on the event loop (see ``poll_until_async``)."""
    value = await poll_until_async(check, timeout, interval)
    if not value:
        raise AssertionError(f"{what}: not within {timeout:g}s")
    return value
