"""The connection test: psycopg 3's async API, one connection, ``SELECT 1``, close."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from warehouse_operator.models import ConnectionSpec, ProbeFailure, Reason
from warehouse_operator.providers.base import Destination, ProbeSuccess, Resolved, Stages
from warehouse_operator.providers.postgres.classify import (
    classify_connect_error,
    classify_query_error,
)
from warehouse_operator.providers.postgres.credentials import PostgresCredentials, parse_credentials
from warehouse_operator.providers.postgres.target import backend_key, destinations, postgres_spec
from warehouse_operator.secrets import SecretData

APPLICATION_NAME = "warehouse-operator"


class PostgresProvider:
    name = "postgres"
    aliases: tuple[str, ...] = ("postgresql",)
    driver_modules: tuple[str, ...] = ("psycopg",)

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> PostgresCredentials:
        return parse_credentials(secret)

    def destinations(
        self, spec: ConnectionSpec, credentials: PostgresCredentials
    ) -> list[Destination]:
        return destinations(spec)

    def backend_key(self, block: Mapping[str, Any]) -> str:
        return backend_key(block)

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
        import psycopg  # imported here: only operators with postgres connections pay for it

        pg = postgres_spec(spec)
        with _ca_file(credentials.ca_pem) as ca_path:
            params: dict[str, Any] = {
                "host": pg.host,
                "port": pg.port,
                "dbname": pg.database,
                "user": credentials.username,
                "password": credentials.password,
                "sslmode": pg.ssl_mode,
                # libpq counts whole seconds and treats values below 2 as 2
                "connect_timeout": max(2, math.ceil(timeout)),
                "application_name": APPLICATION_NAME,
            }
            addresses = list((resolved or {}).get(pg.host, ()))
            if addresses and addresses != [pg.host]:
                # connect to exactly the addresses the egress policy checked; ``host`` stays
                # the name, for TLS host name verification
                params["host"] = ",".join([pg.host] * len(addresses))
                params["hostaddr"] = ",".join(addresses)
            if pg.ssl_mode in ("verify-ca", "verify-full"):
                # without a CA in the Secret, verify against the system's trust store
                params["sslrootcert"] = ca_path or "system"
            started = time.monotonic()
            try:
                conn = await psycopg.AsyncConnection.connect(autocommit=True, **params)
            except psycopg.Error as exc:
                reason, message = classify_connect_error(
                    exc, pg, credentials.username, has_ca=credentials.ca_pem is not None
                )
                elapsed = _ms(started)
                if reason in _SERVER_ANSWERED:
                    stages.passed("connect", f"reached {pg.host}:{pg.port}", elapsed)
                    stages.failed("authenticate", message)
                else:
                    stages.failed("connect", message, elapsed)
                raise ProbeFailure(reason, message) from None
        try:
            tls = conn.pgconn.ssl_in_use
            stages.passed(
                "connect",
                f"connected to {pg.host}:{pg.port} {'with' if tls else 'without'} TLS",
                _ms(started),
            )
            stages.passed(
                "authenticate",
                f"authenticated as {credentials.username!r} to database {pg.database!r}",
            )
            with stages.stage("query", "SELECT 1 returned 1"):
                try:
                    cursor = await conn.execute("SELECT 1")
                    row = await cursor.fetchone()
                except psycopg.Error as exc:
                    raise ProbeFailure(*classify_query_error(exc)) from None
                if row is None or row[0] != 1:
                    raise ProbeFailure(Reason.PROVIDER_ERROR, "SELECT 1 did not return 1")
            raw_version = conn.info.parameter_status("server_version") or ""
        finally:
            await conn.close()
        version = raw_version.split(" ", 1)[0] if raw_version else ""
        return ProbeSuccess(server_version=f"PostgreSQL {version}" if version else None)


_SERVER_ANSWERED = frozenset(
    {Reason.AUTHENTICATION_FAILED, Reason.NOT_FOUND, Reason.PERMISSION_DENIED}
)


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


@contextmanager
def _ca_file(ca_pem: bytes | None) -> Iterator[str | None]:
    """libpq reads the CA from a file: write it to a private temporary one for this test."""
    if ca_pem is None:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="whc-ca-", suffix=".crt")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(ca_pem)
        yield path
    finally:
        os.unlink(path)
