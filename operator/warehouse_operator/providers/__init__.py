"""The provider registry: one package per provider, one line here each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warehouse_operator.providers import bigquery, postgres, snowflake
from warehouse_operator.providers.base import Provider

REGISTRY: dict[str, Provider] = {
    postgres.PROVIDER.name: postgres.PROVIDER,
    snowflake.PROVIDER.name: snowflake.PROVIDER,
    bigquery.PROVIDER.name: bigquery.PROVIDER,
}

_ALIASES = {alias: p.name for p in REGISTRY.values() for alias in p.aliases}


def get_provider(name: str) -> Provider:
    """The provider registered under ``name`` (``postgresql`` is already folded into ``postgres``)."""
    return REGISTRY[name]


def canonical_name(provider: object) -> str | None:
    """``spec.provider`` as the registry names it (``postgresql`` -> ``postgres``).

    Lenient: any other non-empty string is returned as it is (an unknown provider is still
    reported under its own name); anything else is None.
    """
    if not isinstance(provider, str) or not provider:
        return None
    return _ALIASES.get(provider, provider)


def backend_key(spec: Mapping[str, Any]) -> str:
    """Which backend a test of this raw (possibly invalid) spec talks to, e.g.
    ``postgres://db:5432``, so that one slow backend cannot take every worker; "" when the
    spec does not say."""
    name = canonical_name(spec.get("provider"))
    provider = REGISTRY.get(name or "")
    block = spec.get(name or "")
    if provider is None or not isinstance(block, Mapping):
        return ""
    return provider.backend_key(block)
