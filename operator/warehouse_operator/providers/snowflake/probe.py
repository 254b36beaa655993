"""The Snowflake connection test: a TCP handshake, a login that validates the session's
defaults, metadata-only queries, close; every connector call on the blocking-call runner."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from warehouse_operator.models import ConnectionSpec, ProbeFailure, Reason, SnowflakeSpec
from warehouse_operator.providers import network
from warehouse_operator.providers.base import Destination, ProbeSuccess, Resolved, Stages, ms_since
from warehouse_operator.providers.blocking import BlockingCallRunner
from warehouse_operator.providers.snowflake.classify import Classified, LoginContext, classify_error
from warehouse_operator.providers.snowflake.credentials import (
    SnowflakeCredentials,
    parse_credentials,
)
from warehouse_operator.providers.snowflake.driver import (
    close,
    connect_params,
    current_version,
    open_connection,
    prepare_connector_import,
    warehouse_state,
)
from warehouse_operator.providers.snowflake.target import (
    SnowflakeTarget,
    backend_key,
    destinations,
    proxy_for,
    snowflake_spec,
    target_of,
)
from warehouse_operator.secrets import SecretData

T = TypeVar("T")

WORKER_THREADS = 16


async def _check_reachable(
    target: SnowflakeTarget, deadline: float, addresses: Sequence[str] = ()
) -> str:
    """One TCP handshake, so that a refused or silent endpoint is told apart in time.

    The connector retries refused connections until its login timeout, which would turn
    "nothing listens there" into a Timeout. The handshake goes to an address the egress
    policy checked; the connector resolves the name again itself (its HTTP stack offers no
    way to pin the address), so for Snowflake the policy is enforced at resolution time.
    """
    if proxy_for(target):
        return f"{target} is reached through the proxy set in the environment"
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addresses[0] if addresses else target.host, target.port),
            timeout=max(deadline - time.monotonic(), 0.001),
        )
    except OSError as exc:  # TimeoutError included
        failure = network.classify_network_error(exc, str(target))
        reason, message = failure or (
            Reason.UNREACHABLE,
            network.unreachable(str(target), exc.strerror or type(exc).__name__),
        )
        raise ProbeFailure(reason, message) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return f"reached {target} ({target.protocol})"


class SnowflakeProvider:
    name = "snowflake"
    aliases: tuple[str, ...] = ()
    driver_modules: tuple[str, ...] = ("snowflake.connector",)

    def __init__(self, runner: BlockingCallRunner[Any] | None = None) -> None:
        self.runner = runner or BlockingCallRunner(WORKER_THREADS, "snowflake-probe", "Snowflake")

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> SnowflakeCredentials:
        return parse_credentials(snowflake_spec(spec), secret)

    def destinations(
        self, spec: ConnectionSpec, credentials: SnowflakeCredentials
    ) -> list[Destination]:
        return destinations(spec)

    def backend_key(self, block: Mapping[str, Any]) -> str:
        return backend_key(block)

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
        runner = self.runner
        deadline = time.monotonic() + timeout
        sf = snowflake_spec(spec)
        target = target_of(sf)
        ctx = LoginContext(
            user=credentials.username,
            target=target,
            role=sf.role,
            database=sf.database,
            schema=sf.schema_,
            warehouse=sf.warehouse,
            fingerprint=credentials.public_key_fingerprint,
        )
        with stages.stage("connect") as note:
            note.message = await _check_reachable(
                target, deadline, (resolved or {}).get(target.host, ())
            )

        # the same words as run_test's own timeout, which may fire at the same moment
        overrun = f"no answer within testTimeout ({spec.test_timeout})"
        prepare_connector_import()
        params = connect_params(sf, credentials, target, deadline - time.monotonic())
        started = time.monotonic()
        try:
            conn = await runner.run(
                functools.partial(open_connection, params, credentials.private_key_der),
                deadline=deadline,
                overrun=overrun,
                cleanup=close,
            )
        except ProbeFailure as failure:  # no worker thread for it, or no answer in time
            stages.failed("authenticate", failure.message, ms_since(started))
            raise
        except Exception as exc:
            failed = classify_error(exc, ctx, during="authenticate")
            _record_login_failure(stages, failed, sf, ms_since(started))
            raise ProbeFailure(failed.reason, failed.message) from None

        try:
            _record_login(stages, sf, conn, credentials, ms_since(started))
            state = None
            if sf.warehouse:
                with stages.stage("warehouse") as note:
                    state = await _query(
                        runner,
                        functools.partial(warehouse_state, conn, sf.warehouse),
                        ctx,
                        deadline,
                        overrun,
                        "warehouse",
                    )
                    if state is None:
                        raise ProbeFailure(
                            Reason.NOT_FOUND,
                            f"warehouse {sf.warehouse!r} does not exist or not authorized "
                            "(SHOW WAREHOUSES does not list it for the session's role)",
                        )
                    note.message = _warehouse_message(sf.warehouse, state)
            else:
                stages.skipped("warehouse", "no warehouse in spec")
            with stages.stage("query") as note:
                version = await _query(
                    runner,
                    functools.partial(current_version, conn),
                    ctx,
                    deadline,
                    overrun,
                    "query",
                )
                note.message = f"SELECT CURRENT_VERSION() returned {version}"
        finally:
            runner.detach(functools.partial(close, conn))
        return ProbeSuccess(
            server_version=f"Snowflake {version}",
            public_key_fingerprint=credentials.public_key_fingerprint,
            warehouse_state=state,
        )


async def _query(
    runner: BlockingCallRunner[Any],
    fn: Callable[[], T],
    ctx: LoginContext,
    deadline: float,
    overrun: str,
    stage: str,
) -> T:
    try:
        result: T = await runner.run(fn, deadline=deadline, overrun=overrun)
    except ProbeFailure:
        raise
    except Exception as exc:
        failed = classify_error(exc, ctx, during=stage)
        raise ProbeFailure(failed.reason, failed.message) from None
    return result


def _warehouse_message(warehouse: str, state: str) -> str:
    if state.upper() == "SUSPENDED":
        return (
            f"warehouse {warehouse!r} is SUSPENDED; it was not resumed "
            "(it resumes on demand when real work comes)"
        )
    return f"warehouse {warehouse!r} is {state.upper()}"


def _record_login(
    stages: Stages,
    sf: SnowflakeSpec,
    conn: Any,
    credentials: SnowflakeCredentials,
    elapsed_ms: int,
) -> None:
    how = (
        f"a key pair ({credentials.public_key_fingerprint})"
        if credentials.private_key_der is not None
        else "a password"
    )
    stages.passed(
        "authenticate", f"authenticated as {credentials.username!r} with {how}", elapsed_ms
    )
    session_role = getattr(conn, "role", None)
    if sf.role:
        stages.passed("role", f"role {sf.role!r} is granted and in use")
    elif session_role:
        stages.passed(
            "role", f"no role in spec; the user's default role {session_role!r} is in use"
        )
    else:
        stages.passed("role", "no role in spec; the user's default role is in use")
    if sf.database:
        stages.passed(
            "database", f"database {sf.database!r} and schema {sf.schema_!r} exist and are usable"
        )
    else:
        stages.skipped("database", "no database in spec")


def _record_login_failure(
    stages: Stages, failed: Classified, sf: SnowflakeSpec, elapsed_ms: int
) -> None:
    """Which login stages passed before the one Snowflake refused (it checks in this order)."""
    if failed.stage == "authenticate":
        stages.failed("authenticate", failed.message, elapsed_ms)
        return
    stages.passed("authenticate", "credentials accepted", elapsed_ms)
    for name, value in (("role", sf.role), ("database", sf.database), ("warehouse", sf.warehouse)):
        if name == failed.stage:
            stages.failed(name, failed.message)
            return
        if value:
            stages.passed(name, f"{name} {value!r} accepted at login")
