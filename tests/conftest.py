"""What every part of the suite shares: the outcome of a test's phases on its item, and one
throwaway PostgreSQL server per session.

A fixture's teardown reads ``request.node.report_call`` (also ``report_setup``) to tell
whether the test failed, e.g. to print the logs of the processes it started.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from tests.support.pgserver import PostgresServer


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server with TLS off (``tests.support.pgserver``), started on first use."""
    with PostgresServer("off") as server:
        yield server
