"""Fixtures of the reliability suite: egress policies, the network audit, real servers.

Real servers are started here and never skipped: when one cannot start, the test fails with
the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.fakes import NetworkAudit
from tests.support.pgserver import PostgresServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fixed_defect(defect): a regression test of a defect this suite found"
    )


@pytest.fixture(scope="session")
def network_audit() -> NetworkAudit:
    return NetworkAudit.get()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL (TLS off) for the recovery and read-only tests."""
    with PostgresServer("off") as server:
        yield server
