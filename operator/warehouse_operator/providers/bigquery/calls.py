"""The blocking calls of a BigQuery test, each run on a worker thread within the deadline."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from warehouse_operator.models import BigQuerySpec
from warehouse_operator.providers.bigquery.credentials import BigQueryCredentials
from warehouse_operator.providers.bigquery.target import Endpoint
from warehouse_operator.providers.blocking import Deadline

SCOPES = ("https://www.googleapis.com/auth/bigquery",)
TEST_QUERY = "SELECT 1"
# SELECT 1 bills nothing; should that ever change, the cap keeps a test's cost negligible.
MAX_BYTES_BILLED = 10 * 1024 * 1024


@lru_cache(maxsize=1)
def _credentials_class() -> Any:
    """google-auth's service-account credentials, without the regional access boundary lookup.

    Recent google-auth starts a background thread on the first API request that asks
    ``iamcredentials.googleapis.com`` for the account's allowed locations. That host is not
    in ``destinations()`` (so the egress policy never saw it), the thread outlives the test,
    and the answer is only an optional header for later requests, which a one-shot test
    never makes. Older google-auth never calls this method.
    """
    from google.oauth2 import service_account

    class ProbeCredentials(service_account.Credentials):
        def _is_regional_access_boundary_lookup_required(self) -> bool:
            return False

    return ProbeCredentials


class _DeadlineRequest:
    """google-auth's HTTP transport, bounded by the test's deadline.

    google-auth gives token requests a 120 s timeout and retries some of them; here each
    request gets what is left of the budget, and none starts once it is spent.
    """

    def __init__(self, inner: Any, deadline: Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        remaining = self._deadline.remaining()
        if remaining <= 0:
            raise TimeoutError("the test's time budget is spent")
        bounded = remaining if timeout is None else min(float(timeout), remaining)
        return self._inner(
            url, method=method, body=body, headers=headers, timeout=bounded, **kwargs
        )


@dataclass
class Session:
    """The google objects of one test; closed at the end."""

    credentials: Any
    http: Any
    auth_session: Any
    client: Any = None

    def close(self) -> None:
        for closable in (self.client, self.http, self.auth_session):
            if closable is not None:
                with contextlib.suppress(Exception):  # closing sockets: nothing to report
                    closable.close()


def authenticate(creds: BigQueryCredentials, deadline: Deadline) -> Session:
    import requests
    from google.auth.crypt import RSASigner
    from google.auth.transport.requests import AuthorizedSession, Request

    credentials = _credentials_class()(
        RSASigner(creds.private_key, key_id=creds.private_key_id),  # type: ignore[no-untyped-call]
        service_account_email=creds.client_email,
        token_uri=creds.token_uri,
        scopes=list(SCOPES),
    )
    auth_session = requests.Session()
    auth_request = _DeadlineRequest(Request(auth_session), deadline)
    credentials.refresh(auth_request)
    # The token is fresh: a 401 from the API means it was not accepted, which a second
    # refresh would not change, so the session does not refresh on 401.
    http = AuthorizedSession(  # type: ignore[no-untyped-call]
        credentials, refresh_status_codes=(), max_refresh_attempts=0, auth_request=auth_request
    )
    return Session(credentials=credentials, http=http, auth_session=auth_session)


def _api_retry(deadline: Deadline) -> Any:
    """Retry only answers that say "try again" (5xx, 429), within half the remaining budget.

    Connection errors are not retried: "refused" must be reported as it is, not after the
    budget has run out.
    """
    from google.api_core import exceptions as core
    from google.api_core.retry import Retry

    transient = (
        core.InternalServerError,
        core.BadGateway,
        core.ServiceUnavailable,
        core.TooManyRequests,
    )
    return Retry(
        predicate=lambda exc: isinstance(exc, transient),
        initial=0.2,
        maximum=1.0,
        multiplier=2.0,
        timeout=max(deadline.remaining() / 2, 0.0),
    )


@dataclass(frozen=True)
class QueryOutcome:
    bytes_processed: int | None
    location: str | None

    def describe(self, project: str) -> str:
        located = f" in {self.location}" if self.location else ""
        processed = (
            f", {self.bytes_processed} bytes processed" if self.bytes_processed is not None else ""
        )
        return f"{TEST_QUERY} ran in project {project}{located}{processed}"


def run_test_query(
    session: Session, bq: BigQuerySpec, api: Endpoint, deadline: Deadline
) -> QueryOutcome:
    from google.cloud import bigquery

    session.client = bigquery.Client(
        project=bq.project_id,
        credentials=session.credentials,
        location=bq.location,
        client_options={"api_endpoint": api.url},
        _http=session.http,
    )
    config = bigquery.QueryJobConfig(use_legacy_sql=False, maximum_bytes_billed=MAX_BYTES_BILLED)
    budget = max(deadline.remaining(), 0.001)
    rows = session.client.query_and_wait(
        TEST_QUERY,
        job_config=config,
        location=bq.location,
        api_timeout=budget,
        wait_timeout=budget,
        retry=_api_retry(deadline),
        job_retry=None,  # a failed test query is reported, not re-run
        max_results=1,
    )
    values = [tuple(row.values()) for row in rows]
    if values != [(1,)]:
        raise UnexpectedAnswer(f"{TEST_QUERY} returned {values!r:.80} instead of one row with 1")
    processed = getattr(rows, "total_bytes_processed", None)
    return QueryOutcome(
        bytes_processed=int(processed) if processed is not None else None,
        location=getattr(rows, "location", None) or bq.location,
    )


@dataclass(frozen=True)
class DatasetOutcome:
    location: str | None


def get_dataset(session: Session, project: str, dataset: str, deadline: Deadline) -> DatasetOutcome:
    from google.cloud import bigquery

    found = session.client.get_dataset(
        bigquery.DatasetReference(project, dataset),
        retry=_api_retry(deadline),
        timeout=max(deadline.remaining(), 0.001),
    )
    return DatasetOutcome(location=found.location)


class UnexpectedAnswer(Exception):
    """The API answered, but not what a healthy BigQuery answers."""
