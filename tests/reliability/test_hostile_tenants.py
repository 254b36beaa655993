"""A tenant who owns a WarehouseConnection and a Secret in one namespace, and wants more.

- Egress: a host name that resolves to a denied address — alone, among allowed ones, as an
  IPv4-mapped IPv6 address — is refused before any packet is sent, every address a name
  resolves to is checked, and a name whose DNS answer changes after the check (rebinding)
  cannot reach the denied address. These run in private namespaces with their own DNS
  (isolated.py).
- Other namespaces: the Secret is only ever asked for in the connection's own namespace,
  whatever the reference holds, and what the tenant is told does not depend on what exists
  elsewhere.
- Port scanning: the messages for a closed, a filtered and a silent port say no more than
  their reason does.
- Side effects: the PostgreSQL test runs ``SELECT 1`` and nothing else (server's own log), and
  succeeds for a role whose transactions are read-only.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.fakes import RecordingApi, b64, loopback_connection, wait_until
from tests.reliability.isolated import run_isolated
from tests.support.faulty_servers import FilteredPort, StallServer
from tests.support.pgserver import PostgresServer, unused_port
from warehouse_operator.probe import EgressPolicy, run_test
from warehouse_operator.scheduler import Scheduler

SECRET = {"username": b64("app"), "password": b64("pw-0123456789")}
CANARY_HOST = f"cn-{secrets.token_hex(8)}.test"


def pg_spec(host: str, port: int | str = "{port:guard}", timeout: str = "2s") -> dict[str, Any]:
    return {
        "provider": "postgres",
        "credentialsSecretRef": {"name": "db"},
        "postgres": {"host": host, "port": port, "database": "app", "sslMode": "disable"},
        "testTimeout": timeout,
    }


DEFAULT = {"allowed": [], "denied": ["169.254.0.0/16", "fe80::/10"]}


def case(
    name: str,
    host: str,
    answers: list[list[str]] | None = None,
    policy: dict[str, list[str]] = DEFAULT,
    **extra: Any,
) -> dict[str, Any]:
    """A test of a connection to ``host`` in the isolated run: its DNS queries get ``answers``
    in turn (one list of addresses each; the system resolver's when None)."""
    out: dict[str, Any] = {"id": name, "spec": pg_spec(host), "policy": policy, **extra}
    if answers is not None:
        out["zone"] = {host: answers}
    return out


EGRESS_CASES: list[dict[str, Any]] = [
    case("metadata", "metadata.test", [["169.254.169.254"]]),
    case("allowed-and-metadata", "mixed.test", [["127.0.0.1", "169.254.169.254"]]),
    case("mapped-metadata", "mapped.test", [["::ffff:169.254.169.254"]]),
    case("link-local-v6", "ll.test", [["127.0.0.1", "fe80::a9fe:a9fe"]]),
    case("localhost-deny-v6", "localhost", policy={"allowed": [], "denied": ["::1/128"]}),
    case("localhost-deny-v4", "localhost", policy={"allowed": [], "denied": ["127.0.0.0/8"]}),
    case("localhost-allow-v4-only", "localhost", policy={"allowed": ["127.0.0.0/8"], "denied": []}),
    case("localhost-open", "localhost", policy={"allowed": [], "denied": []}),
    # the first answer is allowed, every later one is the denied address (DNS rebinding)
    case(
        "rebinding",
        "rebind.test",
        [["127.0.0.2"], ["127.0.0.1"]],
        policy={"allowed": [], "denied": ["127.0.0.1/32"]},
    ),
    case("dns-failure", "no-such-host.invalid"),
    case(
        "canary-host",
        CANARY_HOST,
        [["127.0.0.1"]],
        spec=pg_spec(CANARY_HOST, "{port:echo}"),
        secret={"username": b64("app"), "password": b64(CANARY_HOST)},
    ),
]


@pytest.fixture(scope="module")
def egress(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    cases = [{"secret": SECRET, **case} for case in EGRESS_CASES]
    job = {"servers": {"guard": "count", "echo": "echo-auth-error"}, "cases": cases}
    results = run_isolated(job, tmp_path_factory.mktemp("isolated"))
    return {r["id"]: r for r in results}


@pytest.mark.parametrize(
    ("case", "denied_address"),
    [
        ("metadata", "169.254.169.254"),
        ("allowed-and-metadata", "169.254.169.254"),
        ("mapped-metadata", "::ffff:169.254.169.254"),
        ("link-local-v6", "fe80::a9fe:a9fe"),
        ("localhost-deny-v6", "::1"),
        ("localhost-deny-v4", "127.0.0.1"),
        ("localhost-allow-v4-only", "::1"),
    ],
)
def test_every_resolved_address_is_checked(
    egress: dict[str, dict[str, Any]], case: str, denied_address: str
) -> None:
    out = egress[case]
    result = out["result"]
    assert result["reason"] == "DestinationDenied", result
    assert f"resolves to {denied_address}," in result["message"], result["message"]
    assert [c["name"] for c in result["checks"]][-1] == "destination"
    assert out["accepted"]["guard"] == 0  # not one connection, not even to the allowed address


def test_the_name_really_resolves_to_both_addresses(egress: dict[str, dict[str, Any]]) -> None:
    """Without a deny list the same test reaches the listener: the denials above were real."""
    out = egress["localhost-open"]
    assert out["accepted"]["guard"] >= 1, out
    assert out["result"]["reason"] != "DestinationDenied"


def test_dns_rebinding_cannot_reach_a_denied_address(egress: dict[str, dict[str, Any]]) -> None:
    """The address checked is the address connected to: a second, different DNS answer is
    never asked for or never used."""
    out = egress["rebinding"]
    assert out["accepted"]["guard"] == 0, out
    assert ["rebind.test", 1] in out["dns"]
    assert out["result"]["reason"] == "Unreachable", out["result"]  # nothing at 127.0.0.2


def test_dns_failure_is_unreachable(egress: dict[str, dict[str, Any]]) -> None:
    out = egress["dns-failure"]
    assert out["result"]["reason"] == "Unreachable", out["result"]
    assert "no-such-host.invalid" in out["result"]["message"]
    assert ["no-such-host.invalid", 1] in out["dns"]  # our DNS server was asked, and said no
    assert out["elapsed"] < 1.0


def test_canary_as_host_name_never_in_the_result(egress: dict[str, dict[str, Any]]) -> None:
    """The password is also the host name (and the server repeats it): still never shown."""
    out = egress["canary-host"]
    assert out["accepted"]["echo"] == 1
    text = json.dumps(out["result"])
    assert CANARY_HOST not in text, out["result"]
    assert "[REDACTED]" in out["result"]["message"]


# --- other namespaces ---------------------------------------------------------------------------

HOSTILE_REFS: list[dict[str, Any]] = [
    {"name": "../tenant-b/db"},
    {"name": "../../tenant-b/secrets/db"},
    {"name": "tenant-b/db"},
    {"name": "db", "namespace": "tenant-b"},
    {"name": "db", "keys": {"password": "../tenant-b/db"}},
]
CANARY = "Cn-tenant-b-password-77e1"


async def run_tenant(refs: list[dict[str, Any]], other_secret_exists: bool) -> RecordingApi:
    api = RecordingApi()
    if other_secret_exists:
        api.secrets[("tenant-b", "db")] = {"username": b64("b"), "password": b64(CANARY)}
    scheduler = Scheduler(api, max_concurrent=4, policy=EgressPolicy.from_cidrs([], ["0.0.0.0/0"]))
    scheduler.start()
    try:
        for i, ref in enumerate(refs):
            scheduler.observe(
                loopback_connection("tenant-a", f"c{i}", ref, generation=None), "ADDED"
            )
        done = {("tenant-a", f"c{i}") for i in range(len(refs))}
        assert await wait_until(
            lambda: done <= {(p.namespace, p.name) for p in api.patches if p.status.get("reason")},
            timeout=5.0,
        )
    finally:
        await scheduler.stop()
    return api


def test_secret_only_read_in_own_namespace() -> None:
    api = asyncio.run(run_tenant(HOSTILE_REFS, other_secret_exists=True))
    assert api.secret_reads, "no Secret was read at all"
    assert {ns for ns, _ in api.secret_reads} == {"tenant-a"}, api.secret_reads
    assert ("tenant-a", "db") in api.secret_reads  # the smuggled namespace key is ignored
    assert CANARY not in json.dumps([p.status for p in api.patches])


def test_answer_does_not_depend_on_other_namespaces() -> None:
    def told(api: RecordingApi) -> list[tuple[str, str, str]]:
        return sorted(
            (p.name, p.status["reason"], p.status["message"])
            for p in api.patches
            if p.status.get("reason")
        )

    with_other = asyncio.run(run_tenant(HOSTILE_REFS, other_secret_exists=True))
    without_other = asyncio.run(run_tenant(HOSTILE_REFS, other_secret_exists=False))
    assert told(with_other) == told(without_other)
    assert {reason for _, reason, _ in told(with_other)} == {"SecretNotFound"}


# --- port scanning ------------------------------------------------------------------------------


def probe_message(port: int) -> tuple[str, list[str], str]:
    """(reason, check messages, message) with the address and the timeout taken out."""
    result = asyncio.run(
        run_test(pg_spec("127.0.0.1", port, timeout="1s"), SECRET, policy=EgressPolicy())
    )

    def scrub(text: str) -> str:
        return text.replace(f"127.0.0.1:{port}", "ADDRESS").replace("(1s)", "(TIMEOUT)")

    checks = [scrub(f"{c.name}:{c.result.value}:{c.message}") for c in result.checks]
    return result.reason.value, checks, scrub(result.message)


@pytest.fixture(scope="module")
def scanned() -> Iterator[dict[str, tuple[str, list[str], str]]]:
    with FilteredPort() as f1, FilteredPort() as f2, StallServer() as s1:
        yield {
            "closed-1": probe_message(unused_port()),
            "closed-2": probe_message(unused_port()),
            "filtered-1": probe_message(f1.port),
            "filtered-2": probe_message(f2.port),
            "silent": probe_message(s1.port),
        }


def test_closed_and_filtered_ports_tell_only_their_reason(
    scanned: dict[str, tuple[str, list[str], str]],
) -> None:
    assert scanned["closed-1"] == scanned["closed-2"]
    assert scanned["filtered-1"] == scanned["filtered-2"]
    assert scanned["closed-1"][0] == "Unreachable"
    assert scanned["filtered-1"][0] == "Timeout"
    # an open port that never answers looks exactly like a filtered one
    assert scanned["silent"] == scanned["filtered-1"]
    for _reason, checks, message in scanned.values():
        # no errno, timing or address detail beyond the reason's own words
        assert not re.search(r"\d", message), message
        assert not any(re.search(r"\d", c) for c in checks), checks


# --- side effects -------------------------------------------------------------------------------


@pytest.fixture
def logged_read_only_role(pg_server: PostgresServer) -> Iterator[PostgresServer]:
    """The app role's statements are logged by the server, and its transactions read-only."""
    pg_server.run_as_superuser(
        f"ALTER ROLE \"{pg_server.user}\" SET log_statement = 'all'",
        f'ALTER ROLE "{pg_server.user}" SET default_transaction_read_only = on',
    )
    try:
        yield pg_server
    finally:
        pg_server.run_as_superuser(f'ALTER ROLE "{pg_server.user}" RESET ALL')


STATEMENT = re.compile(r"\[(\d+)\].*?LOG:\s+(?:statement|execute [^:]*):\s*(.*)$")
AUTHORIZED = re.compile(r"\[(\d+)\].*?connection authorized: user=(\S+) database=(\S+)")


def test_only_select_1_runs(logged_read_only_role: PostgresServer, tmp_path: Path) -> None:
    server = logged_read_only_role
    spec = {
        "provider": "postgres",
        "credentialsSecretRef": {"name": "db"},
        "postgres": server.postgres_spec(sslMode="disable"),
    }
    log_before = server.log_tail(100_000).splitlines()
    result = asyncio.run(run_test(spec, server.secret_data(), policy=EgressPolicy()))
    assert result.reason.value == "Connected", result
    new_lines = server.log_tail(100_000).splitlines()[len(log_before) :]
    sessions = {
        m.group(1)
        for line in new_lines
        if (m := AUTHORIZED.search(line)) and m.group(2) == server.user
    }
    assert len(sessions) == 1, new_lines
    statements = [
        m.group(2).strip()
        for line in new_lines
        if (m := STATEMENT.search(line)) and m.group(1) in sessions
    ]
    assert statements == ["SELECT 1"], statements
