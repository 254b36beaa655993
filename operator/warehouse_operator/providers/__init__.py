"""The provider registry: one module per provider, one line here each."""

from __future__ import annotations

from warehouse_operator.providers import bigquery, postgres, snowflake
from warehouse_operator.providers.base import Provider

REGISTRY: dict[str, Provider] = {
    postgres.PROVIDER.name: postgres.PROVIDER,
    snowflake.PROVIDER.name: snowflake.PROVIDER,
    bigquery.PROVIDER.name: bigquery.PROVIDER,
}


def get_provider(name: str) -> Provider:
    """The provider registered under ``name`` (``postgresql`` is already folded into ``postgres``)."""
    return REGISTRY[name]
