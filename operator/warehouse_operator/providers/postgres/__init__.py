"""PostgreSQL: psycopg 3's async API, one connection, ``SELECT 1``, close."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warehouse_operator.models import ConnectionSpec
from warehouse_operator.providers.base import Destination, ProbeSuccess, Resolved, Stages
from warehouse_operator.providers.postgres import credentials as _credentials
from warehouse_operator.providers.postgres import probe as _probe
from warehouse_operator.providers.postgres import target as _target
from warehouse_operator.providers.postgres.credentials import PostgresCredentials
from warehouse_operator.secrets import SecretData

__all__ = ["PROVIDER", "PostgresCredentials", "PostgresProvider"]


class PostgresProvider:
    name = "postgres"
    aliases: tuple[str, ...] = ("postgresql",)
    driver_modules: tuple[str, ...] = ("psycopg",)

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> PostgresCredentials:
        return _credentials.parse_credentials(secret)

    def destinations(
        self, spec: ConnectionSpec, credentials: PostgresCredentials
    ) -> list[Destination]:
        return _target.destinations(spec)

    def backend_key(self, block: Mapping[str, Any]) -> str:
        return _target.backend_key(block)

    def stage_order(self) -> list[str]:
        return ["connect", "authenticate", "query"]

    async def probe(
        self,
        spec: ConnectionSpec,
        credentials: PostgresCredentials,
        *,
        timeout: float,
        stages: Stages,
        resolved: Resolved | None = None,
    ) -> ProbeSuccess:
        return await _probe.probe(
            spec, credentials, timeout=timeout, stages=stages, resolved=resolved
        )


PROVIDER = PostgresProvider()
