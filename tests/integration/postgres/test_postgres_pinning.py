"""The provider connects to the addresses the egress policy checked, not to a second DNS answer."""

import pytest

from tests.support.pgserver import PostgresServer
from warehouse_operator.models import parse_spec
from warehouse_operator.providers.base import Stages
from warehouse_operator.providers.postgres import PROVIDER
from warehouse_operator.secrets import SecretData

pytestmark = pytest.mark.integration


def _spec(pg: PostgresServer, host: str) -> dict[str, object]:
    return {
        "provider": "postgres",
        "credentialsSecretRef": {"name": "db"},
        "postgres": pg.postgres_spec(host=host, sslMode="disable"),
    }


async def test_connects_to_the_checked_address_without_resolving_again(
    pg_plain: PostgresServer,
) -> None:
    # the name cannot be resolved at all: the test only works if libpq uses the pinned address
    spec = parse_spec(_spec(pg_plain, "pinned-name.invalid"))
    secret = SecretData("db", pg_plain.secret_data())
    credentials = PROVIDER.parse_credentials(spec, secret)
    success = await PROVIDER.probe(
        spec,
        credentials,
        timeout=5,
        stages=Stages(),
        resolved={"pinned-name.invalid": ["127.0.0.1"]},
    )
    assert success.server_version is not None
    assert success.server_version.startswith("PostgreSQL ")


async def test_every_checked_address_is_tried(pg_plain: PostgresServer) -> None:
    # the first address refuses (nothing listens on 127.0.0.2's port), the second is the server
    spec = parse_spec(_spec(pg_plain, "two-addresses.invalid"))
    credentials = PROVIDER.parse_credentials(spec, SecretData("db", pg_plain.secret_data()))
    success = await PROVIDER.probe(
        spec,
        credentials,
        timeout=5,
        stages=Stages(),
        resolved={"two-addresses.invalid": ["127.0.0.2", "127.0.0.1"]},
    )
    assert success.server_version is not None
