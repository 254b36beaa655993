"""Drivers are imported once, in a thread, and a test waits for its driver without blocking
the event loop."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warehouse_operator.providers import REGISTRY
from warehouse_operator.providers.base import driver_loaded, load_driver

SLOW_MODULE = """
import threading, time
IMPORTED_IN = threading.current_thread().name
time.sleep(0.3)
"""


@dataclass
class FakeProvider:
    name: str
    driver_modules: tuple[str, ...]


@pytest.fixture
def slow_module(tmp_path: Path) -> Iterator[str]:
    name = f"whc_slow_driver_{id(tmp_path)}"
    (tmp_path / f"{name}.py").write_text(SLOW_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


async def test_a_driver_is_imported_in_a_thread_while_the_loop_runs(slow_module: str) -> None:
    provider = FakeProvider(f"fake-{slow_module}", (slow_module,))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        await driver_loaded(provider)  # type: ignore[arg-type]
    finally:
        task.cancel()
    module = sys.modules[slow_module]
    assert threading.current_thread().name != module.IMPORTED_IN
    assert ticks >= 10  # the loop went on during the 0.3 s import
    assert load_driver(provider) is None  # imported: nothing more to wait for  # type: ignore[arg-type]


async def test_one_import_however_many_tests_wait_for_it(slow_module: str) -> None:
    provider = FakeProvider(f"fake2-{slow_module}", (slow_module,))
    first = load_driver(provider)  # type: ignore[arg-type]
    assert first is not None
    while slow_module not in sys.modules:  # the import has begun (the module is not ready)
        await asyncio.sleep(0.01)
    assert load_driver(provider) is first  # type: ignore[arg-type]  # not "already imported"
    await asyncio.gather(*(driver_loaded(provider) for _ in range(5)))  # type: ignore[arg-type]
    assert slow_module in sys.modules


async def test_a_missing_driver_is_left_to_the_test_to_report() -> None:
    provider = FakeProvider("fake-missing", ("whc_no_such_driver_module",))
    await driver_loaded(provider)  # type: ignore[arg-type]  # does not raise
    assert "whc_no_such_driver_module" not in sys.modules


def test_every_provider_names_importable_driver_modules() -> None:
    for provider in REGISTRY.values():
        assert provider.driver_modules
        for module in provider.driver_modules:
            __import__(module)
