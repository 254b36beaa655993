"""Real PostgreSQL servers for the provider's integration tests: one per variant per session.

Each fixture starts its server itself (``tests/support/pgserver.py``) and fails loudly when it
cannot: these tests never skip for want of a server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pgserver import PostgresServer, SilentServer


@pytest.fixture(scope="session")
def pg_plain() -> Iterator[PostgresServer]:
    """TLS off: ``sslMode: require`` and stricter fail against it."""
    with PostgresServer("off") as server:
        yield server


@pytest.fixture(scope="session")
def pg_tls() -> Iterator[PostgresServer]:
    """TLS available (certificate for ``localhost`` from its own CA), plain connections allowed."""
    with PostgresServer("on") as server:
        yield server


@pytest.fixture(scope="session")
def pg_tls_required() -> Iterator[PostgresServer]:
    """TLS required: pg_hba.conf has ``hostssl`` lines only."""
    with PostgresServer("required") as server:
        yield server


@pytest.fixture(scope="session")
def silent_server() -> Iterator[SilentServer]:
    """Accepts TCP connections and never answers."""
    with SilentServer() as server:
        yield server
