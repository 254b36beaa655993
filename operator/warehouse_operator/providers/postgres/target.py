"""Where a PostgreSQL test connects: the spec's host and port (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warehouse_operator.models import ConnectionSpec, PostgresSpec
from warehouse_operator.providers.base import Destination

DEFAULT_PORT = 5432


def postgres_spec(spec: ConnectionSpec) -> PostgresSpec:
    assert spec.postgres is not None  # guaranteed by ConnectionSpec validation
    return spec.postgres


def destinations(spec: ConnectionSpec) -> list[Destination]:
    pg = postgres_spec(spec)
    return [Destination(pg.host, pg.port, "database")]


def backend_key(block: Mapping[str, Any]) -> str:
    """The server a (possibly invalid) ``spec.postgres`` block names."""
    return f"postgres://{block.get('host')}:{block.get('port', DEFAULT_PORT)}"
