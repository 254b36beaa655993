"""BigQuery: a service-account key, google-auth's JWT-bearer grant, then a zero-byte test.

One test is three stages, each a blocking call of the real client libraries run on the shared
blocking-call runner (``blocking.py``, never on the event loop):

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

from collections.abc import Mapping
from typing import Any

from warehouse_operator.models import ConnectionSpec
from warehouse_operator.providers.base import Destination, ProbeSuccess, Resolved, Stages
from warehouse_operator.providers.bigquery import probe as _probe
from warehouse_operator.providers.bigquery import target as _target
from warehouse_operator.providers.bigquery.credentials import (
    SECRET_KEY,
    BigQueryCredentials,
    parse_service_account_key,
)
from warehouse_operator.providers.blocking import BlockingCallRunner
from warehouse_operator.secrets import SecretData

__all__ = ["PROVIDER", "BigQueryCredentials", "BigQueryProvider"]


class BigQueryProvider:
    name = "bigquery"
    aliases: tuple[str, ...] = ()
    driver_modules: tuple[str, ...] = (
        "google.cloud.bigquery",
        "google.oauth2.service_account",
        "google.auth.transport.requests",
    )

    def __init__(self, runner: BlockingCallRunner[Any] | None = None) -> None:
        self.runner = runner or BlockingCallRunner(
            _probe.MAX_BLOCKING_CALLS, "bigquery-probe", "BigQuery"
        )

    def parse_credentials(self, spec: ConnectionSpec, secret: SecretData) -> BigQueryCredentials:
        return parse_service_account_key(secret.require_bytes(SECRET_KEY), secret.secret_name)

    def destinations(
        self, spec: ConnectionSpec, credentials: BigQueryCredentials
    ) -> list[Destination]:
        return _target.destinations(spec, credentials)

    def backend_key(self, block: Mapping[str, Any]) -> str:
        return _target.backend_key(block)

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
        return await _probe.probe(self.runner, spec, credentials, timeout=timeout, stages=stages)


PROVIDER = BigQueryProvider()
