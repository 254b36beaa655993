"""What a connection test reports: its checks in the order it runs them, for each provider,
and everything of a result a user could ever see (where no secret may show).

The orders are written out here rather than read from the operator: a test of the order must
not take it from the code under test."""

from __future__ import annotations

from tests.support.encoding import b64
from warehouse_operator.models import ProbeResult

__all__ = [
    "BIGQUERY_CHECKS",
    "POSTGRES_CHECKS",
    "PRE_CONNECT",
    "SNOWFLAKE_CHECKS",
    "assert_not_leaked",
    "everything_shown",
    "pem_lines",
]

# every provider, before it opens a connection
PRE_CONNECT = ["spec", "credentials", "destination"]
POSTGRES_CHECKS = [*PRE_CONNECT, "connect", "authenticate", "query"]
SNOWFLAKE_CHECKS = [
    *PRE_CONNECT,
    "connect",
    "authenticate",
    "role",
    "database",
    "warehouse",
    "query",
]
BIGQUERY_CHECKS = [*PRE_CONNECT, "authenticate", "query", "dataset"]


def everything_shown(result: ProbeResult) -> str:
    """All a user could ever see of a result: status fields, checks, repr."""
    return f"{result.model_dump_json(by_alias=True)}\n{result!r}\n{result}"


def pem_lines(pem: str) -> set[str]:
    """The body lines of a PEM block: a leak of any one of them is a leak of the key."""
    return {line for line in pem.splitlines() if len(line) >= 12 and "-----" not in line}


def assert_not_leaked(result: ProbeResult, *secrets: str) -> None:
    """None of ``secrets`` is in anything shown of ``result``: not whole, not in base64, and
    (for a key) not one line of its PEM body."""
    shown = everything_shown(result)
    for secret in secrets:
        assert secret not in shown
        assert b64(secret) not in shown
        for line in pem_lines(secret):
            assert line not in shown
