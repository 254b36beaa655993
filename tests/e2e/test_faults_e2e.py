"""Faults around the operator process itself: killed mid-test, and restarted."""

from __future__ import annotations

import pytest

from tests.support.kube_e2e import E2E
from tests.support.pgserver import SilentServer

pytestmark = pytest.mark.e2e


def test_sigkill_mid_test_converges_without_stuck_objects_or_repeated_events(e2e: E2E) -> None:
    silent = SilentServer()
    try:
        e2e.create_pg_secret("pg")
        e2e.ns.create_connection("orders", e2e.postgres_spec("pg", testInterval="1h"))
        e2e.ns.create_connection(
            "stuck",
            e2e.postgres_spec(
                "pg",
                postgres=e2e.pg.postgres_spec(host="127.0.0.1", port=silent.port),
                testTimeout="3s",
            ),
        )
        e2e.wait_for_phase("orders", "Connected")
        # "stuck" is mid-test now: its database accepted the connection and says nothing
        assert e2e.ns.get_connection("stuck").get("status", {}).get("phase") in (None, "Pending")
        e2e.operator.kill()  # SIGKILL: no cleanup at all

        # nothing waits for the dead operator: no finalizer on either object
        for name in ("orders", "stuck"):
            assert not e2e.ns.get_connection(name)["metadata"].get("finalizers")

        e2e.operator.start()
        e2e.wait_for_phase("stuck", "Failed", "Timeout")
        # one event per transition, none repeated by the crash or the restart
        assert e2e.ns.event_reasons("orders") == [("Normal", "Connected")]
        assert e2e.ns.event_reasons("stuck") == [("Warning", "Timeout")]
        assert e2e.ns.get_connection("orders")["status"]["phase"] == "Connected"
    finally:
        silent.stop()
