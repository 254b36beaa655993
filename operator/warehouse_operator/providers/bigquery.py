"""BigQuery: a service-account key, google-auth's JWT-bearer grant, then a zero-byte test.

One test is three stages, each a blocking call of the real client libraries run on a small,
bounded thread pool (never on the event loop):

- ``authenticate``: google-auth signs an assertion with the key and POSTs it to the key's
  ``token_uri``; the access token it gets back proves the key is live and the account exists.
- ``query``: ``SELECT 1`` through ``jobs.query`` in ``spec.bigquery.projectId``. It reads no
  table, so it processes and bills zero bytes (``maximumBytesBilled`` caps it all the same);
  it needs ``bigquery.jobs.create`` in the project, as every real use of the connection does.
- ``dataset``: when ``datasetId`` is set, ``datasets.get`` checks it exists and is readable.

Every call has an explicit timeout drawn from the test's budget, and explicit ``retry`` and
``job_retry``: the library defaults retry connection errors and failed jobs for up to ten
minutes, which would turn "connection refused" into a hang. The google libraries are imported
only when a BigQuery test runs (they cost about 50 MB).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from warehouse_operator.models import BigQuerySpec, ConnectionSpec, Reason
from warehouse_operator.providers.base import (
    Destination,
    ProbeFailure,
    ProbeSuccess,
    Resolved,
    Stages,
)
from warehouse_operator.secrets import CredentialError, SecretData

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

SECRET_KEY = "service_account.json"  # noqa: S105 - a key name, not a value
SCOPES = ("https://www.googleapis.com/auth/bigquery",)
DEFAULT_API_ENDPOINT = "https://bigquery.googleapis.com"
SERVER_VERSION = "BigQuery API v2"
TEST_QUERY = "SELECT 1"
# SELECT 1 bills nothing; should that ever change, the cap keeps a test's cost negligible.
MAX_BYTES_BILLED = 10 * 1024 * 1024
# Enough for the operator's default of 50 tests at once: the pool refuses work only when
# threads are still stuck in calls whose tests have already ended.
MAX_BLOCKING_CALLS = 64
_DATASET_ID = re.compile(
    r"^(?:(?P<project>[^.]+(?:\.[^.]+)*)\.)?(?P<dataset>[A-Za-z0-9_]{1,1024})$"
)

T = TypeVar("T")


# --- credentials -------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class BigQueryCredentials:
    """A parsed service-account key. ``private_key`` is never shown."""

    client_email: str
    token_uri: str
    private_key_id: str | None
    private_key: RSAPrivateKey = field(compare=False)

    def __repr__(self) -> str:  # never show the key, even in a debugger or traceback
        return (
            f"BigQueryCredentials(client_email={self.client_email!r}, "
            f"token_uri={self.token_uri!r}, private_key=***)"
        )


def parse_service_account_key(raw: bytes, secret_name: str) -> BigQueryCredentials:
    """Check a service-account JSON key without any network (pure; tested on its own).

    Messages name the field at fault and never echo a value.
    """
    where = f"the service-account key in Secret {secret_name!r}"

    def invalid(detail: str) -> CredentialError:
        return CredentialError(Reason.INVALID_CREDENTIALS, f"{where} {detail}")

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise invalid("is not UTF-8 text") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg describes the syntax error only ("Expecting ',' delimiter"), no content
        raise invalid(
            f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(info, dict):
        raise invalid("is not a JSON object")
    if info.get("type") != "service_account":
        raise invalid(
            "has no field 'type' equal to 'service_account' "
            "(only service-account keys are supported)"
            if "type" in info
            else "has no field 'type'"
        )
    email = info.get("client_email")
    if not isinstance(email, str) or not email.strip():
        raise invalid("has no field 'client_email'")
    if "@" not in email or any(c.isspace() for c in email):
        raise invalid("has a field 'client_email' that is not an email address")
    private_key = _private_key(info.get("private_key"), invalid)
    token_uri = info.get("token_uri")
    if not isinstance(token_uri, str) or not token_uri.strip():
        raise invalid("has no field 'token_uri'")
    parts = urlsplit(token_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise invalid("has a field 'token_uri' that is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise invalid("has a field 'token_uri' with an invalid port") from None
    key_id = info.get("private_key_id")
    if key_id is not None and not isinstance(key_id, str):
        raise invalid("has a field 'private_key_id' that is not a string")
    return BigQueryCredentials(
        client_email=email, token_uri=token_uri, private_key_id=key_id, private_key=private_key
    )


def _private_key(value: Any, invalid: Callable[[str], CredentialError]) -> RSAPrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm

    if not isinstance(value, str) or not value.strip():
        raise invalid("has no field 'private_key'")
    if "-----BEGIN" not in value:
        raise invalid("has a field 'private_key' that is not a PEM private key")
    try:
        return _load_rsa_key(value)
    except TypeError:  # encrypted: Google never issues those
        raise invalid("has a field 'private_key' that is encrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise invalid("has a field 'private_key' that is not a readable PEM private key") from None
    except _NotRSA:
        raise invalid("has a field 'private_key' that is not an RSA key") from None


class _NotRSA(Exception):
    pass


@lru_cache(maxsize=256)
def _load_rsa_key(pem: str) -> RSAPrivateKey:
    """Load and validate a PEM key, once per key and process.

    Validating an RSA key takes some 60 ms of CPU with the GIL held, which would stall the
    event loop on every test of the connection; the key of a connection rarely changes.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _NotRSA
    return key


# --- endpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return Endpoint(url=url, host=parts.hostname or "", port=parts.port or default_port)


def api_endpoint(bq: BigQuerySpec) -> Endpoint:
    """The API's base URL: ``spec.bigquery.endpoint`` or Google's public one."""
    return _endpoint((bq.endpoint or DEFAULT_API_ENDPOINT).rstrip("/"))


def dataset_reference(bq: BigQuerySpec) -> tuple[str, str] | None:
    """(project, dataset) of ``datasetId``, which may be ``project.dataset`` (another project)."""
    if bq.dataset_id is None:
        return None
    match = _DATASET_ID.match(bq.dataset_id)
    if match is None:
        raise ProbeFailure(
            Reason.INVALID_SPEC,
            "spec.bigquery.datasetId must be a dataset name (letters, digits and underscores), "
            "optionally prefixed with 'project.'",
        )
    return match["project"] or bq.project_id, match["dataset"]


def _bq(spec: ConnectionSpec) -> BigQuerySpec:
    assert spec.bigquery is not None  # guaranteed by ConnectionSpec validation
    return spec.bigquery


# --- the bounded pool -------------------------------------------------------------------------


class PoolSaturated(Exception):
    """Every thread of a BoundedExecutor is busy; the work was not started."""


class BoundedExecutor:
    """A thread pool that refuses work when every thread is busy, rather than queueing it.

    A call that hangs keeps its thread until its own timeout fires; queueing behind such
    calls would only delay other tests past their budget, so new work fails fast instead.
    A slot is freed when the work finishes (or is cancelled before it started), not when
    the caller stops waiting for it.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(max_workers)
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        if not self._slots.acquire(blocking=False):
            raise PoolSaturated(f"all {self.max_workers} threads are busy")
        with self._lock:
            self._busy += 1
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self._busy -= 1
        self._slots.release()


_executor: BoundedExecutor | None = None
_executor_lock = threading.Lock()


def _shared_executor() -> BoundedExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = BoundedExecutor(MAX_BLOCKING_CALLS, "bigquery-probe")
        return _executor


@dataclass(frozen=True)
class Deadline:
    at: float

    def remaining(self) -> float:
        return self.at - time.monotonic()


# --- the blocking calls (run on the pool) -----------------------------------------------------


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
class _Session:
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


def _authenticate(creds: BigQueryCredentials, deadline: Deadline) -> _Session:
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
    return _Session(credentials=credentials, http=http, auth_session=auth_session)


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


def _run_test_query(
    session: _Session, bq: BigQuerySpec, api: Endpoint, deadline: Deadline
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


def _get_dataset(
    session: _Session, project: str, dataset: str, deadline: Deadline
) -> DatasetOutcome:
    from google.cloud import bigquery

    found = session.client.get_dataset(
        bigquery.DatasetReference(project, dataset),
        retry=_api_retry(deadline),
        timeout=max(deadline.remaining(), 0.001),
    )
    return DatasetOutcome(location=found.location)


class UnexpectedAnswer(Exception):
    """The API answered, but not what a healthy BigQuery answers."""


# --- classification ---------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps (cause, context, urllib3's ``reason``, api-core's ``cause``,
    exceptions passed as arguments), breadth first."""
    queue: list[BaseException] = [exc]
    seen: set[int] = set()
    while queue and len(seen) < 32:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
            getattr(current, "cause", None),
            *current.args,
        ]
        queue.extend(e for e in linked if isinstance(e, BaseException))


_TIMEOUT_NAMES = frozenset(
    {"Timeout", "ReadTimeout", "ConnectTimeout", "ReadTimeoutError", "ConnectTimeoutError"}
)


def classify_transport_error(
    exc: BaseException, what: str, where: str
) -> tuple[Reason, str] | None:
    """A failure to talk to ``where`` at all (no HTTP answer), or None when it is not one."""
    import ssl

    chain = list(_causes(exc))
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "connection refused" in text:
        return Reason.UNREACHABLE, f"cannot reach the {what} at {where}: connection refused"
    if any(type(e).__name__ in ("gaierror", "NameResolutionError") for e in chain) or any(
        s in text
        for s in ("name or service not known", "failed to resolve", "nodename nor servname")
    ):
        return Reason.UNREACHABLE, f"cannot reach the {what} at {where}: its name does not resolve"
    if any(isinstance(e, ssl.SSLError) or type(e).__name__ == "SSLError" for e in chain):
        detail = next(
            (str(e) for e in chain if isinstance(e, ssl.SSLError)), "TLS handshake failed"
        )
        return Reason.TLS_ERROR, f"TLS with the {what} at {where} failed: {detail}"
    # checked after refused, DNS and TLS, and by exact class name: urllib3's NewConnectionError
    # (refused, unreachable) subclasses its ConnectTimeoutError
    if (
        any(type(e).__name__ in _TIMEOUT_NAMES or isinstance(e, TimeoutError) for e in chain)
        or "timed out" in text
    ):
        return Reason.TIMEOUT, f"the {what} at {where} did not answer in time"
    if any(
        isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError))
        or type(e).__name__ in ("RemoteDisconnected", "ProtocolError")
        for e in chain
    ):
        return Reason.UNREACHABLE, f"the {what} at {where} closed the connection without answering"
    if any(type(e).__name__ in ("ConnectionError", "NewConnectionError") for e in chain) or any(
        isinstance(e, OSError) and e.errno is not None for e in chain
    ):
        reason = next((str(e) for e in chain if isinstance(e, OSError) and e.strerror), "")
        suffix = f": {reason}" if reason else ""
        return Reason.UNREACHABLE, f"cannot reach the {what} at {where}{suffix}"
    return None


def _oauth_error(exc: BaseException) -> tuple[str, str]:
    """(error code, description) of a token endpoint's refusal, as google-auth reports it."""
    data = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(data, Mapping) and isinstance(data.get("error"), str):
        return data["error"], str(data.get("error_description") or "")
    text = str(exc.args[0]) if exc.args else str(exc)
    code, _, description = text.partition(": ")
    if re.fullmatch(r"[a-z_]+", code):
        return code, description
    return "", text


def classify_token_error(exc: BaseException, email: str, where: str) -> tuple[Reason, str]:
    """Map a failure of the ``authenticate`` stage to a reason and a message (pure)."""
    from google.auth import exceptions as auth

    if isinstance(exc, auth.RefreshError):
        code, description = _oauth_error(exc)
        detail = f"{code}: {description}" if code and description else (code or description)
        if code in ("invalid_grant", "invalid_client", "unauthorized_client", "access_denied"):
            hint = ""
            low = description.lower()
            if "not found" in low:
                hint = " (the service account does not exist)"
            elif "signature" in low:
                hint = " (the key is not, or no longer, a key of this service account)"
            return (
                Reason.AUTHENTICATION_FAILED,
                f"the token endpoint {where} refused service account {email!r}: {detail}{hint}",
            )
        return Reason.PROVIDER_ERROR, f"the token endpoint {where} issued no access token: {detail}"
    transport = classify_transport_error(exc, "OAuth token endpoint", where)
    if transport is not None:
        return transport
    return Reason.PROVIDER_ERROR, f"authentication failed: {type(exc).__name__}: {exc}"


def _api_error_detail(exc: Any) -> tuple[str, str]:
    """(first error reason, message) of a google-api-core error."""
    errors = getattr(exc, "errors", None) or []
    first = errors[0] if errors and isinstance(errors[0], Mapping) else {}
    reason = str(first.get("reason") or "")
    message = str(getattr(exc, "message", "") or first.get("message") or exc)
    return reason, message


def classify_api_error(
    exc: BaseException,
    *,
    stage: str,
    email: str,
    project: str,
    dataset: tuple[str, str] | None,
    where: str,
) -> tuple[Reason, str]:
    """Map a failure of the ``query`` or ``dataset`` stage to a reason and a message (pure)."""
    from google.api_core import exceptions as core

    if isinstance(exc, core.RetryError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, UnexpectedAnswer):
        return Reason.PROVIDER_ERROR, str(exc)
    if isinstance(exc, core.GoogleAPICallError):
        code = exc.code or 0
        reason, message = _api_error_detail(exc)
        target = (
            f"dataset {dataset[0]}:{dataset[1]}"
            if stage == "dataset" and dataset is not None
            else f"project {project}"
        )
        if code == 401:
            return (
                Reason.AUTHENTICATION_FAILED,
                f"the BigQuery API at {where} did not accept the access token of {email!r}: {message}",
            )
        if code == 403 and reason not in ("rateLimitExceeded", "quotaExceeded"):
            action = (
                f"read {target}" if stage == "dataset" else f"run query jobs in project {project}"
            )
            return Reason.PERMISSION_DENIED, f"{email!r} may not {action}: {message}"
        if code == 404:
            low = message.lower()
            if "project" in low and "dataset" not in low:
                missing = f"project {project}"
            elif "dataset" in low or stage == "dataset":
                missing = target
            else:
                missing = f"project {project}"
            return Reason.NOT_FOUND, f"{missing} was not found: {message}"
        return Reason.PROVIDER_ERROR, f"the BigQuery API answered HTTP {code}: {message}"
    transport = classify_transport_error(exc, "BigQuery API", where)
    if transport is not None:
        return transport
    return Reason.PROVIDER_ERROR, f"{stage} failed: {type(exc).__name__}: {exc}"


# --- the provider -----------------------------------------------------------------------------


class BigQueryProvider:
    name = "bigquery"
    driver_modules: tuple[str, ...] = (
        "google.cloud.bigquery",
        "google.oauth2.service_account",
        "google.auth.transport.requests",
    )

    def __init__(self, executor: BoundedExecutor | None = None) -> None:
        self._executor = executor

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> BigQueryCredentials:
        raw = secret.require_bytes(SECRET_KEY)
        return parse_service_account_key(raw, secret.secret_name)

    def destinations(
        self, spec: ConnectionSpec, credentials: BigQueryCredentials
    ) -> list[Destination]:
        api = api_endpoint(_bq(spec))
        token = _endpoint(credentials.token_uri)
        found = [Destination(api.host, api.port, "BigQuery API")]
        if (token.host, token.port) != (api.host, api.port):
            found.append(Destination(token.host, token.port, "OAuth token endpoint"))
        return found

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
        bq = _bq(spec)
        api = api_endpoint(bq)
        token = _endpoint(credentials.token_uri)
        email = credentials.client_email
        # Finish a little before the caller's own timeout, so that a hang is reported with
        # the stage and the host that did not answer.
        deadline = Deadline(time.monotonic() + max(timeout - min(0.25, timeout / 10), 0.001))
        budget = f"testTimeout ({spec.test_timeout})"
        api_silent = f"the BigQuery API at {api.where} did not answer within {budget}"
        token_silent = f"the OAuth token endpoint at {token.where} did not answer within {budget}"

        with stages.stage("authenticate") as note:
            try:
                session = await self._blocking(
                    _authenticate, credentials, deadline, deadline=deadline, silent=token_silent
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

        def api_failure(
            exc: Exception, stage: str, dataset: tuple[str, str] | None
        ) -> ProbeFailure:
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
                    outcome = await self._blocking(
                        _run_test_query,
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
                        found = await self._blocking(
                            _get_dataset,
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
        self, fn: Callable[..., T], /, *args: Any, deadline: Deadline, silent: str
    ) -> T:
        """Run ``fn`` on the pool; TIMEOUT (``silent`` says who) when the deadline passes first.

        Exceptions of ``fn`` itself are raised as they are, for the caller to classify.
        """
        remaining = deadline.remaining()
        if remaining <= 0:
            raise ProbeFailure(Reason.TIMEOUT, silent)
        executor = self._executor or _shared_executor()
        try:
            future = executor.submit(fn, *args)
        except PoolSaturated:
            raise ProbeFailure(
                Reason.PROVIDER_ERROR,
                f"the test was not started: all {executor.max_workers} BigQuery worker "
                "threads are still waiting for answers to earlier tests",
            ) from None
        waiting = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({waiting}, timeout=remaining)
        finally:
            if not waiting.done():
                # a call already running keeps its thread until its own timeout fires; one
                # still queued is dropped
                waiting.cancel()
        if not done:
            raise ProbeFailure(Reason.TIMEOUT, silent)
        return waiting.result()


PROVIDER = BigQueryProvider()
