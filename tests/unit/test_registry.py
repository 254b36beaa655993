"""The provider registry: names, aliases, and which backend a raw spec talks to."""

from __future__ import annotations

from typing import Any

import pytest

from warehouse_operator.providers import REGISTRY, backend_key, canonical_name


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("postgres", "postgres"),
        ("postgresql", "postgres"),
        ("snowflake", "snowflake"),
        ("bigquery", "bigquery"),
        ("oracle", "oracle"),  # unknown names are kept, so that they can still be reported
        ("", None),
        (None, None),
        (42, None),
        (["postgres"], None),
    ],
)
def test_canonical_name(given: object, name: str | None) -> None:
    assert canonical_name(given) == name


def test_every_alias_names_a_registered_provider() -> None:
    for provider in REGISTRY.values():
        for alias in provider.aliases:
            assert canonical_name(alias) == provider.name


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"provider": "postgres", "postgres": {"host": "db", "port": 6432}}, "postgres://db:6432"),
        ({"provider": "postgresql", "postgres": {"host": "db"}}, "postgres://db:5432"),
        ({"provider": "snowflake", "snowflake": {"account": "acme"}}, "snowflake://acme"),
        (
            {"provider": "snowflake", "snowflake": {"account": "a", "endpoint": "http://sf:8080"}},
            "snowflake://http://sf:8080",
        ),
        ({"provider": "bigquery", "bigquery": {"projectId": "p"}}, "bigquery://default"),
        (
            {"provider": "bigquery", "bigquery": {"endpoint": "http://bq:9050"}},
            "bigquery://http://bq:9050",
        ),
        # lenient: whatever cannot say which backend gives ""
        ({"provider": "postgres"}, ""),
        ({"provider": "postgres", "postgres": "db:5432"}, ""),
        ({"provider": "postgres", "snowflake": {"account": "a"}}, ""),
        ({"provider": "oracle", "oracle": {"host": "db"}}, ""),
        ({"provider": 7}, ""),
        ({}, ""),
    ],
)
def test_backend_key(spec: dict[str, Any], key: str) -> None:
    assert backend_key(spec) == key
