"""The blocking part of a Snowflake test: the connector's calls, run on worker threads."""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any

from warehouse_operator.models import ProbeFailure, Reason, SnowflakeSpec
from warehouse_operator.providers.snowflake.credentials import SnowflakeCredentials
from warehouse_operator.providers.snowflake.target import SnowflakeTarget, identifier

QUERY_TAG = "warehouse-operator connection test"


def connect_params(
    sf: SnowflakeSpec,
    credentials: SnowflakeCredentials,
    target: SnowflakeTarget,
    budget: float,
) -> dict[str, Any]:
    """Keyword arguments for ``snowflake.connector.connect`` (pure; the key is added later)."""
    seconds = max(1, math.ceil(budget))
    params: dict[str, Any] = {
        "account": sf.account,
        "user": credentials.username,
        "host": target.host,
        "port": target.port,
        "protocol": target.protocol,
        # Snowflake checks the role, database, schema and warehouse at login, by metadata
        "validate_default_parameters": True,
        "login_timeout": seconds,
        "network_timeout": seconds,
        "socket_timeout": seconds,
        "client_session_keep_alive": False,
        "session_parameters": {"QUERY_TAG": QUERY_TAG},
    }
    if credentials.password is not None:
        params["password"] = credentials.password
    else:
        params["authenticator"] = "SNOWFLAKE_JWT"
    if sf.role:
        params["role"] = sf.role
    if sf.warehouse:
        params["warehouse"] = sf.warehouse
    if sf.database:
        params["database"] = sf.database
        params["schema"] = sf.schema_
    return params


_connector_ready = threading.Lock()
_connector_quiet = False


def prepare_connector_import() -> None:
    """Settings that must be in place before the connector is imported and used."""
    global _connector_quiet
    # without it, about one connect in 25 stalls ~5 s probing cloud metadata endpoints
    os.environ.setdefault("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
    with _connector_ready:
        if _connector_quiet:
            return
        # The connector logs request bodies and tokens at DEBUG/INFO (masked by its own
        # filter, which is pattern-based): keep its loggers at WARNING unless the operator's
        # logging configuration chose a level for them.
        connector_logger = logging.getLogger("snowflake.connector")
        if connector_logger.level == logging.NOTSET:
            connector_logger.setLevel(logging.WARNING)
        _connector_quiet = True


def open_connection(params: dict[str, Any], private_key_der: bytes | None) -> Any:
    import snowflake.connector

    kwargs = dict(params)
    if private_key_der is not None:
        from snowflake.connector.auth import AuthByKeyPair

        auth = AuthByKeyPair(private_key=private_key_der, timeout=params["login_timeout"])
        # A key-pair login otherwise waits JWT_CNXN_WAIT_TIME (10 s) per request, whatever
        # socket_timeout says: hold it to the test's budget.
        auth._socket_timeout = params["socket_timeout"]
        kwargs["auth_class"] = auth
    return snowflake.connector.connect(**kwargs)


def close(conn: Any) -> None:
    conn.close()


def warehouse_state(conn: Any, warehouse: str) -> str | None:
    """The warehouse's state from ``SHOW WAREHOUSES`` (metadata: it never resumes it)."""
    name = identifier(warehouse)
    literal = name.replace("\\", "\\\\").replace("'", "''")
    cursor = conn.cursor()
    try:
        cursor.execute(f"SHOW WAREHOUSES LIKE '{literal}'")
        columns = [str(d[0]).lower() for d in cursor.description or ()]
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if "name" not in columns or "state" not in columns:
        raise ProbeFailure(
            Reason.PROVIDER_ERROR, "SHOW WAREHOUSES did not return name and state columns"
        )
    name_at, state_at = columns.index("name"), columns.index("state")
    for row in rows:
        if row[name_at] == name:
            return str(row[state_at])
    return None


def current_version(conn: Any) -> str:
    cursor = conn.cursor()
    try:
        cursor.execute("SELECT CURRENT_VERSION()")
        row = cursor.fetchone()
    finally:
        cursor.close()
    if not row or row[0] is None:
        raise ProbeFailure(Reason.PROVIDER_ERROR, "SELECT CURRENT_VERSION() returned no row")
    return str(row[0])
