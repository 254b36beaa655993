"""Snowflake connector errors -> a reason, a message and the stage that failed (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from warehouse_operator.models import Reason
from warehouse_operator.providers import network
from warehouse_operator.providers.snowflake.target import SnowflakeTarget

# Snowflake's own error codes (login-time codes come from the service, 25xxxx from the connector)
INCORRECT_USERNAME_OR_PASSWORD = 390100
INVALID_JWT = 390144
ROLE_NOT_GRANTED = 390189
OBJECT_NOT_FOUND_AT_LOGIN = 390201
IP_NOT_ALLOWED = 390422
SQL_OBJECT_NOT_FOUND = 2003
SQL_INSUFFICIENT_PRIVILEGES = 3001


@dataclass(frozen=True)
class LoginContext:
    """What a classified message may name (never a secret)."""

    user: str
    target: SnowflakeTarget
    role: str | None = None
    database: str | None = None
    schema: str | None = None
    warehouse: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Classified:
    reason: Reason
    message: str
    stage: str  # the stage that failed: authenticate, role, database, warehouse, query


def _errno(exc: BaseException) -> int | None:
    value = getattr(exc, "errno", None)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _server_text(exc: BaseException) -> str:
    """The service's words, without the connector's "Failed to connect to DB: host:port." prefix."""
    # raw_msg: the connector's msg is prefixed with "<errno> (<sqlstate>): "
    text = str(getattr(exc, "raw_msg", None) or getattr(exc, "msg", None) or exc)
    text = re.sub(r"^Failed to connect to DB(: [^\s]+)?\.\s*", "", text)
    return " ".join(text.split()) or type(exc).__name__


def classify_error(exc: BaseException, ctx: LoginContext, *, during: str) -> Classified:
    """Map a connector error to a reason, a message and the stage that failed (pure).

    ``during`` is the stage that was running: ``authenticate`` for the login, else the query's.
    Codes decide first: the service sends them for everything it refuses at login.
    """
    code = _errno(exc)
    text = _server_text(exc)
    user = repr(ctx.user)
    if code == INCORRECT_USERNAME_OR_PASSWORD:
        return Classified(
            Reason.AUTHENTICATION_FAILED,
            f"Snowflake rejected user {user}: incorrect username or password (390100)",
            "authenticate",
        )
    if code == INVALID_JWT:
        hint = (
            f"; the user's RSA_PUBLIC_KEY_FP (or RSA_PUBLIC_KEY_2_FP) must be {ctx.fingerprint}"
            if ctx.fingerprint
            else ""
        )
        return Classified(
            Reason.AUTHENTICATION_FAILED,
            f"Snowflake rejected the key-pair login of user {user}: JWT token is invalid "
            f"(390144){hint}",
            "authenticate",
        )
    if code == ROLE_NOT_GRANTED:
        role = repr(ctx.role) if ctx.role else "the requested role"
        return Classified(
            Reason.PERMISSION_DENIED,
            f"role {role} is not granted to user {user} (390189)",
            "role",
        )
    if code == OBJECT_NOT_FOUND_AT_LOGIN:
        low = text.lower()
        if "warehouse" in low:
            what, stage = f"warehouse {ctx.warehouse!r}", "warehouse"
        elif "schema" in low:
            what, stage = f"schema {ctx.database}.{ctx.schema}", "database"
        elif "database" in low:
            what, stage = f"database {ctx.database!r}", "database"
        else:
            what, stage = "an object of the session (database, schema or warehouse)", "database"
        return Classified(
            Reason.NOT_FOUND,
            f"{what} does not exist or not authorized for the session's role (390201)",
            stage,
        )
    if code == IP_NOT_ALLOWED:
        return Classified(
            Reason.PERMISSION_DENIED,
            f"Snowflake refused the login by network policy (390422): {text}",
            "authenticate",
        )
    if code == SQL_OBJECT_NOT_FOUND:
        return Classified(Reason.NOT_FOUND, f"{text} ({code:06d})", during)
    if code == SQL_INSUFFICIENT_PRIVILEGES:
        return Classified(Reason.PERMISSION_DENIED, f"{text} ({code:06d})", during)
    network_failure = network.classify_network_error(exc, str(ctx.target))
    if network_failure is not None:
        return Classified(*network_failure, during)
    label = f"Snowflake error {code}" if code is not None else type(exc).__name__
    return Classified(Reason.PROVIDER_ERROR, f"{label}: {text}", during)
