"""The BigQuery provider end to end: ``run_test`` -> google-auth -> token endpoint -> front -> emulator.

Every test goes through ``warehouse_operator.probe.run_test`` with a spec and a Secret's data,
exactly as the operator does, and checks the outcome, the stages and that no secret leaked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Awaitable
from typing import Any

import pytest

from tests.support.bigquery_emulator import RefusingPort, SilentListener
from tests.support.bigquery_token import GOOGLE_TOKEN_AUDIENCE, TokenEndpoint
from tests.support.probe_results import BIGQUERY_CHECKS
from warehouse_operator.models import CheckResult, ProbeFailure, ProbeResult, Reason, parse_spec
from warehouse_operator.probe import run_test
from warehouse_operator.providers.base import Stages
from warehouse_operator.providers.bigquery import BigQueryProvider
from warehouse_operator.providers.blocking import BlockingCallRunner
from warehouse_operator.secrets import SecretData

from .conftest import DATASET, EU_DATASET, PROJECT, RESTRICTED_DATASET, BigQueryWorld

pytestmark = pytest.mark.integration


def stages_of(result: ProbeResult) -> dict[str, tuple[CheckResult, str]]:
    return {c.name: (c.result, c.message) for c in result.checks}


def stage_names(result: ProbeResult) -> list[str]:
    return [c.name for c in result.checks]


# --- Connected -------------------------------------------------------------------------------


async def test_connected_without_dataset(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    queries_before = len(world.front.requests_by(world.reader.email))

    result = await run_test(world.spec(), world.secret(world.reader))

    assert result.reason is Reason.CONNECTED, result.message
    assert result.server_version == "BigQuery API v2"
    assert result.message == f"{world.reader.email} can run queries in project {PROJECT}"
    assert result.latency_ms is not None
    assert result.latency_ms >= 0
    assert stage_names(result) == BIGQUERY_CHECKS
    stages = stages_of(result)
    assert stages["authenticate"][0] is CheckResult.PASSED
    assert world.reader.email in stages["authenticate"][1]
    assert stages["query"] == (
        CheckResult.PASSED,
        f"SELECT 1 ran in project {PROJECT} in US, 0 bytes processed",
    )
    assert stages["dataset"][0] is CheckResult.SKIPPED
    # the query really went through the front with a token the endpoint issued to this account
    seen = world.front.requests_by(world.reader.email)[queries_before:]
    assert [(r.method, r.path.split("?")[0], r.status) for r in seen] == [
        ("POST", f"/bigquery/v2/projects/{PROJECT}/queries", 200)
    ]
    # google-auth's audience quirk: the assertion names Google's endpoint, not token_uri
    assert world.tokens.audiences_seen[-1] == GOOGLE_TOKEN_AUDIENCE
    world.assert_no_secret_in(result, world.reader)


async def test_connected_with_dataset(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    result = await run_test(world.spec(datasetId=DATASET), world.secret(world.reader))

    assert result.reason is Reason.CONNECTED, result.message
    stages = stages_of(result)
    assert stages["query"][0] is CheckResult.PASSED
    assert stages["dataset"] == (
        CheckResult.PASSED,
        f"dataset {PROJECT}:{DATASET} is readable (location US)",
    )
    assert result.message == (
        f"{world.reader.email} can run queries in project {PROJECT} "
        f"and read dataset {PROJECT}:{DATASET}"
    )
    world.assert_no_secret_in(result, world.reader)


async def test_connected_with_location_and_dataset_of_another_form(
    bigquery_world: BigQueryWorld,
) -> None:
    """``location`` goes with the query; ``project.dataset`` names the dataset's project."""
    world = bigquery_world
    spec = world.spec(datasetId=f"{PROJECT}.{EU_DATASET}", location="EU")
    result = await run_test(spec, world.secret(world.reader))

    assert result.reason is Reason.CONNECTED, result.message
    stages = stages_of(result)
    assert stages["query"][1].startswith(f"SELECT 1 ran in project {PROJECT} in EU")
    assert stages["dataset"][1] == f"dataset {PROJECT}:{EU_DATASET} is readable (location EU)"


async def test_connected_with_remapped_secret_key(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    spec = world.spec(
        secret_ref={"name": "gcp-sa", "keys": {"service_account.json": "credentials.json"}}
    )
    result = await run_test(spec, world.secret(world.reader, data_key="credentials.json"))
    assert result.reason is Reason.CONNECTED, result.message


async def test_narrow_account_connects_to_its_own_dataset(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    result = await run_test(world.spec(datasetId=DATASET), world.secret(world.narrow))
    assert result.reason is Reason.CONNECTED, result.message


# --- AuthenticationFailed --------------------------------------------------------------------


async def test_wrong_key_fails_authentication(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    refused_before = len(world.tokens.grants_refused)

    result = await run_test(world.spec(), world.secret(world.impostor))

    assert result.reason is Reason.AUTHENTICATION_FAILED, result.message
    assert "invalid_grant: Invalid JWT Signature." in result.message
    assert world.reader.email in result.message
    stages = stages_of(result)
    assert stages["authenticate"][0] is CheckResult.FAILED
    assert "query" not in stages
    assert world.tokens.grants_refused[refused_before:] == ["Invalid JWT Signature."]
    world.assert_no_secret_in(result, world.impostor, world.reader)


async def test_unknown_account_fails_authentication(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    result = await run_test(world.spec(), world.secret(world.ghost))

    assert result.reason is Reason.AUTHENTICATION_FAILED, result.message
    assert "account not found" in result.message
    assert "the service account does not exist" in result.message
    assert stages_of(result)["authenticate"][0] is CheckResult.FAILED
    world.assert_no_secret_in(result, world.ghost)


async def test_token_from_another_authority_is_rejected_by_the_api(
    bigquery_world: BigQueryWorld,
) -> None:
    """A token endpoint that knows the key, but whose tokens the API does not accept (401)."""
    world = bigquery_world
    other = TokenEndpoint()
    other.start()
    try:
        other.register(world.reader.email, world.reader.public_key, world.reader.key_id)
        result = await run_test(world.spec(), world.secret(world.reader, token_uri=other.token_uri))
    finally:
        other.stop()

    assert result.reason is Reason.AUTHENTICATION_FAILED, result.message
    assert "did not accept the access token" in result.message
    stages = stages_of(result)
    assert stages["authenticate"][0] is CheckResult.PASSED
    assert stages["query"][0] is CheckResult.FAILED
    issued = other.issued_for(world.reader.email)
    assert len(issued) == 1  # the grant succeeded: the API refused its token
    assert issued[0] not in result.model_dump_json()


# --- PermissionDenied / NotFound ---------------------------------------------------------------


async def test_account_without_grant_is_denied_the_project(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    result = await run_test(world.spec(datasetId=DATASET), world.secret(world.stranger))

    assert result.reason is Reason.PERMISSION_DENIED, result.message
    assert f"may not run query jobs in project {PROJECT}" in result.message
    assert "bigquery.jobs.create" in result.message
    stages = stages_of(result)
    assert stages["authenticate"][0] is CheckResult.PASSED
    assert stages["query"][0] is CheckResult.FAILED
    assert "dataset" not in stages
    world.assert_no_secret_in(result, world.stranger)


async def test_account_without_dataset_grant_is_denied_the_dataset(
    bigquery_world: BigQueryWorld,
) -> None:
    world = bigquery_world
    result = await run_test(world.spec(datasetId=RESTRICTED_DATASET), world.secret(world.narrow))

    assert result.reason is Reason.PERMISSION_DENIED, result.message
    assert f"may not read dataset {PROJECT}:{RESTRICTED_DATASET}" in result.message
    stages = stages_of(result)
    assert stages["query"][0] is CheckResult.PASSED
    assert stages["dataset"][0] is CheckResult.FAILED
    world.assert_no_secret_in(result, world.narrow)


async def test_missing_dataset_is_not_found(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    result = await run_test(world.spec(datasetId="no_such_dataset"), world.secret(world.reader))

    assert result.reason is Reason.NOT_FOUND, result.message
    assert result.message.startswith(f"dataset {PROJECT}:no_such_dataset was not found")
    stages = stages_of(result)
    assert stages["query"][0] is CheckResult.PASSED
    assert stages["dataset"][0] is CheckResult.FAILED


async def test_missing_project_is_not_found(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    result = await run_test(world.spec(projectId="no-such-project"), world.secret(world.reader))

    assert result.reason is Reason.NOT_FOUND, result.message
    assert result.message.startswith("project no-such-project was not found")
    assert stages_of(result)["query"][0] is CheckResult.FAILED


async def test_malformed_dataset_id_is_an_invalid_spec(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    result = await run_test(world.spec(datasetId="sales-2024"), world.secret(world.reader))
    assert result.reason is Reason.INVALID_SPEC, result.message
    assert "spec.bigquery.datasetId" in result.message


# --- InvalidCredentials / SecretKeyMissing -----------------------------------------------------


def _mangled(world: BigQueryWorld, how: str) -> str:
    info = json.loads(world.key_json(world.reader))
    if how == "truncated":
        return json.dumps(info)[:-40]
    if how == "array":
        return json.dumps([info])
    if how == "no client_email":
        del info["client_email"]
    elif how == "no private_key":
        del info["private_key"]
    elif how == "bad private_key":
        lines = info["private_key"].splitlines()
        info["private_key"] = "\n".join(
            [lines[0], *(line[::-1] for line in lines[1:-1]), lines[-1]]
        )
    elif how == "user credentials":
        info["type"] = "authorized_user"
    elif how == "no token_uri":
        del info["token_uri"]
    elif how == "token_uri not a URL":
        info["token_uri"] = "ftp://tokens.example/token"
    text = json.dumps(info)
    world.secrets_seen.append(text)
    return text


@pytest.mark.parametrize(
    ("how", "named"),
    [
        ("truncated", "is not valid JSON"),
        ("array", "is not a JSON object"),
        ("no client_email", "'client_email'"),
        ("no private_key", "'private_key'"),
        ("bad private_key", "'private_key'"),
        ("user credentials", "'type'"),
        ("no token_uri", "'token_uri'"),
        ("token_uri not a URL", "'token_uri'"),
    ],
)
async def test_malformed_key_is_invalid_credentials(
    bigquery_world: BigQueryWorld, how: str, named: str
) -> None:
    world = bigquery_world
    text = _mangled(world, how)
    seen_before = len(world.front.seen)

    result = await run_test(
        world.spec(), {"service_account.json": base64.b64encode(text.encode()).decode()}
    )

    assert result.reason is Reason.INVALID_CREDENTIALS, result.message
    assert named in result.message
    assert stage_names(result) == ["spec", "credentials"]
    assert len(world.front.seen) == seen_before  # nothing was sent anywhere
    world.assert_no_secret_in(result, world.reader)


async def test_missing_key_in_secret(bigquery_world: BigQueryWorld) -> None:
    world = bigquery_world
    result = await run_test(world.spec(), world.secret(world.reader, data_key="key.json"))
    assert result.reason is Reason.SECRET_KEY_MISSING, result.message
    assert "'service_account.json'" in result.message


# --- Unreachable / Timeout ---------------------------------------------------------------------


async def test_refused_api_endpoint_is_unreachable(
    bigquery_world: BigQueryWorld, refusing_endpoint: RefusingPort
) -> None:
    world = bigquery_world
    started = time.monotonic()
    result = await run_test(
        world.spec(endpoint=refusing_endpoint.base_url), world.secret(world.reader)
    )
    elapsed = time.monotonic() - started

    assert result.reason is Reason.UNREACHABLE, result.message
    assert f"127.0.0.1:{refusing_endpoint.port}: connection refused" in result.message
    assert elapsed < 2, f"a refused connection took {elapsed:.1f}s to report"
    stages = stages_of(result)
    assert stages["authenticate"][0] is CheckResult.PASSED
    assert stages["query"][0] is CheckResult.FAILED


async def test_refused_token_endpoint_is_unreachable(
    bigquery_world: BigQueryWorld, refusing_endpoint: RefusingPort
) -> None:
    world = bigquery_world
    token_uri = f"{refusing_endpoint.base_url}/token"
    result = await run_test(world.spec(), world.secret(world.reader, token_uri=token_uri))

    assert result.reason is Reason.UNREACHABLE, result.message
    assert "OAuth token endpoint" in result.message
    assert "connection refused" in result.message
    assert stages_of(result)["authenticate"][0] is CheckResult.FAILED


async def _timed(coro: Awaitable[ProbeResult]) -> tuple[ProbeResult, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


async def test_silent_api_endpoint_times_out_without_delaying_others(
    bigquery_world: BigQueryWorld, silent_endpoint: SilentListener
) -> None:
    world = bigquery_world
    silent = world.spec(endpoint=silent_endpoint.base_url, test_timeout="1s")
    healthy = world.spec(datasetId=DATASET)

    async def healthy_later() -> tuple[ProbeResult, float]:
        await asyncio.sleep(0.1)  # starts while the silent test is already waiting
        return await _timed(run_test(healthy, world.secret(world.reader)))

    (stuck, stuck_s), (fine, fine_s) = await asyncio.gather(
        _timed(run_test(silent, world.secret(world.reader))), healthy_later()
    )

    assert stuck.reason is Reason.TIMEOUT, stuck.message
    assert stuck_s <= 1.0 + 0.3, f"the silent test took {stuck_s:.2f}s for a 1s testTimeout"
    assert stuck_s >= 0.8
    stages = stages_of(stuck)
    assert stages["authenticate"][0] is CheckResult.PASSED
    assert stages["query"] == (
        CheckResult.FAILED,
        f"the BigQuery API at 127.0.0.1:{silent_endpoint.port} did not answer within testTimeout (1s)",
    )
    assert fine.reason is Reason.CONNECTED, fine.message
    assert fine_s < 0.7, f"a healthy test took {fine_s:.2f}s next to a silent one"
    world.assert_no_secret_in(stuck, world.reader)


async def test_silent_token_endpoint_times_out(
    bigquery_world: BigQueryWorld, silent_endpoint: SilentListener
) -> None:
    world = bigquery_world
    token_uri = f"{silent_endpoint.base_url}/token"
    result, elapsed = await _timed(
        run_test(world.spec(test_timeout="1s"), world.secret(world.reader, token_uri=token_uri))
    )

    assert result.reason is Reason.TIMEOUT, result.message
    assert elapsed <= 1.3
    assert stages_of(result)["authenticate"] == (
        CheckResult.FAILED,
        f"the OAuth token endpoint at 127.0.0.1:{silent_endpoint.port} did not answer "
        "within testTimeout (1s)",
    )


def one_thread_provider(
    world: BigQueryWorld,
) -> tuple[BlockingCallRunner[Any], BigQueryProvider, Any, Any]:
    """A provider whose runner has a single worker thread, and a healthy spec and key for it."""
    runner = BlockingCallRunner[Any](1, "bigquery-test", "BigQuery")
    provider = BigQueryProvider(runner=runner)
    spec = parse_spec(world.spec())
    credentials = provider.parse_credentials(
        spec, SecretData("bigquery-key", world.secret(world.reader))
    )
    return runner, provider, spec, credentials


async def test_threads_held_by_abandoned_calls_fail_new_tests_fast(
    bigquery_world: BigQueryWorld,
) -> None:
    """With every worker thread held by a call nobody waits for any more (its test timed out),
    another test is refused at once, as ProviderError: its server was never contacted."""
    runner, provider, spec, credentials = one_thread_provider(bigquery_world)
    release = threading.Event()
    with pytest.raises(ProbeFailure):  # a driver call that outlives its deadline
        await runner.run(lambda: release.wait(10), deadline=time.monotonic() + 0.1)
    assert runner.abandoned == 1

    started = time.monotonic()
    stages = Stages()
    with pytest.raises(ProbeFailure) as refused:
        await provider.probe(spec, credentials, timeout=1, stages=stages)
    assert time.monotonic() - started < 0.1
    assert refused.value.reason is Reason.PROVIDER_ERROR
    assert "all 1 BigQuery worker threads are still held" in refused.value.message
    assert stages.checks[0].name == "authenticate"
    assert stages.checks[0].result is CheckResult.FAILED

    release.set()
    while runner.busy:
        await asyncio.sleep(0.01)
    success = await provider.probe(spec, credentials, timeout=5, stages=Stages())
    assert success.server_version


async def test_a_busy_thread_is_waited_for_within_the_budget(
    bigquery_world: BigQueryWorld,
) -> None:
    """A thread busy with a live call is not a reason to refuse: the test waits for it."""
    runner, provider, spec, credentials = one_thread_provider(bigquery_world)
    release = threading.Event()
    busy = asyncio.create_task(runner.run(lambda: release.wait(10), deadline=time.monotonic() + 5))
    while not runner.busy:
        await asyncio.sleep(0.01)
    asyncio.get_running_loop().call_later(0.2, release.set)
    success = await provider.probe(spec, credentials, timeout=5, stages=Stages())
    assert success.server_version
    assert await busy is True
