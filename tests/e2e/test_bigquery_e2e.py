"""The operator process, end to end, with BigQuery: the emulator behind the strict front.

The operator's test runs the real google-auth service-account flow against the local token
endpoint (the key's ``token_uri``) and the real BigQuery client against ``spec.bigquery.endpoint``.
The harness checks after every test that no Secret value reached the operator's log, events or
status; the keys' PEM lines and the access tokens the endpoint issued are checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.kube_cluster import assert_condition
from tests.support.kube_e2e import E2E
from tests.support.probe_results import BIGQUERY_CHECKS

if TYPE_CHECKING:  # the plugin below is imported by pytest, so that its asserts are rewritten
    from tests.e2e.providers_peers import BigQueryPeer

pytest_plugins = ["tests.e2e.providers_peers"]
pytestmark = pytest.mark.e2e


@pytest.fixture
def bigquery(e2e: E2E, bigquery_peer: BigQueryPeer) -> Iterator[BigQueryPeer]:
    yield bigquery_peer
    # torn down before the harness stops the operator and checks for leaks: by then it knows
    # every key handed out and every access token issued during the test
    e2e.extra_secret_values |= bigquery_peer.secret_values()


def checks_of(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["result"], c.get("message", "")) for c in status["checks"]}


def test_connected_with_and_without_dataset(e2e: E2E, bigquery: BigQueryPeer) -> None:
    before = len(bigquery.front.requests_by(bigquery.account.email))
    e2e.ns.create_secret("bigquery-key", bigquery.secret())
    e2e.ns.create_connection("project-only", bigquery.spec("bigquery-key"))
    e2e.ns.create_connection(
        "with-dataset",
        bigquery.spec("bigquery-key", datasetId=bigquery.dataset, location=bigquery.location),
    )

    project_only = e2e.wait_for_phase("project-only", "Connected")["status"]
    with_dataset = e2e.wait_for_phase("with-dataset", "Connected")["status"]

    email, project, dataset = bigquery.account.email, bigquery.project, bigquery.dataset
    for status in (project_only, with_dataset):
        assert status["reason"] == "Connected"
        assert status["serverVersion"] == "BigQuery API v2"
        assert isinstance(status["latencyMs"], int)
        assert [c["name"] for c in status["checks"]] == BIGQUERY_CHECKS
        checks = checks_of(status)
        assert checks["authenticate"][0] == "Passed"
        assert email in checks["authenticate"][1]
        assert checks["query"][0] == "Passed"
        assert checks["query"][1].endswith("0 bytes processed")
        assert_condition(status, "Ready", "True", reason="Connected")
        assert_condition(status, "Stalled", "False")

    assert project_only["message"] == f"{email} can run queries in project {project}"
    assert checks_of(project_only)["dataset"][0] == "Skipped"
    assert with_dataset["message"] == (
        f"{email} can run queries in project {project} and read dataset {project}:{dataset}"
    )
    assert checks_of(with_dataset)["dataset"] == (
        "Passed",
        f"dataset {project}:{dataset} is readable (location {bigquery.location})",
    )
    assert checks_of(with_dataset)["query"][1].startswith(
        f"SELECT 1 ran in project {project} in {bigquery.location}"
    )

    # both went through the front with tokens the local endpoint issued to this account:
    # two queries, and one read of the dataset's metadata
    seen = bigquery.front.requests_by(email)[before:]
    assert sorted((r.method, r.path.split("?")[0], r.status) for r in seen) == [
        ("GET", f"/bigquery/v2/projects/{project}/datasets/{dataset}", 200),
        ("POST", f"/bigquery/v2/projects/{project}/queries", 200),
        ("POST", f"/bigquery/v2/projects/{project}/queries", 200),
    ]
    assert bigquery.tokens.issued_for(email)
    for name in ("project-only", "with-dataset"):
        assert e2e.ns.event_reasons(name) == [("Normal", "Connected")]


def test_wrong_key_is_authentication_failed(e2e: E2E, bigquery: BigQueryPeer) -> None:
    refused = len(bigquery.tokens.grants_refused)
    seen = len(bigquery.front.seen)
    e2e.ns.create_secret("bigquery-key", bigquery.secret(bigquery.impostor))
    e2e.ns.create_connection("analytics", bigquery.spec("bigquery-key", testInterval="0s"))

    status = e2e.wait_for_authentication_failure("analytics")
    assert "invalid_grant" in status["message"]
    assert bigquery.account.email in status["message"]
    checks = checks_of(status)
    assert checks["authenticate"][0] == "Failed"
    assert "query" not in checks  # no token, so nothing was sent to the API
    assert bigquery.tokens.grants_refused[refused:] == ["Invalid JWT Signature."]
    assert bigquery.front.seen[seen:] == []
    assert e2e.ns.event_reasons("analytics") == [("Warning", "AuthenticationFailed")]
