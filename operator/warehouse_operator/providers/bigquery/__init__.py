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

from warehouse_operator.providers.bigquery.credentials import BigQueryCredentials
from warehouse_operator.providers.bigquery.probe import BigQueryProvider

__all__ = ["PROVIDER", "BigQueryCredentials", "BigQueryProvider"]


PROVIDER = BigQueryProvider()
