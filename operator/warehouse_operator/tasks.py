"""Background tasks: the one way the operator's long-running loops are stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and return once it has ended, so that nothing it holds outlives
    the stop; its own cancellation is the expected end, not an error."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def cancel_and_wait_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every task and return once all have ended (what they raised is theirs)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], timeout: float = 1.0) -> None:
    """Cancel ``tasks`` and give them ``timeout`` seconds to end: a stop waits on no task that
    holds on to its cancellation."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout)
