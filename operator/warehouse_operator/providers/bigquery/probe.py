"""The BigQuery connection test: a service-account key, google-auth's JWT-bearer grant, then
a zero-byte query; each stage a blocking call on the shared blocking-call runner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from warehouse_operator.models import ConnectionSpec, ProbeFailure, Reason
from warehouse_operator.providers.base import ProbeSuccess, Stages
from warehouse_operator.providers.bigquery.calls import (
    authenticate,
    get_dataset,
    run_test_query,
)
from warehouse_operator.providers.bigquery.classify import classify_api_error, classify_token_error
from warehouse_operator.providers.bigquery.credentials import BigQueryCredentials
from warehouse_operator.providers.bigquery.target import (
    api_endpoint,
    bigquery_spec,
    dataset_reference,
    endpoint,
)
from warehouse_operator.providers.blocking import BlockingCallRunner, Deadline

SERVER_VERSION = "BigQuery API v2"
# Enough for the operator's default of 50 tests at once: a test waits for a thread only when
# more run together, and fails at once only when every thread is held by an abandoned call.
MAX_BLOCKING_CALLS = 64

T = TypeVar("T")


async def probe(
    runner: BlockingCallRunner[Any],
    spec: ConnectionSpec,
    credentials: BigQueryCredentials,
    *,
    timeout: float,
    stages: Stages,
) -> ProbeSuccess:
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

    with stages.stage("authenticate") as note:
        try:
            session = await _blocking(
                runner, authenticate, credentials, deadline, deadline=deadline, silent=token_silent
            )
        except ProbeFailure:
            raise
        except Exception as exc:
            reason, message = classify_token_error(exc, email, token.where)
            # the HTTP timeout and the deadline end together: one message either way
            raise ProbeFailure(
                reason, token_silent if reason is Reason.TIMEOUT else message
            ) from None
        note.message = f"obtained an access token for {email} from {token.where}"

    def api_failure(exc: Exception, stage: str, dataset: tuple[str, str] | None) -> ProbeFailure:
        reason, message = classify_api_error(
            exc,
            stage=stage,
            email=email,
            project=bq.project_id,
            dataset=dataset,
            where=api.where,
        )
        return ProbeFailure(reason, api_silent if reason is Reason.TIMEOUT else message)

    reference: tuple[str, str] | None = None
    try:
        with stages.stage("query") as note:
            try:
                outcome = await _blocking(
                    runner,
                    run_test_query,
                    session,
                    bq,
                    api,
                    deadline,
                    deadline=deadline,
                    silent=api_silent,
                )
            except ProbeFailure:
                raise
            except Exception as exc:
                raise api_failure(exc, "query", None) from None
            note.message = outcome.describe(bq.project_id)
        if bq.dataset_id is None:
            stages.skipped("dataset", "spec.bigquery.datasetId is not set")
        else:
            with stages.stage("dataset") as note:
                reference = dataset_reference(bq)
                assert reference is not None
                try:
                    found = await _blocking(
                        runner,
                        get_dataset,
                        session,
                        *reference,
                        deadline,
                        deadline=deadline,
                        silent=api_silent,
                    )
                except ProbeFailure:
                    raise
                except Exception as exc:
                    raise api_failure(exc, "dataset", reference) from None
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
    fn: Callable[..., T],
    /,
    *args: Any,
    deadline: Deadline,
    silent: str,
) -> T:
    """Run ``fn`` on the runner; Timeout (``silent`` says who) when the deadline passes first.

    Exceptions of ``fn`` itself are raised as they are, for the caller to classify.
    """
    result: T = await runner.run(lambda: fn(*args), deadline=deadline.at, overrun=silent)
    return result
