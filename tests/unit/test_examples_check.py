"""``warehouse-operator check -f`` on every manifest in ``examples/``.

As written, each example carries placeholders (a host name, an account, a key), and the check
says so with a valid status document and exit code 1, quickly and without leaving the machine:
a placeholder key is InvalidCredentials before any connection; a placeholder host name does not
resolve offline (Unreachable). Where the name does resolve (a machine with DNS), the check runs
with an egress policy that allows only 127.0.0.1, so that nothing is ever sent out
(DestinationDenied).

Then each example, rewritten only where it must be to reach the local peers (address and
credentials), is Connected with exit code 0: ``check -f`` runs the operator's own test for
every provider and auth method, and the examples' specs are sound as written.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.support.kube_admission import SchemaAdmission
from tests.support.kubeapi import crd_documents
from tests.support.snowflake_testbed import KEY_USER, PASSPHRASE
from warehouse_operator.cli import main

if TYPE_CHECKING:  # the plugin below is imported by pytest, so that its asserts are rewritten
    from tests.e2e.providers_peers import BigQueryPeer, SnowflakePeer
    from tests.support.pgserver import PostgresServer

pytest_plugins = ["tests.e2e.providers_peers"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RESOURCE = "warehouse-operator.io/v1alpha1/warehouseconnections"
LOOPBACK_ONLY = ["--egress-allowed-cidrs", "127.0.0.0/8,::1/128"]
PLACEHOLDER_CHECK_SECONDS = 5.0  # no network wait of any kind: a failed lookup takes ms
# Fields that differ between two runs of the same test.
VOLATILE = {"lastTestedAt", "lastConnectedAt", "lastTransitionTime", "durationMs", "latencyMs"}


@dataclass(frozen=True)
class Placeholder:
    """What an example yields as written, offline, and the stage that says why."""

    reason: str
    failed_check: str
    dns_name: Callable[[Mapping[str, Any]], str] | None = None  # the host it looks up


PLACEHOLDERS = {
    "postgres.yaml": Placeholder(
        "Unreachable", "destination", lambda spec: str(spec["postgres"]["host"])
    ),
    "snowflake-password.yaml": Placeholder(
        "Unreachable",
        "destination",
        lambda spec: f"{spec['snowflake']['account']}.snowflakecomputing.com",
    ),
    "snowflake-keypair.yaml": Placeholder("InvalidCredentials", "credentials"),
    "bigquery.yaml": Placeholder("InvalidCredentials", "credentials"),
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(PLACEHOLDERS)


# --- helpers -----------------------------------------------------------------------------------


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def connection_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (conn,) = [d for d in docs if d.get("kind") == "WarehouseConnection"]
    return conn


def secret_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (secret,) = [d for d in docs if d.get("kind") == "Secret"]
    return secret


@dataclass(frozen=True)
class CheckRun:
    code: int
    text: str
    document: dict[str, Any]
    seconds: float


def run_check(path: Path, output: str, capsys: pytest.CaptureFixture[str], *extra: str) -> CheckRun:
    capsys.readouterr()  # drop what came before
    started = time.monotonic()
    code = main(["check", "-f", str(path), "-o", output, *extra])
    seconds = time.monotonic() - started
    text = capsys.readouterr().out
    document = json.loads(text) if output == "json" else yaml.safe_load(text)
    assert isinstance(document, dict), text
    return CheckRun(code, text, document, seconds)


_admission: SchemaAdmission | None = None


def admission() -> SchemaAdmission:
    global _admission
    if _admission is None:
        _admission = SchemaAdmission()
        for crd in crd_documents():
            _admission.register(crd)
    return _admission


def assert_valid_status_document(run: CheckRun, conn: Mapping[str, Any]) -> dict[str, Any]:
    """The document is the connection with the status the operator would write; the status
    passes the CRD's schema and rules unchanged (nothing pruned, nothing defaulted)."""
    doc = run.document
    assert doc["apiVersion"] == conn["apiVersion"]
    assert doc["kind"] == "WarehouseConnection"
    assert doc["metadata"] == {
        "name": conn["metadata"]["name"],
        "namespace": conn["metadata"].get("namespace", "default"),
    }
    status: dict[str, Any] = doc["status"]
    stored = admission().admit(RESOURCE, {**conn, "status": status}, None)
    assert stored["status"] == status

    assert status["phase"] in ("Connected", "Failed")
    assert run.code == (0 if status["phase"] == "Connected" else 1)
    assert (status["reason"] == "Connected") is (status["phase"] == "Connected")
    assert status["message"]
    assert status["lastTestedAt"].endswith("Z")
    assert status["checks"], "no stage recorded"
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Reconciling", "Stalled"]
    ready = status["conditions"][0]
    assert ready["status"] == ("True" if status["phase"] == "Connected" else "False")
    assert ready["reason"] == status["reason"]
    return status


def without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def assert_not_shown(text: str, values: set[str]) -> None:
    for value in values:
        if len(value) >= 8:  # shorter ones cannot be told from ordinary words
            assert value not in text, "a secret value is in the output of check"


def secret_values_of(docs: list[dict[str, Any]]) -> set[str]:
    values: set[str] = set()
    for value in (secret_of(docs).get("stringData") or {}).values():
        values.add(str(value))
        if "-----BEGIN" in str(value):  # a PEM block: each of its lines is the key too
            values |= {line for line in str(value).splitlines() if "-----" not in line}
    return values


def resolves(name: str) -> bool:
    try:
        socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return True


# --- every connection stays on this machine ----------------------------------------------------

_connects: list[str] | None = None
_audit_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _connects is not None and event == "socket.connect" and isinstance(args[1], tuple):
        _connects.append(str(args[1][0]))


@pytest.fixture
def connects() -> Iterator[list[str]]:
    """The addresses this process connects to during the test (sockets opened from Python)."""
    global _connects, _audit_installed
    if not _audit_installed:
        sys.addaudithook(_audit)  # cannot be removed: it records only while a test runs
        _audit_installed = True
    _connects = []
    try:
        yield _connects
        outside = sorted(
            {a for a in _connects if not ipaddress.ip_address(a.split("%", 1)[0]).is_loopback}
        )
        assert not outside, f"the check connected beyond this machine: {outside}"
    finally:
        _connects = None


# --- the examples as written -------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(PLACEHOLDERS))
def test_example_as_written_fails_fast_with_the_reason_its_placeholders_give(
    example: str, capsys: pytest.CaptureFixture[str], connects: list[str]
) -> None:
    path = EXAMPLES / example
    docs = load(path)
    conn = connection_of(docs)
    expected = PLACEHOLDERS[example]
    extra: list[str] = []
    reason = expected.reason
    if expected.dns_name is not None and resolves(expected.dns_name(conn["spec"])):
        # this machine has DNS: keep the check from connecting anywhere but here
        extra, reason = LOOPBACK_ONLY, "DestinationDenied"

    runs = {output: run_check(path, output, capsys, *extra) for output in ("yaml", "json")}

    for output, run in runs.items():
        status = assert_valid_status_document(run, conn)
        assert run.code == 1, output
        assert (status["phase"], status["reason"]) == ("Failed", reason), status["message"]
        assert status["consecutiveFailures"] == 1
        failed = [c["name"] for c in status["checks"] if c["result"] == "Failed"]
        assert failed == [expected.failed_check]
        if reason == "Unreachable":
            assert "could not be resolved (DNS)" in status["message"]
            assert expected.dns_name is not None
            assert expected.dns_name(conn["spec"]) in status["message"]
        assert run.seconds < PLACEHOLDER_CHECK_SECONDS, f"{output}: {run.seconds:.1f} s"
        assert_not_shown(run.text, secret_values_of(docs))
    # the two formats print the same document
    assert without_volatile(runs["yaml"].document) == without_volatile(runs["json"].document)
    assert connects == []  # the failure came before any connection


# --- the examples pointed at the local peers ---------------------------------------------------


@dataclass
class Rewritten:
    docs: list[dict[str, Any]]
    secret_values: Callable[[], set[str]]  # beyond the Secret's own: asked after each run
    expect: Callable[[dict[str, Any]], None]  # further checks of the Connected status
    # whether the driver's sockets are Python's (libpq opens its own, out of the audit's sight)
    audited: bool = True


def _set_spec(docs: list[dict[str, Any]], block: str, **values: Any) -> None:
    connection_of(docs)["spec"][block].update(values)


def _set_secret(docs: list[dict[str, Any]], **values: str) -> None:
    secret_of(docs)["stringData"].update(values)


def rewrite_postgres(
    docs: list[dict[str, Any]], request: pytest.FixtureRequest, tmp_path: Path
) -> Rewritten:
    pg: PostgresServer = request.getfixturevalue("local_postgres")
    _set_spec(docs, "postgres", **pg.postgres_spec())
    _set_secret(docs, username=pg.user, password=pg.password)

    def expect(status: dict[str, Any]) -> None:
        assert status["serverVersion"].startswith("PostgreSQL ")

    return Rewritten(docs, lambda: {pg.password}, expect, audited=False)


def rewrite_snowflake_password(
    docs: list[dict[str, Any]], request: pytest.FixtureRequest, tmp_path: Path
) -> Rewritten:
    peer: SnowflakePeer = request.getfixturevalue("snowflake_peer")
    assert secret_of(docs)["stringData"]["username"] == peer.reporting_user, (
        "the peer's account knows the example's user; keep them in step"
    )
    _set_spec(docs, "snowflake", account=peer.account, endpoint=peer.endpoint)
    _set_secret(docs, password=peer.reporting_password)
    spec = connection_of(docs)["spec"]["snowflake"]

    def expect(status: dict[str, Any]) -> None:
        assert status["serverVersion"].startswith("Snowflake ")
        assert "snowflake" not in status
        messages = {c["name"]: c["message"] for c in status["checks"]}
        assert messages["role"] == f"role {spec['role']!r} is granted and in use"
        assert f"{spec['warehouse']!r} is SUSPENDED" in messages["warehouse"]

    return Rewritten(docs, lambda: {peer.reporting_password}, expect)


def rewrite_snowflake_keypair(
    docs: list[dict[str, Any]], request: pytest.FixtureRequest, tmp_path: Path
) -> Rewritten:
    peer: SnowflakePeer = request.getfixturevalue("snowflake_peer")
    assert secret_of(docs)["stringData"]["username"] == KEY_USER, (
        "the peer's account knows the example's user; keep them in step"
    )
    _set_spec(docs, "snowflake", account=peer.account, endpoint=peer.endpoint)
    _set_secret(
        docs,
        private_key=peer.registered_key.pkcs8_encrypted,
        private_key_passphrase=PASSPHRASE,
    )
    fingerprint = peer.registered_key_fingerprint(tmp_path)

    def expect(status: dict[str, Any]) -> None:
        assert status["serverVersion"].startswith("Snowflake ")
        assert status["snowflake"] == {"publicKeyFingerprint": fingerprint}

    return Rewritten(docs, lambda: peer.key_secret_values() | {PASSPHRASE}, expect)


def rewrite_bigquery(
    docs: list[dict[str, Any]], request: pytest.FixtureRequest, tmp_path: Path
) -> Rewritten:
    peer: BigQueryPeer = request.getfixturevalue("bigquery_peer")
    spec = connection_of(docs)["spec"]["bigquery"]
    example_key = json.loads(secret_of(docs)["stringData"]["service_account.json"])
    assert (spec["projectId"], spec.get("datasetId"), example_key["client_email"]) == (
        peer.project,
        peer.dataset,
        peer.account.email,
    ), "the peer serves the example's project, dataset and account; keep them in step"
    _set_spec(docs, "bigquery", endpoint=peer.endpoint)
    _set_secret(docs, **{"service_account.json": peer.key_json()})

    def expect(status: dict[str, Any]) -> None:
        assert status["serverVersion"] == "BigQuery API v2"
        results = {c["name"]: c["result"] for c in status["checks"]}
        assert results["dataset"] == "Passed"

    return Rewritten(docs, peer.secret_values, expect)  # keys, PEM lines, tokens issued


REWRITES = {
    "postgres.yaml": rewrite_postgres,
    "snowflake-password.yaml": rewrite_snowflake_password,
    "snowflake-keypair.yaml": rewrite_snowflake_keypair,
    "bigquery.yaml": rewrite_bigquery,
}


@pytest.mark.integration
@pytest.mark.parametrize("example", sorted(REWRITES))
def test_example_pointed_at_a_local_peer_is_connected(
    example: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    connects: list[str],
) -> None:
    original = load(EXAMPLES / example)
    rewritten = REWRITES[example](copy.deepcopy(original), request, tmp_path)
    path = tmp_path / example
    path.write_text(yaml.safe_dump_all(rewritten.docs, sort_keys=False))
    conn = connection_of(rewritten.docs)

    for output in ("yaml", "json"):
        run = run_check(path, output, capsys)
        status = assert_valid_status_document(run, conn)
        assert (run.code, status["phase"]) == (0, "Connected"), status["message"]
        assert all(c["result"] in ("Passed", "Skipped") for c in status["checks"])
        assert status["consecutiveFailures"] == 0
        assert isinstance(status["latencyMs"], int)
        rewritten.expect(status)
        assert_not_shown(run.text, rewritten.secret_values() | secret_values_of(rewritten.docs))
    if rewritten.audited:
        assert connects, "no connection was recorded: the audit of connections is not working"
