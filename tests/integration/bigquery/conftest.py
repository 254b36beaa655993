"""The BigQuery emulator behind a strict front, and a local OAuth token endpoint.

Started once per session, all on 127.0.0.1: ``crucible serve --dialect bigquery`` from its own
virtualenv (installed on demand by ``scripts/ci/install-bigquery-emulator.sh``), the token
endpoint (``tests/support/bigquery_token.py``) that verifies google-auth's JWT-bearer grants,
and the front (``tests/support/bigquery_front.py``) that checks tokens and grants the way
Google does. Nothing here skips: when the emulator cannot be installed or started, the
fixtures fail with its output.

An audit hook records every name lookup and connection made during these tests; each test
fails if one left the loopback interface.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.bigquery_emulator import Emulator, RefusingPort, SilentListener
from tests.support.bigquery_front import StrictFront
from tests.support.bigquery_keys import ServiceAccount, new_service_account, secret_data
from tests.support.bigquery_token import TokenEndpoint
from warehouse_operator.models import ProbeResult

PROJECT = "analytics-prod"
DATASET = "sales"
EU_DATASET = "sales_eu"
RESTRICTED_DATASET = "finance"


@dataclass
class BigQueryWorld:
    """Everything a test needs to build a spec and a Secret."""

    emulator: Emulator
    tokens: TokenEndpoint
    front: StrictFront
    reader: ServiceAccount  # jobs and every dataset in PROJECT
    narrow: ServiceAccount  # jobs in PROJECT, dataset DATASET only
    stranger: ServiceAccount  # registered, but no grant in PROJECT
    ghost: ServiceAccount  # never registered with the token endpoint
    impostor: ServiceAccount  # reader's email, another key
    secrets_seen: list[str] = field(default_factory=list)

    def spec(
        self,
        *,
        test_timeout: str = "10s",
        secret_ref: dict[str, Any] | None = None,
        **bigquery: Any,
    ) -> dict[str, Any]:
        """A spec for PROJECT through the front; keyword arguments go to ``spec.bigquery``."""
        return {
            "provider": "bigquery",
            "credentialsSecretRef": secret_ref or {"name": "bigquery-key"},
            "bigquery": {"projectId": PROJECT, "endpoint": self.front.base_url, **bigquery},
            "testTimeout": test_timeout,
        }

    def key_json(self, account: ServiceAccount, token_uri: str | None = None) -> str:
        text = account.key_json(token_uri=token_uri or self.tokens.token_uri, project_id=PROJECT)
        self.secrets_seen.append(text)
        return text

    def secret(
        self,
        account: ServiceAccount,
        token_uri: str | None = None,
        data_key: str = "service_account.json",
    ) -> dict[str, str]:
        return secret_data(self.key_json(account, token_uri), data_key)

    def assert_no_secret_in(self, result: ProbeResult, *accounts: ServiceAccount) -> None:
        """No private key (or a recognisable line of it), key file or access token in the result."""
        shown = result.model_dump_json()
        needles: list[str] = []
        for account in accounts:
            pem = account.private_key_pem
            needles.append(pem)
            needles.extend(
                line for line in pem.splitlines() if len(line) >= 12 and "-----" not in line
            )
            needles.append(json.dumps(pem)[1:-1][:80])
            needles.extend(self.tokens.issued_for(account.email))
        needles.extend(self.secrets_seen)
        for needle in needles:
            assert needle not in shown, "a secret value leaked into the result"


@pytest.fixture(scope="session")
def bigquery_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryWorld]:
    log = Path(tmp_path_factory.mktemp("bigquery")) / "emulator.log"
    emulator = Emulator(log)
    emulator.start()
    tokens = TokenEndpoint()
    tokens.start()
    front = StrictFront(emulator.base_url, tokens)
    front.start()
    try:
        reader = new_service_account(f"reader@{PROJECT}.iam.gserviceaccount.com")
        narrow = new_service_account(f"narrow@{PROJECT}.iam.gserviceaccount.com")
        stranger = new_service_account("stranger@elsewhere.iam.gserviceaccount.com")
        ghost = new_service_account(f"deleted@{PROJECT}.iam.gserviceaccount.com")
        impostor = new_service_account(reader.email)
        for account in (reader, narrow, stranger):
            tokens.register(account.email, account.public_key, account.key_id)
        front.add_project(PROJECT)
        front.grant(reader.email, PROJECT)
        front.grant(narrow.email, PROJECT, datasets=[DATASET])
        emulator.create_dataset(PROJECT, DATASET, "US")
        emulator.create_dataset(PROJECT, EU_DATASET, "EU")
        emulator.create_dataset(PROJECT, RESTRICTED_DATASET, "US")
        yield BigQueryWorld(emulator, tokens, front, reader, narrow, stranger, ghost, impostor)
    finally:
        front.stop()
        tokens.stop()
        emulator.stop()


@pytest.fixture
def silent_endpoint() -> Iterator[SilentListener]:
    with SilentListener() as listener:
        yield listener


@pytest.fixture
def refusing_endpoint() -> Iterator[RefusingPort]:
    port = RefusingPort()
    yield port
    port.close()


# --- every connection stays on the loopback interface -------------------------------------------

_recorded: list[str] | None = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recorded is None:
        return
    if event == "socket.getaddrinfo" and args[0] is not None:
        host = args[0]
        _recorded.append(host.decode() if isinstance(host, bytes) else str(host))
    elif event == "socket.connect" and isinstance(args[1], tuple):
        _recorded.append(str(args[1][0]))


_hook_installed = False


@pytest.fixture(autouse=True)
def only_loopback_traffic() -> Iterator[None]:
    global _recorded, _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)  # hooks cannot be removed: it records only while a test runs
        _hook_installed = True
    _recorded = []
    try:
        yield
        outside = sorted({host for host in _recorded if not _is_loopback(host)})
        assert not outside, f"the test reached beyond 127.0.0.1: {outside}"
    finally:
        _recorded = None
