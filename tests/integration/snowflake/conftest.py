"""fakesnow behind the strict front, for the Snowflake provider's integration tests.

fakesnow is started once per session from its own virtualenv (installed on demand by
``scripts/ci/install-snowflake-emulator.sh``); the front (``tests/support/snowflake_front.py``)
knows the account below and refuses logins the way Snowflake does. Nothing here skips: when
the emulator cannot be installed or started, the fixtures fail with its output.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.snowflake_emulator import fakesnow_server
from tests.support.snowflake_front import StrictSnowflakeFront
from tests.support.snowflake_testbed import PASSPHRASE, KeyMaterial, make_account, make_key


@pytest.fixture(scope="session")
def registered_key() -> KeyMaterial:
    """The key registered for ETL_SERVICE (as its RSA_PUBLIC_KEY)."""
    return make_key(PASSPHRASE)


@pytest.fixture(scope="session")
def stranger_key() -> KeyMaterial:
    """A well-formed key Snowflake does not know."""
    return make_key(PASSPHRASE)


@pytest.fixture(scope="session")
def snowflake_front(
    tmp_path_factory: pytest.TempPathFactory, registered_key: KeyMaterial
) -> Iterator[StrictSnowflakeFront]:
    log_dir: Path = tmp_path_factory.mktemp("fakesnow")
    with fakesnow_server(log_dir) as server:
        front = StrictSnowflakeFront(make_account(registered_key), server.host, server.port)
        front.start()
        try:
            yield front
        finally:
            front.stop()
