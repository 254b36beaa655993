"""A real PostgreSQL goes away and comes back, driven through the scheduler.

The database sits behind a TCP forwarder on 127.0.0.1 that can refuse connections (as a
stopped database does) and accept them again on the same port. The connection must go
Failed/Unreachable with one Warning event, stay quiet while it keeps failing, and be Connected
again — with one Normal event — within the backoff cap (its testInterval) of the database
coming back.
"""

from __future__ import annotations

import asyncio
import time

from tests.reliability.fakes import RecordingApi, wait_until
from tests.support.faulty_servers import SwitchableProxy
from tests.support.pgserver import PostgresServer
from warehouse_operator.probe import EgressPolicy
from warehouse_operator.scheduler import JITTER, Scheduler

INTERVAL = 1.0


def reasons(api: RecordingApi) -> list[str]:
    return [p.status["reason"] for p in api.patches if p.status.get("reason")]


def test_database_down_then_up(pg_server: PostgresServer) -> None:
    proxy = SwitchableProxy(pg_server.port)
    proxy.down()

    async def scenario() -> tuple[RecordingApi, float]:
        api = RecordingApi()
        api.secrets[("shop", "pg")] = pg_server.secret_data()
        scheduler = Scheduler(api, max_concurrent=2, policy=EgressPolicy(), startup_spread=0.1)
        scheduler.start()
        try:
            scheduler.observe(
                {
                    "metadata": {
                        "namespace": "shop",
                        "name": "orders",
                        "uid": "u1",
                        "generation": 1,
                    },
                    "spec": {
                        "provider": "postgresql",
                        "credentialsSecretRef": {"name": "pg"},
                        "postgres": pg_server.postgres_spec(port=proxy.port, sslMode="disable"),
                        "testInterval": "1s",
                        "testTimeout": "2s",
                    },
                },
                "ADDED",
            )
            assert await wait_until(lambda: len(reasons(api)) >= 3, timeout=10.0), reasons(api)
            assert set(reasons(api)) == {"Unreachable"}
            proxy.up()
            back = time.monotonic()
            assert await wait_until(lambda: reasons(api)[-1] == "Connected", timeout=10.0)
            recovered = next(p.at for p in api.patches if p.status.get("reason") == "Connected")
            await asyncio.sleep(1.5)  # and it stays Connected on the next routine test
            return api, recovered - back
        finally:
            await scheduler.stop()
            proxy.stop()

    api, took = asyncio.run(scenario())
    # the last failing test was at most INTERVAL (+ jitter) before; one test takes milliseconds
    assert took <= INTERVAL * (1 + JITTER) + 0.5, took
    assert [(e.type, e.reason) for e in api.events] == [
        ("Warning", "Unreachable"),
        ("Normal", "Connected"),
    ]
    final = api.patches[-1].status
    assert final["phase"] == "Connected"
    assert final["consecutiveFailures"] == 0
    assert final["serverVersion"].startswith("PostgreSQL ")
    assert reasons(api)[-1] == "Connected"
    assert reasons(api).count("Connected") >= 2
    assert proxy.connections_forwarded >= 2
