"""PostgreSQL: psycopg 3's async API, one connection, ``SELECT 1``, close."""

from __future__ import annotations

from warehouse_operator.providers.postgres.credentials import PostgresCredentials
from warehouse_operator.providers.postgres.probe import PostgresProvider

__all__ = ["PROVIDER", "PostgresCredentials", "PostgresProvider"]


PROVIDER = PostgresProvider()
