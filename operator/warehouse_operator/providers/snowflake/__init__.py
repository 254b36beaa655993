"""Snowflake: the real ``snowflake-connector-python``, a login that validates the session's
defaults, metadata-only queries, close.

The test costs the user nothing: it never runs anything that needs compute, so a suspended
warehouse stays suspended. The login asks Snowflake to validate the role, database, schema and
warehouse (``validate_default_parameters``: the service answers 390189 / 390201 at login), the
warehouse's state comes from ``SHOW WAREHOUSES LIKE`` (metadata), and the server version from
``SELECT CURRENT_VERSION()``, which the cloud services layer answers without a warehouse.
A suspended warehouse is healthy: it resumes on demand when real work comes.

The connector is blocking: its calls run on the shared blocking-call runner (``blocking.py``),
with its login, network and socket timeouts taken from the test's budget. It is imported inside
the probe: operators without Snowflake connections do not pay its import time and memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warehouse_operator.models import ConnectionSpec
from warehouse_operator.providers.base import Destination, ProbeSuccess, Resolved, Stages
from warehouse_operator.providers.blocking import BlockingCallRunner
from warehouse_operator.providers.snowflake import credentials as _credentials
from warehouse_operator.providers.snowflake import probe as _probe
from warehouse_operator.providers.snowflake import target as _target
from warehouse_operator.providers.snowflake.credentials import SnowflakeCredentials
from warehouse_operator.secrets import SecretData

__all__ = ["PROVIDER", "SnowflakeCredentials", "SnowflakeProvider"]


class SnowflakeProvider:
    name = "snowflake"
    aliases: tuple[str, ...] = ()
    driver_modules: tuple[str, ...] = ("snowflake.connector",)

    def __init__(self, runner: BlockingCallRunner[Any] | None = None) -> None:
        self.runner = runner or BlockingCallRunner(
            _probe.WORKER_THREADS, "snowflake-probe", "Snowflake"
        )

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> SnowflakeCredentials:
        return _credentials.parse_credentials(_target.snowflake_spec(spec), secret)

    def destinations(
        self, spec: ConnectionSpec, credentials: SnowflakeCredentials
    ) -> list[Destination]:
        return _target.destinations(spec)

    def backend_key(self, block: Mapping[str, Any]) -> str:
        return _target.backend_key(block)

    def stage_order(self) -> list[str]:
        return ["connect", "authenticate", "role", "database", "warehouse", "query"]

    async def probe(
        self,
        spec: ConnectionSpec,
        credentials: SnowflakeCredentials,
        *,
        timeout: float,
        stages: Stages,
        resolved: Resolved | None = None,
    ) -> ProbeSuccess:
        return await _probe.probe(
            self.runner, spec, credentials, timeout=timeout, stages=stages, resolved=resolved
        )


PROVIDER = SnowflakeProvider()
