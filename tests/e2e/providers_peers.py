"""Snowflake, BigQuery and PostgreSQL peers on 127.0.0.1, one of each per test session.

A pytest plugin: test modules load it with ``pytest_plugins = ["tests.e2e.providers_peers"]``,
so the operator's end-to-end tests and the ``check -f`` tests of the examples share the same
peers (each started once, when a test first asks for it, and stopped at the end).

- Snowflake: fakesnow (its own virtualenv) behind the strict login front, serving the test
  account of ``tests/support/snowflake_testbed.py`` plus what ``examples/snowflake-*.yaml``
  name: the ``REPORTING`` role and its ``REPORTING_READER`` user, the ``RAW.LANDING`` schema.
- BigQuery: the emulator behind the strict front, and the local OAuth token endpoint, serving
  the project, dataset and service account that ``examples/bigquery.yaml`` names.
- PostgreSQL: a throwaway cluster (for the ``check -f`` tests; the end-to-end tests have their
  own in ``tests/e2e/conftest.py``).

Every peer is started here and fails loudly when it cannot be: nothing skips.
The operator runs as a local process in every mode (emulated API or real cluster), so these
addresses are reachable from it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.bigquery_emulator import Emulator
from tests.support.bigquery_front import StrictFront
from tests.support.bigquery_keys import ServiceAccount, new_service_account
from tests.support.bigquery_token import TokenEndpoint
from tests.support.pgserver import PostgresServer
from tests.support.probe_results import pem_lines
from tests.support.snowflake_emulator import fakesnow_server
from tests.support.snowflake_front import Role, StrictSnowflakeFront, User
from tests.support.snowflake_testbed import (
    ACCOUNT,
    KEY_USER,
    PASSPHRASE,
    PASSWORD,
    PASSWORD_USER,
    KeyMaterial,
    make_account,
    make_key,
    openssl_fingerprint,
)

# What examples/snowflake-password.yaml logs in as (the key-pair example's ETL_SERVICE, LOADER,
# LOAD_WH and RAW are in the test account already).
EXAMPLE_REPORTING_USER = "REPORTING_READER"
EXAMPLE_REPORTING_ROLE = "REPORTING"
EXAMPLE_LANDING_SCHEMA = "LANDING"

# What examples/bigquery.yaml names.
BIGQUERY_PROJECT = "my-analytics-project"
BIGQUERY_DATASET = "reporting"
BIGQUERY_LOCATION = "EU"
BIGQUERY_ACCOUNT = f"warehouse-probe@{BIGQUERY_PROJECT}.iam.gserviceaccount.com"


# --- Snowflake -------------------------------------------------------------------------------


@dataclass
class SnowflakePeer:
    """fakesnow behind the strict front, and the credentials its account knows."""

    front: StrictSnowflakeFront
    registered_key: KeyMaterial  # registered as KEY_USER's RSA_PUBLIC_KEY
    reporting_password: str  # reporting_user's password
    reporting_user: str = EXAMPLE_REPORTING_USER
    account: str = ACCOUNT

    @property
    def endpoint(self) -> str:
        return self.front.url

    def spec(self, secret: str, **snowflake: Any) -> dict[str, Any]:
        """A connection to this account through the front; keywords go to ``spec.snowflake``."""
        block = {"account": self.account, "endpoint": self.endpoint, **snowflake}
        return {
            "provider": "snowflake",
            "credentialsSecretRef": {"name": secret},
            "snowflake": block,
            "testInterval": "1h",
            "testTimeout": "15s",
        }

    def _user_spec(
        self, secret: str, auth: str, role: str, database: str, warehouse: str, **overrides: Any
    ) -> dict[str, Any]:
        fields = {"authMethod": auth, "role": role, "database": database, "warehouse": warehouse}
        return self.spec(secret, **fields) | overrides

    def password_spec(self, secret: str, **overrides: Any) -> dict[str, Any]:
        """PASSWORD_USER with its role, database and (suspended) warehouse."""
        return self._user_spec(
            secret, "password", "ANALYST", "ANALYTICS", "REPORTING_WH", **overrides
        )

    def key_pair_spec(self, secret: str, **overrides: Any) -> dict[str, Any]:
        """KEY_USER with its role, database and (started) warehouse."""
        return self._user_spec(secret, "keyPair", "LOADER", "RAW", "LOAD_WH", **overrides)

    def password_secret(self, password: str = PASSWORD) -> dict[str, str]:
        """A Secret's data in clear text."""
        return {"username": PASSWORD_USER.lower(), "password": password}

    def key_pair_secret(self) -> dict[str, str]:
        """KEY_USER's key as ``openssl pkcs8 -topk8 -v2 aes-256-cbc`` writes it, and its passphrase."""
        return {
            "username": KEY_USER,
            "private_key": self.registered_key.pkcs8_encrypted,
            "private_key_passphrase": PASSPHRASE,
        }

    def registered_key_fingerprint(self, workdir: Path) -> str:
        """The registered key's RSA_PUBLIC_KEY_FP, computed with openssl (not the operator's code)."""
        return openssl_fingerprint(self.registered_key.public_pem, workdir)

    def key_secret_values(self) -> set[str]:
        """What must never be shown of the registered key, beyond the Secret's own values."""
        key = self.registered_key
        return set().union(*(pem_lines(pem) for pem in (key.pkcs8, key.pkcs8_encrypted)))


@pytest.fixture(scope="session")
def snowflake_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnowflakePeer]:
    registered = make_key(PASSPHRASE)
    account = make_account(registered)
    reporting_password = "reporting-" + secrets.token_hex(16)
    account.users[EXAMPLE_REPORTING_USER] = User(
        EXAMPLE_REPORTING_USER,
        password=reporting_password,
        default_role=EXAMPLE_REPORTING_ROLE,
        roles={EXAMPLE_REPORTING_ROLE, "PUBLIC"},
    )
    account.roles[EXAMPLE_REPORTING_ROLE] = Role(
        EXAMPLE_REPORTING_ROLE, databases={"ANALYTICS"}, warehouses={"REPORTING_WH"}
    )
    account.databases["RAW"].add(EXAMPLE_LANDING_SCHEMA)
    with fakesnow_server(tmp_path_factory.mktemp("fakesnow")) as server:
        front = StrictSnowflakeFront(account, server.host, server.port)
        front.start()
        try:
            yield SnowflakePeer(front, registered, reporting_password)
        finally:
            front.stop()


# --- BigQuery --------------------------------------------------------------------------------


@dataclass
class BigQueryPeer:
    """The emulator behind the strict front, the token endpoint, and two keys for one account."""

    emulator: Emulator
    tokens: TokenEndpoint
    front: StrictFront
    account: ServiceAccount  # registered, may run jobs and read every dataset of the project
    impostor: ServiceAccount  # the same email, a key the token endpoint never saw
    project: str = BIGQUERY_PROJECT
    dataset: str = BIGQUERY_DATASET
    location: str = BIGQUERY_LOCATION
    keys_issued: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.front.base_url

    def spec(self, secret: str, **bigquery: Any) -> dict[str, Any]:
        """A connection to the project through the front; keywords go to ``spec.bigquery``."""
        return {
            "provider": "bigquery",
            "credentialsSecretRef": {"name": secret},
            "bigquery": {"projectId": self.project, "endpoint": self.endpoint, **bigquery},
            "testInterval": "1h",
            "testTimeout": "15s",
        }

    def key_json(self, account: ServiceAccount | None = None) -> str:
        """The JSON key of ``account`` (default: the registered one), token_uri on this peer."""
        text = (account or self.account).key_json(
            token_uri=self.tokens.token_uri, project_id=self.project
        )
        self.keys_issued.append(text)
        return text

    def secret(self, account: ServiceAccount | None = None) -> dict[str, str]:
        """A Secret's data in clear text."""
        return {"service_account.json": self.key_json(account)}

    def secret_values(self) -> set[str]:
        """Everything secret this peer handed out or issued: keys, their PEM lines, tokens."""
        values: set[str] = set(self.keys_issued)
        for account in (self.account, self.impostor):
            values |= pem_lines(account.private_key_pem)
            values |= set(self.tokens.issued_for(account.email))
        return values


@pytest.fixture(scope="session")
def bigquery_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryPeer]:
    with contextlib.ExitStack() as stack:
        emulator = Emulator(Path(tmp_path_factory.mktemp("bigquery")) / "emulator.log")
        stack.callback(emulator.stop)
        emulator.start()
        tokens = TokenEndpoint()
        tokens.start()
        stack.callback(tokens.stop)
        front = StrictFront(emulator.base_url, tokens)
        front.start()
        stack.callback(front.stop)
        account = new_service_account(BIGQUERY_ACCOUNT)
        impostor = new_service_account(BIGQUERY_ACCOUNT)
        tokens.register(account.email, account.public_key, account.key_id)
        front.add_project(BIGQUERY_PROJECT)
        front.grant(account.email, BIGQUERY_PROJECT)
        emulator.create_dataset(BIGQUERY_PROJECT, BIGQUERY_DATASET, BIGQUERY_LOCATION)
        yield BigQueryPeer(emulator, tokens, front, account, impostor)


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
