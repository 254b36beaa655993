"""Snowflake: the real ``snowflake-connector-python``, a login that validates the session's
defaults, metadata-only queries, close.

The test costs the user nothing: it never runs anything that needs compute, so a suspended
warehouse stays suspended. The login asks Snowflake to validate the role, database, schema and
warehouse (``validate_default_parameters``: the service answers 390189 / 390201 at login), the
warehouse's state comes from ``SHOW WAREHOUSES LIKE`` (metadata), and the server version from
``SELECT CURRENT_VERSION()``, which the cloud services layer answers without a warehouse.
A suspended warehouse is healthy: it resumes on demand when real work comes.

The connector is blocking: its calls run on the shared blocking-call runner (``blocking.py``),
with its login, network and socket timeouts taken from the test's budget. It is imported inside
the probe: operators without Snowflake connections do not pay its import time and memory.
"""

from __future__ import annotations

from warehouse_operator.providers.snowflake.credentials import SnowflakeCredentials
from warehouse_operator.providers.snowflake.probe import SnowflakeProvider

__all__ = ["PROVIDER", "SnowflakeCredentials", "SnowflakeProvider"]


PROVIDER = SnowflakeProvider()
