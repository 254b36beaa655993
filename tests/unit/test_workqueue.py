"""The work queue on its own: priorities, reruns, timers, gates, early release, pause."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable
from pathlib import Path

from warehouse_operator.workqueue import WorkQueue

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    def __init__(self, hold: float = 0.0) -> None:
        self.runs: list[str] = []
        self.hold = hold
        self.release_early = False

    async def __call__(self, key: str, release: Callable[[], None]) -> None:
        self.runs.append(key)
        if self.release_early:
            release()
        await asyncio.sleep(self.hold)


async def test_priorities_and_dirty_while_processing_reruns_once() -> None:
    rec = Recorder(hold=0.05)
    queue: WorkQueue[str] = WorkQueue(rec, workers=1)
    queue.add("routine", 1)
    queue.add("urgent", 0)
    queue.start()
    try:
        await asyncio.sleep(0.01)
        queue.add("urgent", 0)  # being handled: handled again after, once
        queue.add("urgent", 0)
        assert queue.dirty("urgent")
        await asyncio.sleep(0.3)
        assert rec.runs == ["urgent", "urgent", "routine"]  # the rerun keeps its priority
    finally:
        await queue.stop()


async def test_timers_latest_wins_and_cancel_drops() -> None:
    rec = Recorder()
    queue: WorkQueue[str] = WorkQueue(rec, workers=2)
    queue.start()
    try:
        queue.add_after("a", 0.05, 1)
        queue.add_after("a", 0.5, 1)  # the latest call wins
        queue.add_after("b", 0.05, 1)
        queue.cancel("b")
        await asyncio.sleep(0.15)
        assert rec.runs == []
        await asyncio.sleep(0.5)
        assert rec.runs == ["a"]
    finally:
        await queue.stop()


async def test_a_full_gate_parks_keys_and_an_early_release_frees_it() -> None:
    rec = Recorder(hold=0.2)
    queue: WorkQueue[str] = WorkQueue(rec, workers=4, gates=lambda key: [("g", 1)])
    queue.start()
    try:
        queue.add("a", 0)
        queue.add("b", 0)
        await asyncio.sleep(0.05)
        assert rec.runs == ["a"]
        assert queue.gate_load("g") == 1
        await asyncio.sleep(0.25)
        assert rec.runs == ["a", "b"]
        rec.release_early = True
        queue.add("c", 0)
        queue.add("d", 0)
        await asyncio.sleep(0.3)
        assert rec.runs[2:] == ["c", "d"]
        assert queue.busy == 0
        assert queue.peak_busy == 1
    finally:
        await queue.stop()


async def test_pause_cancels_runs_and_resume_reruns_them() -> None:
    rec = Recorder(hold=10)
    queue: WorkQueue[str] = WorkQueue(rec, workers=1)
    queue.start()
    try:
        queue.add("a", 0)
        await asyncio.sleep(0.05)
        queue.pause()
        await asyncio.sleep(0.05)
        assert rec.runs == ["a"]
        assert not queue.processing("a")
        rec.hold = 0
        queue.resume()
        await asyncio.sleep(0.05)
        assert rec.runs == ["a", "a"]
    finally:
        await queue.stop()


def test_the_import_contract_names_every_other_module() -> None:
    """The contract lists modules (import-linter does not forbid a root package's own
    modules): a module added to the package must be added to it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [
        c for c in contracts if c.get("source_modules") == ["warehouse_operator.workqueue"]
    ]
    package = ROOT / "operator" / "warehouse_operator"
    modules = {
        f"warehouse_operator.{p.stem}"
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem not in ("__init__", "workqueue"))
        or (p / "__init__.py").exists()
    }
    assert set(contract["forbidden_modules"]) == modules
