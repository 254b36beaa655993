"""Where a BigQuery test connects: the API's endpoint and the key's token endpoint (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from warehouse_operator.models import BigQuerySpec, ConnectionSpec, ProbeFailure, Reason
from warehouse_operator.providers.base import Destination
from warehouse_operator.providers.bigquery.credentials import BigQueryCredentials

DEFAULT_API_ENDPOINT = "https://bigquery.googleapis.com"
_DATASET_ID = re.compile(
    r"^(?:(?P<project>[^.]+(?:\.[^.]+)*)\.)?(?P<dataset>[A-Za-z0-9_]{1,1024})$"
)


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return Endpoint(url=url, host=parts.hostname or "", port=parts.port or default_port)


def api_endpoint(bq: BigQuerySpec) -> Endpoint:
    """The API's base URL: ``spec.bigquery.endpoint`` or Google's public one."""
    return endpoint((bq.endpoint or DEFAULT_API_ENDPOINT).rstrip("/"))


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


def bigquery_spec(spec: ConnectionSpec) -> BigQuerySpec:
    assert spec.bigquery is not None  # guaranteed by ConnectionSpec validation
    return spec.bigquery


def destinations(spec: ConnectionSpec, credentials: BigQueryCredentials) -> list[Destination]:
    api = api_endpoint(bigquery_spec(spec))
    token = endpoint(credentials.token_uri)
    found = [Destination(api.host, api.port, "BigQuery API")]
    if (token.host, token.port) != (api.host, api.port):
        found.append(Destination(token.host, token.port, "OAuth token endpoint"))
    return found


def backend_key(block: Mapping[str, Any]) -> str:
    """The API a (possibly invalid) ``spec.bigquery`` block names."""
    return f"bigquery://{block.get('endpoint') or 'default'}"
