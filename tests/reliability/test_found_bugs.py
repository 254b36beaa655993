"""Defects found by the reliability suite, each a test of the behaviour that is right.

A defect still open is marked ``xfail(strict=True)``: when a fix makes its test pass, the
suite fails until the marker is removed. Fixed defects keep their tests here, unmarked, as
regression tests. docs/RELIABILITY.md lists them all, with the fix each one got or needs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from tests.reliability.fakes import DENY_ALL, b64, loopback_connection, wait_until
from tests.reliability.strategies import rsa_pem
from tests.support.faulty_servers import (
    EchoingPostgresServer,
    GarbageServer,
    ResetServer,
    StallServer,
    libpq_conninfo,
)
from tests.support.kube_login import plain_client
from warehouse_operator.models import CheckResult, ProbeResult, Reason
from warehouse_operator.probe import EgressPolicy, run_test
from warehouse_operator.providers.snowflake.keys import MAX_KDF_COST
from warehouse_operator.scheduler import Scheduler


def xfail(reason: str) -> pytest.MarkDecorator:
    """An open defect: the test fails until the operator is fixed."""
    return pytest.mark.xfail(strict=True, reason=reason)


def fixed(defect: str) -> pytest.MarkDecorator:
    """A fixed defect, kept as a regression test; ``defect`` says what was wrong."""
    return pytest.mark.fixed_defect(defect)


def pg_spec(host: str, port: int, ssl_mode: str = "prefer", **extra: Any) -> dict[str, Any]:
    return {
        "provider": "postgres",
        "credentialsSecretRef": {"name": "db"},
        "postgres": {"host": host, "port": port, "database": "app", "sslMode": ssl_mode},
        "testTimeout": "1s",
        **extra,
    }


def run(spec: Any, secret: Any, policy: EgressPolicy) -> ProbeResult:
    return asyncio.run(run_test(spec, secret, policy=policy))


# a Secret that is fine as far as the operator can tell before it reaches a server
SOME_SECRET = {"username": b64("a"), "password": b64("pw-0123456789")}


def run_against(server: ResetServer | GarbageServer, ssl_mode: str) -> ProbeResult:
    """A test of a connection to ``server`` with ``SOME_SECRET``, nothing denied."""
    return run(pg_spec(server.host, server.port, ssl_mode), SOME_SECRET, EgressPolicy())


# --- 1. an invalid duration was echoed, unredacted -------------------------------------------------

CANARY = "Cn-duration-canary-9c2e"


@fixed(
    "models.parse_duration quoted the value in its error (cut to 40 characters), and run_test "
    "built its redactor only after the spec was parsed: InvalidSpec messages were not redacted"
)
@pytest.mark.parametrize("field", ["testTimeout", "testInterval"])
@pytest.mark.parametrize("value", [CANARY, "1" * 20 + CANARY], ids=["whole", "cut"])
def test_invalid_duration_message_never_shows_a_secret_value(field: str, value: str) -> None:
    secret = {"username": b64("app"), "password": b64(CANARY)}
    result = run(pg_spec("127.0.0.1", 9, **{field: value}), secret, DENY_ALL)
    assert result.reason is Reason.INVALID_SPEC
    text = json.dumps(result.model_dump(mode="json"))
    assert CANARY[:12] not in text, result.message  # not even the start of it


# --- 2. escaped forms of the password were not redacted --------------------------------------------


def libpq_form(password: str) -> str:
    return libpq_conninfo({"password": password})


ECHOES: dict[str, tuple[str, Callable[[str], str]]] = {
    "libpq-quoted": ("it's-a-se\\cret-77", libpq_form),
    "sql-literal": ("it's-a-secret-77x", lambda p: "'" + p.replace("'", "''") + "'"),
    "json-quote": ('pa"ss-word-secret-77', lambda p: json.dumps({"password": p})),
    "json-unicode": ("pässwörd-sécret-77", lambda p: json.dumps({"password": p})),
    "whitespace": ("two  spaces-secret-77", lambda p: p),
    "url-path": ("a/b+c=d&e-secret-77", lambda p: "postgresql://app:" + quote(p) + "@db/app"),
}


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoingPostgresServer]:
    with EchoingPostgresServer("query-error") as server:
        yield server


@fixed(
    "Redactor matched the raw value, its Python repr and its URL-encoding only: a password "
    "repeated in libpq, SQL or JSON quoting, with its whitespace collapsed (the provider "
    "collapses it before redaction), or percent-encoded with '/' kept, stayed readable"
)
@pytest.mark.parametrize("form", sorted(ECHOES))
def test_password_repeated_in_another_form_is_redacted(
    echo_server: EchoingPostgresServer, form: str
) -> None:
    password, shown = ECHOES[form]
    echo_server.echo = lambda pw, _startup, _port: f"bad password {shown(pw)} given"
    secret = {"username": b64("app"), "password": b64(password)}
    result = run(pg_spec(echo_server.host, echo_server.port), secret, EgressPolicy())
    assert echo_server.received_passwords[-1] == password
    assert result.reason is Reason.PROVIDER_ERROR
    text = json.dumps(result.model_dump(mode="json"), ensure_ascii=False)
    assert shown(password) not in text, result.message
    # nor any recognisable part of it: every password above ends in "cret-77"
    assert "cret-77" not in text, result.message


# --- 3. a Secret name could leave the namespace --------------------------------------------------


class FakeKubeApi:
    """A Kubernetes API on 127.0.0.1 that serves two namespaces' Secrets and records paths."""

    def __init__(self, secrets: dict[tuple[str, str], dict[str, str]]) -> None:
        self.secrets = secrets
        self.paths: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(f"{request.method} {request.raw_path}")
        parts = request.path.strip("/").split("/")
        if (
            request.method == "GET"
            and len(parts) == 6
            and parts[:2] == ["api", "v1"]
            and parts[4] == "secrets"
        ):
            data = self.secrets.get((parts[3], parts[5]))
            if data is None:
                return web.json_response({"kind": "Status", "code": 404}, status=404)
            return web.json_response({"kind": "Secret", "data": data})
        if request.method == "PATCH":
            return web.json_response(await request.json())
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def tenant_a_with_ref(name: str) -> list[str]:
    """The Secret reads made for a connection in tenant-a whose Secret reference is ``name``."""
    api = FakeKubeApi({("tenant-b", "db"): {"username": b64("b"), "password": b64(CANARY)}})
    await api.start()
    client = plain_client(api.url, token="t")
    scheduler = Scheduler(client, max_concurrent=1, policy=DENY_ALL, startup_spread=0.1)
    scheduler.start()
    try:
        scheduler.observe(loopback_connection("tenant-a", "c", {"name": name}), "ADDED")
        # a Pending status, then the test's result
        await wait_until(lambda: sum(p.startswith("PATCH") for p in api.paths) >= 2, timeout=5.0)
    finally:
        await scheduler.stop()
        await client.close()
        await api.stop()
    assert sum(p.startswith("PATCH") for p in api.paths) >= 2, api.paths
    return [p.split(" ", 1)[1] for p in api.paths if p.startswith("GET")]


@fixed(
    "kube.KubeClient.get_secret_data put the name into the URL unescaped, and the HTTP "
    "client resolves '..' segments: a name like '../../tenant-b/secrets/db' read another "
    "namespace's Secret (the CRD's CEL rule stops such names at admission, when it is enforced)"
)
@pytest.mark.parametrize(
    "name", ["../../tenant-b/secrets/db", "%2e%2e/%2e%2e/tenant-b/secrets/db", "..", "db/../../x"]
)
def test_secret_reference_never_leaves_the_namespace(name: str) -> None:
    reads = asyncio.run(tenant_a_with_ref(name))
    for path in reads:
        assert path.startswith("/api/v1/namespaces/tenant-a/secrets/"), reads
        assert "/" not in path.removeprefix("/api/v1/namespaces/tenant-a/secrets/"), reads


def test_secret_reads_are_seen_by_the_fake_api() -> None:
    """The control for the test above: a plain name is read, where it should be."""
    assert asyncio.run(tenant_a_with_ref("db")) == ["/api/v1/namespaces/tenant-a/secrets/db"]


# --- 4. a costly encrypted key blocked the event loop ---------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = (
        bytes([size])
        if size < 128
        else bytes([0x80 | ((size.bit_length() + 7) // 8)])
        + size.to_bytes((size.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + body


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(p) for p in dotted.split("."))
    out = bytes([40 * first + second])
    for part in rest:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, out)


def costly_encrypted_key(iterations: int) -> bytes:
    """An encrypted PKCS#8 PEM (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) whose key derivation
    takes ``iterations`` rounds. The ciphertext is random: the cost is paid before any loader
    can tell that no passphrase will ever open it."""

    def seq(*parts: bytes) -> bytes:
        return _der(0x30, b"".join(parts))

    pbkdf2 = seq(
        _oid("1.2.840.113549.1.5.12"),
        seq(
            _der(0x04, os.urandom(16)),
            _der(0x02, iterations.to_bytes((iterations.bit_length() + 8) // 8, "big")),
            seq(_oid("1.2.840.113549.2.9"), b"\x05\x00"),
        ),
    )
    cipher = seq(_oid("2.16.840.1.101.3.4.1.42"), _der(0x04, os.urandom(16)))
    der = seq(seq(_oid("1.2.840.113549.1.5.13"), seq(pbkdf2, cipher)), _der(0x04, os.urandom(1232)))
    body = base64.b64encode(der).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{lines}\n-----END ENCRYPTED PRIVATE KEY-----\n".encode()


COSTLY_KEY_DEFECT = (
    "snowflake parse_credentials decrypted the private key on the event loop, with whatever "
    "key-derivation cost the key declared: one tenant's key stalled every test and handler of "
    "the operator (about 0.2 s per million PBKDF2 rounds; the format allows 2^31)"
)


@pytest.mark.parametrize(
    "iterations",
    [
        pytest.param(4_000_000, marks=fixed(COSTLY_KEY_DEFECT), id="above-cap"),
        pytest.param(
            MAX_KDF_COST,
            marks=fixed(
                "keys up to the iteration cap are derived in a worker thread, but cryptography "
                "holds the GIL while it derives: at a 2,000,000-iteration cap the event loop "
                "stalled 0.61 s on every test of that connection; the cap is now lower and a "
                "parsed key is kept per Secret version"
            ),
            id="at-cap",
        ),
    ],
)
def test_costly_encrypted_key_does_not_stall_the_operator(iterations: int) -> None:
    spec = {
        "provider": "snowflake",
        "credentialsSecretRef": {"name": "sf"},
        "snowflake": {"account": "acme", "authMethod": "keyPair", "endpoint": "http://127.0.0.1:9"},
        "testTimeout": "1s",
    }
    secret = {
        "username": b64("probe"),
        "private_key": b64(costly_encrypted_key(iterations)),
        "private_key_passphrase": b64("guess"),
    }

    async def scenario() -> tuple[ProbeResult, float, float]:
        gaps: list[float] = []

        async def heartbeat() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        result = await run_test(spec, secret, policy=DENY_ALL)
        took = time.monotonic() - started
        await asyncio.sleep(0.05)  # let the heartbeat see the gap, if there was one
        beat.cancel()
        return result, took, max(gaps)

    result, took, longest_stall = asyncio.run(scenario())
    assert result.reason in (Reason.INVALID_CREDENTIALS, Reason.TIMEOUT)
    assert longest_stall < 0.25, f"the event loop stalled {longest_stall:.2f} s"
    assert took <= 1.0 + 0.5, took


# --- 5. the egress policy could be walked around ----------------------------------------------


@fixed(
    "EgressPolicy checked 0.0.0.0 (and '0', which resolves to it) as written, but connecting "
    "to it reaches the local host: a deny list on 127.0.0.0/8 did not keep tests off it"
)
@pytest.mark.parametrize("host", ["0.0.0.0", "0"])
def test_unspecified_address_is_the_local_host(host: str) -> None:
    policy = EgressPolicy.from_cidrs([], ["127.0.0.0/8", "::1/128", "169.254.0.0/16"])
    with StallServer() as local:
        result = run(
            pg_spec(host, local.port, "disable"),
            SOME_SECRET,
            policy,
        )
        time.sleep(0.1)
        reached = local.connections_accepted
    assert reached == 0
    assert result.reason is Reason.DESTINATION_DENIED, result


# --- 6. DNS rebinding: its regression test is in test_hostile_tenants.py -------------------------


# --- 7 and 8. reasons for a reset and for a server that is not PostgreSQL --------------------------


@fixed(
    "a connection reset before any PostgreSQL message was ProviderError 'refused the "
    "connection: server closed the connection unexpectedly' most times and Unreachable "
    "'Connection reset by peer' the others, by timing alone (measured: 33 and 7 in 40 with "
    "sslMode prefer): the same fault got two reasons, and mostly the wrong one"
)
@pytest.mark.parametrize("ssl_mode", ["disable", "prefer", "require"])
def test_reset_is_always_unreachable(ssl_mode: str) -> None:
    with ResetServer() as server:
        reasons = [run_against(server, ssl_mode).reason for _ in range(8)]
    assert set(reasons) == {Reason.UNREACHABLE}, reasons


@fixed(
    "an answer that is not PostgreSQL was TLSError under sslMode prefer/require ('invalid "
    "response to SSL negotiation') and ProviderError under disable, and the message quoted the "
    "first byte the foreign service sent, which tells services apart"
)
@pytest.mark.parametrize("ssl_mode", ["disable", "prefer", "require"])
def test_foreign_protocol_is_provider_error_and_tells_nothing_of_the_service(ssl_mode: str) -> None:
    messages = []
    for payload in (b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\x15\x03\x01\x00\x02\x02\x50"):
        with GarbageServer(payload) as server:
            result = run_against(server, ssl_mode)
            messages.append(result.message.replace(f"{server.host}:{server.port}", "ADDRESS"))
        assert result.reason is Reason.PROVIDER_ERROR, result
    assert messages[0] == messages[1], messages


# --- 9. concurrent tests fail while credentials are parsed ---------------------------------------


@fixed(
    "run_test parsed credentials on a pool of 4 threads and, when all 4 were busy, failed the "
    "test at once with Timeout 'every credential worker is busy' instead of waiting: of 20 "
    "tests started together (the scheduler runs up to 50), 16 failed although nothing was wrong"
)
@pytest.mark.parametrize("provider", ["postgres", "snowflake-keypair"])
def test_tests_started_together_all_get_their_result(provider: str) -> None:
    if provider == "postgres":
        spec = pg_spec("127.0.0.1", 5432)
        secret = {"username": b64("app"), "password": b64("pw-0123456789")}
    else:
        spec = {
            "provider": "snowflake",
            "credentialsSecretRef": {"name": "sf"},
            "snowflake": {
                "account": "acme",
                "authMethod": "keyPair",
                "endpoint": "http://127.0.0.1:9",
            },
            "testTimeout": "10s",
        }
        secret = {"username": b64("probe"), "private_key": b64(rsa_pem())}

    async def together() -> list[ProbeResult]:
        return list(
            await asyncio.gather(*(run_test(spec, secret, policy=DENY_ALL) for _ in range(20)))
        )

    reasons = [r.reason for r in asyncio.run(together())]
    assert set(reasons) == {Reason.DESTINATION_DENIED}, reasons


# --- 10. a missing Secret leaves no failed check ----------------------------------------------


@fixed(
    "when the Secret does not exist, status.checks held only 'spec: Passed': no check was "
    "Failed, so the checks did not say which step broke"
)
def test_missing_secret_shows_a_failed_check() -> None:
    result = run(pg_spec("127.0.0.1", 5432), None, DENY_ALL)
    assert result.reason is Reason.SECRET_NOT_FOUND
    assert result.checks, result
    assert result.checks[-1].result is CheckResult.FAILED, result.checks
    assert result.checks[-1].message == result.message
