"""PostgreSQL connection tests against servers that misbehave at the TCP, TLS or protocol level.

Each ends with a failure reason within testTimeout plus a small margin, with the check that
broke (``connect``) marked Failed. Reasons, and why:

- closed port (refused) -> Unreachable: nothing listens at that address.
- filtered port (SYN dropped) -> Timeout: nothing answered within testTimeout.
- accepts, then silence -> Timeout: same; the connection was accepted, the server never spoke.
- TLS handshake stalls after the server agreed to TLS -> Timeout, not TLSError: nothing was
  refused or failed verification; the server stopped answering, which is what Timeout says.
- accepts, then resets (RST) -> Unreachable: no PostgreSQL ever answered at that address
  (a load balancer without backends, a firewall that resets, a database restarting).
- answers with bytes that are not PostgreSQL -> ProviderError: something answered, but not a
  PostgreSQL server (a wrong port); not TLSError, which would send the user to look at TLS.

The last two are not what the operator reports today: those cases are in test_found_bugs.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.reliability.fakes import b64, fuzz
from tests.support.faulty_servers import (
    FilteredPort,
    GarbageServer,
    ResetServer,
    StallServer,
    TLSStallServer,
)
from tests.support.pgserver import CertificateAuthority, unused_port
from warehouse_operator.models import CheckResult, ProbeResult, Reason
from warehouse_operator.probe import EgressPolicy, run_test

TEST_TIMEOUT = "1s"
BUDGET = 1.0
MARGIN = 0.5  # scheduling, socket teardown, a busy CI machine
SECRET = {"username": b64("app"), "password": b64("pw-0123456789")}
HTTP_REPLY = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def pg_spec(port: int, ssl_mode: str = "prefer", timeout: str = TEST_TIMEOUT) -> dict[str, Any]:
    return {
        "provider": "postgres",
        "credentialsSecretRef": {"name": "db"},
        "postgres": {"host": "127.0.0.1", "port": port, "database": "app", "sslMode": ssl_mode},
        "testTimeout": timeout,
    }


def probe(
    port: int,
    ssl_mode: str = "prefer",
    timeout: str = TEST_TIMEOUT,
    secret: dict[str, str] = SECRET,
) -> tuple[ProbeResult, float]:
    started = time.monotonic()
    result = asyncio.run(run_test(pg_spec(port, ssl_mode, timeout), secret, policy=EgressPolicy()))
    return result, time.monotonic() - started


def connect_failed(result: ProbeResult) -> bool:
    checks = {c.name: c.result for c in result.checks}
    return checks.get("connect") is CheckResult.FAILED and "authenticate" not in checks


@pytest.mark.parametrize("ssl_mode", ["disable", "prefer", "require", "verify-full"])
def test_closed_port_is_unreachable(ssl_mode: str) -> None:
    result, elapsed = probe(unused_port(), ssl_mode)
    assert result.reason is Reason.UNREACHABLE, result
    assert connect_failed(result)
    assert elapsed < MARGIN


@pytest.mark.parametrize("ssl_mode", ["prefer", "require"])
def test_filtered_port_is_timeout(ssl_mode: str) -> None:
    with FilteredPort() as port:
        result, elapsed = probe(port.port, ssl_mode)
    assert result.reason is Reason.TIMEOUT, result
    assert connect_failed(result)
    assert BUDGET - 0.05 <= elapsed <= BUDGET + MARGIN


@pytest.fixture(scope="module")
def stall_server() -> Iterator[StallServer]:
    with StallServer() as server:
        yield server


@pytest.mark.parametrize(
    ("ssl_mode", "timeout", "budget"),
    [
        ("disable", "1s", 1.0),
        ("prefer", "1s", 1.0),
        ("verify-full", "1s", 1.0),
        ("prefer", "2500ms", 2.5),
    ],
)
def test_silent_server_is_timeout(
    stall_server: StallServer, ssl_mode: str, timeout: str, budget: float
) -> None:
    accepted = stall_server.connections_accepted
    result, elapsed = probe(stall_server.port, ssl_mode, timeout)
    assert result.reason is Reason.TIMEOUT, result
    assert connect_failed(result)
    assert budget - 0.05 <= elapsed <= budget + MARGIN
    assert stall_server.connections_accepted > accepted  # it did connect, then waited


@pytest.fixture(scope="module")
def tls_stall_server() -> Iterator[TLSStallServer]:
    with TLSStallServer() as server:
        yield server


@pytest.mark.parametrize("ssl_mode", ["prefer", "require", "verify-ca", "verify-full"])
def test_stalled_tls_handshake_is_timeout(tls_stall_server: TLSStallServer, ssl_mode: str) -> None:
    # verify-* needs a CA: without one libpq refuses before connecting (TLSError)
    secret = SECRET | {"ca.crt": b64(CertificateAuthority().cert_pem)}
    result, elapsed = probe(tls_stall_server.port, ssl_mode, secret=secret)
    assert result.reason is Reason.TIMEOUT, result
    assert connect_failed(result)
    assert BUDGET - 0.05 <= elapsed <= BUDGET + MARGIN


@pytest.mark.parametrize("ssl_mode", ["disable", "prefer", "require"])
def test_reset_connection_fails_fast(ssl_mode: str) -> None:
    with ResetServer() as server:
        result, elapsed = probe(server.port, ssl_mode)
        assert server.connections_accepted >= 1
    assert not result.ok
    assert connect_failed(result)
    assert elapsed < MARGIN


@pytest.mark.parametrize(
    "payload", [HTTP_REPLY, bytes(range(0x30, 0x30 + 64))], ids=["http", "binary"]
)
@pytest.mark.parametrize("ssl_mode", ["disable", "prefer", "require"])
def test_garbage_answer_fails_fast(payload: bytes, ssl_mode: str) -> None:
    with GarbageServer(payload) as server:
        result, elapsed = probe(server.port, ssl_mode)
    assert not result.ok
    assert connect_failed(result)
    assert elapsed < MARGIN


@pytest.fixture(scope="module")
def garbage_server() -> Iterator[GarbageServer]:
    with GarbageServer(b"x") as server:
        yield server


FAILURES = {Reason.UNREACHABLE, Reason.TIMEOUT, Reason.TLS_ERROR, Reason.PROVIDER_ERROR}


@fuzz(100)
@given(
    first=st.sampled_from([b"", b"S", b"N", b"E", b"R", b"\x00"]),
    rest=st.binary(min_size=0, max_size=300),
    rounds=st.integers(1, 3),
    greet=st.booleans(),
    ssl_mode=st.sampled_from(["disable", "prefer", "require"]),
)
def test_random_bytes_never_crash_or_hang(
    garbage_server: GarbageServer,
    first: bytes,
    rest: bytes,
    rounds: int,
    greet: bool,
    ssl_mode: str,
) -> None:
    """Whatever a server sends, the test ends within its budget with a failure reason."""
    garbage_server.payload = (first + rest) or b"\x00"
    garbage_server.rounds = rounds
    garbage_server.greet = greet
    result, elapsed = probe(garbage_server.port, ssl_mode)
    event(f"{first!r} -> {result.reason.value}")
    assert result.reason in FAILURES, result
    assert result.message
    assert len(result.message) <= 500
    assert elapsed <= BUDGET + MARGIN
