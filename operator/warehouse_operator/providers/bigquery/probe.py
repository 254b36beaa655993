"""The BigQuery connection test: a service-account key, google-auth's JWT-bearer grant, then
a zero-byte query; each stage a blocking call on the shared blocking-call runner."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from warehouse_operator.models import ConnectionSpec, ProbeFailure, Reason
from warehouse_operator.providers.base import Destination, ProbeSuccess, Resolved, Stages
from warehouse_operator.providers.bigquery.calls import (
    authenticate,
    get_dataset,
    run_test_query,
)
from warehouse_operator.providers.bigquery.classify import classify_api_error, classify_token_error
from warehouse_operator.providers.bigquery.credentials import (
    SECRET_KEY,
    BigQueryCredentials,
    parse_service_account_key,
)
from warehouse_operator.providers.bigquery.target import (
    api_endpoint,
    backend_key,
    bigquery_spec,
    dataset_reference,
    destinations,
    endpoint,
)
from warehouse_operator.providers.blocking import BlockingCallRunner, Deadline
from warehouse_operator.secrets import SecretData

SERVER_VERSION = "BigQuery API v2"
# Enough for the operator's default of 50 tests at once: a test waits for a thread only when
# more run together, and fails at once only when every thread is held by an abandoned call.
MAX_BLOCKING_CALLS = 64

T = TypeVar("T")
Failed = Callable[[Exception], ProbeFailure]


class BigQueryProvider:
    name = "bigquery"
    aliases: tuple[str, ...] = ()
    driver_modules: tuple[str, ...] = (
        "google.cloud.bigquery",
        "google.oauth2.service_account",
        "google.auth.transport.requests",
    )

    def __init__(self, runner: BlockingCallRunner[Any] | None = None) -> None:
        self.runner = runner or BlockingCallRunner(MAX_BLOCKING_CALLS, "bigquery-probe", "BigQuery")

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> BigQueryCredentials:
        return parse_service_account_key(secret.require_bytes(SECRET_KEY), secret.secret_name)

    def destinations(
        self, spec: ConnectionSpec, credentials: BigQueryCredentials
    ) -> list[Destination]:
        return destinations(spec, credentials)

    def backend_key(self, block: Mapping[str, Any]) -> str:
        return backend_key(block)

    def stage_order(self) -> list[str]:
        return ["authenticate", "query", "dataset"]

    async def probe(
        self,
        spec: ConnectionSpec,
        credentials: BigQueryCredentials,
        *,
        timeout: float,
        stages: Stages,
        resolved: Resolved | None = None,
    ) -> ProbeSuccess:
        runner = self.runner
        bq = bigquery_spec(spec)
        api = api_endpoint(bq)
        token = endpoint(credentials.token_uri)
        email = credentials.client_email
        # Finish a little before the caller's own timeout, so that a hang is reported with
        # the stage and the host that did not answer.
        deadline = Deadline.within(timeout)
        budget = f"testTimeout ({spec.test_timeout})"
        api_silent = f"the BigQuery API at {api.where} did not answer within {budget}"
        token_silent = f"the OAuth token endpoint at {token.where} did not answer within {budget}"

        def token_failure(exc: Exception) -> ProbeFailure:
            reason, message = classify_token_error(exc, email, token.where)
            # the HTTP timeout and the deadline end together: one message either way
            return ProbeFailure(reason, token_silent if reason is Reason.TIMEOUT else message)

        def api_failure(stage: str, dataset: tuple[str, str] | None) -> Failed:
            def failure(exc: Exception) -> ProbeFailure:
                reason, message = classify_api_error(
                    exc,
                    stage=stage,
                    email=email,
                    project=bq.project_id,
                    dataset=dataset,
                    where=api.where,
                )
                return ProbeFailure(reason, api_silent if reason is Reason.TIMEOUT else message)

            return failure

        with stages.stage("authenticate") as note:
            session = await _blocking(
                runner,
                partial(authenticate, credentials, deadline),
                deadline,
                token_silent,
                token_failure,
            )
            note.message = f"obtained an access token for {email} from {token.where}"

        reference: tuple[str, str] | None = None
        try:
            with stages.stage("query") as note:
                outcome = await _blocking(
                    runner,
                    partial(run_test_query, session, bq, api, deadline),
                    deadline,
                    api_silent,
                    api_failure("query", None),
                )
                note.message = outcome.describe(bq.project_id)
            if bq.dataset_id is None:
                stages.skipped("dataset", "spec.bigquery.datasetId is not set")
            else:
                with stages.stage("dataset") as note:
                    reference = dataset_reference(bq)
                    assert reference is not None
                    found = await _blocking(
                        runner,
                        partial(get_dataset, session, *reference, deadline),
                        deadline,
                        api_silent,
                        api_failure("dataset", reference),
                    )
                    located = f" (location {found.location})" if found.location else ""
                    note.message = f"dataset {reference[0]}:{reference[1]} is readable{located}"
        finally:
            session.close()
        checked = f" and read dataset {reference[0]}:{reference[1]}" if reference else ""
        return ProbeSuccess(
            server_version=SERVER_VERSION,
            message=f"{email} can run queries in project {bq.project_id}{checked}",
        )


async def _blocking(
    runner: BlockingCallRunner[Any],
    fn: Callable[[], T],
    deadline: Deadline,
    silent: str,
    failed: Failed,
) -> T:
    """Run ``fn`` on the runner; Timeout (``silent`` says who) when the deadline passes first,
    and ``fn``'s own exceptions classified by ``failed``."""
    try:
        result: T = await runner.run(fn, deadline=deadline.at, overrun=silent)
    except ProbeFailure:
        raise
    except Exception as exc:
        raise failed(exc) from None
    return result
