"""Where a Snowflake test connects: the account's host, or ``spec.snowflake.endpoint`` (pure)."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from warehouse_operator.models import ConnectionSpec, SnowflakeSpec
from warehouse_operator.providers.base import Destination

DEFAULT_DOMAIN = "snowflakecomputing.com"


@dataclass(frozen=True)
class SnowflakeTarget:
    host: str
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def target_of(sf: SnowflakeSpec) -> SnowflakeTarget:
    """``spec.snowflake.endpoint`` when set, else ``https://<account>.snowflakecomputing.com``.

    Only the endpoint's scheme, host and port are used: the connector has no path prefix.
    """
    if sf.endpoint:
        parts = urlsplit(sf.endpoint)
        protocol = parts.scheme.lower()
        default_port = 443 if protocol == "https" else 80
        return SnowflakeTarget(parts.hostname or "", parts.port or default_port, protocol)
    return SnowflakeTarget(f"{sf.account.lower()}.{DEFAULT_DOMAIN}", 443, "https")


def identifier(name: str) -> str:
    """The name Snowflake stores for an identifier: unquoted ones are upper-cased."""
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name.upper()


def snowflake_spec(spec: ConnectionSpec) -> SnowflakeSpec:
    assert spec.snowflake is not None  # guaranteed by ConnectionSpec validation
    return spec.snowflake


def destinations(spec: ConnectionSpec) -> list[Destination]:
    target = target_of(snowflake_spec(spec))
    return [Destination(target.host, target.port, "Snowflake")]


def backend_key(block: Mapping[str, Any]) -> str:
    """The service a (possibly invalid) ``spec.snowflake`` block names."""
    return f"snowflake://{block.get('endpoint') or block.get('account')}"


def proxy_for(target: SnowflakeTarget) -> str | None:
    """The HTTP(S) proxy from the environment the connector will go through, if any."""
    proxy = urllib.request.getproxies().get(target.protocol)
    if proxy and not urllib.request.proxy_bypass(target.host):
        return proxy
    return None
