"""The operator's own API writes under API faults: 429, 500, 409 and a dropped connection.

A real aiohttp server on 127.0.0.1 plays the API server and answers the status PATCH with
faults first; the operator's real client (``kube.KubeClient``) must retry with backoff and
deliver the write, and the scheduler must not lose a result when every retry fails.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.reliability.fakes import loopback_connection, wait_until
from tests.support.kube_login import plain_client
from warehouse_operator.kube import KubeClient
from warehouse_operator.probe import EgressPolicy
from warehouse_operator.scheduler import Scheduler


class FlakyApi:
    """Answers status PATCHes with the given faults in turn, then 200; records every write."""

    def __init__(self) -> None:
        self.faults: list[int] = []
        self.calls = 0
        self.written: list[dict[str, Any]] = []

    async def patch(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        if self.faults:
            fault = self.faults.pop(0)
            if fault == 0:  # drop the connection without an answer
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            headers = {"Retry-After": "0"} if fault == 429 else {}
            return web.json_response(
                {"kind": "Status", "code": fault}, status=fault, headers=headers
            )
        body = json.loads(await request.read())
        self.written.append(body["status"])
        return web.json_response({"status": body["status"]})

    async def event(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({}, status=201)

    async def secret(self, request: web.Request) -> web.StreamResponse:
        data = {
            "username": base64.b64encode(b"app").decode(),
            "password": base64.b64encode(b"pw").decode(),
        }
        return web.json_response({"data": data})


@pytest.fixture
async def api() -> AsyncIterator[tuple[FlakyApi, KubeClient]]:
    flaky = FlakyApi()
    app = web.Application()
    app.router.add_patch(
        "/apis/warehouse-operator.io/v1alpha1/namespaces/{ns}/warehouseconnections/{name}/status",
        flaky.patch,
    )
    app.router.add_post("/api/v1/namespaces/{ns}/events", flaky.event)
    app.router.add_get("/api/v1/namespaces/{ns}/secrets/{name}", flaky.secret)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = plain_client(f"http://127.0.0.1:{port}")
    yield flaky, client
    await client.close()
    await runner.cleanup()


@pytest.mark.parametrize(
    "faults",
    [[429], [500, 503], [409], [0], [429, 500, 409, 0]],
    ids=["429", "5xx", "409", "dropped", "mixed"],
)
async def test_status_patch_is_retried_until_delivered(
    api: tuple[FlakyApi, KubeClient], faults: list[int]
) -> None:
    flaky, client = api
    flaky.faults = list(faults)
    response = await client.patch_status("ns", "orders", {"phase": "Connected"})
    assert response == {"status": {"phase": "Connected"}}
    assert flaky.written == [{"phase": "Connected"}]
    assert flaky.calls == len(faults) + 1


async def test_a_result_is_not_lost_when_every_retry_fails(
    api: tuple[FlakyApi, KubeClient],
) -> None:
    """The API fails longer than the client retries: the scheduler tests again and writes later."""
    flaky, client = api
    flaky.faults = [500] * 7  # more than one call's retries
    scheduler = Scheduler(
        client, max_concurrent=2, policy=EgressPolicy.from_cidrs([], ["127.0.0.0/8"])
    )
    scheduler.start()
    try:
        status = {
            "phase": "Connected",
            "lastTestedAt": "2026-01-01T00:00:00Z",
            "observedGeneration": 0,
        }
        scheduler.observe(
            loopback_connection("ns", "orders", {"name": "db"}, status=status), "ADDED"
        )
        written = await wait_until(lambda: bool(flaky.written), timeout=20.0)
        assert written, "the result was never written"
        assert flaky.written[-1]["reason"] == "DestinationDenied"
        assert flaky.written[-1]["observedGeneration"] == 1
    finally:
        await scheduler.stop()
