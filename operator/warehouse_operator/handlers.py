"""kopf glue only: feed what the watches see to the scheduler; decide nothing else here.

Only ``@kopf.on.event`` handlers are used: they make kopf store nothing on the objects (no
annotations, no finalizers), so deleting a connection never waits for the operator and
Secrets are never written to.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web

from warehouse_operator import metrics
from warehouse_operator.kube import KubeClient
from warehouse_operator.models import GROUP, PLURAL, VERSION
from warehouse_operator.scheduler import Scheduler
from warehouse_operator.settings import Settings

logger = logging.getLogger("warehouse_operator")


@dataclass
class Runtime:
    """What one running operator holds; built by the startup handler."""

    settings: Settings
    login_info: Any = None
    client: KubeClient | None = None
    scheduler: Scheduler | None = None
    servers: list[web.AppRunner] = field(default_factory=list)
    ready: bool = False


def _login(runtime: Runtime, settings: kopf.OperatorSettings) -> Any:
    """Log in the way kopf does by default, and remember the result for our own API writes."""
    info = None
    try:
        info = kopf.login_via_client(logger=logger, settings=settings)
    except kopf.LoginError:
        info = None
    if info is None:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
    if info is None:
        raise kopf.LoginError("no kubeconfig and no in-cluster service account found")
    runtime.login_info = info
    return info


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf_settings_holder: dict[str, kopf.OperatorSettings] = {}

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        kopf_settings_holder["settings"] = settings
        settings.scanning.disabled = True  # no cluster-wide CRD/namespace reads needed
        settings.posting.enabled = False  # events are ours, and only on transitions
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 30
        settings.networking.request_timeout = 60
        settings.peering.standalone = True
        conf = runtime.settings
        runtime.client = KubeClient(lambda: _login(runtime, settings))
        runtime.scheduler = Scheduler(
            runtime.client,
            max_concurrent=conf.max_concurrent_tests,
            default_interval=conf.default_test_interval,
            policy=conf.egress_policy,
            startup_spread=conf.startup_spread,
        )
        runtime.scheduler.start(active=not conf.leader_elect)
        await _start_servers(runtime)
        runtime.ready = True

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        runtime.ready = False
        if runtime.scheduler is not None:
            await runtime.scheduler.stop()
        if runtime.client is not None:
            await runtime.client.close()
        for server in runtime.servers:
            await server.cleanup()

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **_: Any) -> Any:
        return _login(runtime, settings)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def connection_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        if runtime.scheduler is not None:
            runtime.scheduler.observe(body, type)

    @kopf.on.event("v1", "secrets", registry=registry)
    async def secret_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        if runtime.scheduler is None:
            return
        meta = body.get("metadata") or {}
        data = None if type == "DELETED" else (body.get("data") or {})
        runtime.scheduler.observe_secret(
            str(meta.get("namespace", "")), str(meta.get("name", "")), data
        )

    return registry


async def _start_servers(runtime: Runtime) -> None:
    conf = runtime.settings

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        return (
            web.Response(text="ready\n")
            if runtime.ready
            else web.Response(status=503, text="starting\n")
        )

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

    routes: dict[int, list[web.RouteDef]] = {}
    if conf.health_port:
        routes.setdefault(conf.health_port, []).extend(
            [web.get("/healthz", healthz), web.get("/readyz", readyz)]
        )
    if conf.metrics_port:
        routes.setdefault(conf.metrics_port, []).append(web.get("/metrics", metrics_page))
    for port, defs in routes.items():
        app = web.Application()
        app.add_routes(defs)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host="0.0.0.0", port=port).start()
        runtime.servers.append(runner)


async def run_operator(settings: Settings, stop_flag: asyncio.Event | None = None) -> None:
    runtime = Runtime(settings=settings)
    registry = build_registry(runtime)
    namespaces = list(settings.namespaces)
    await kopf.operator(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        stop_flag=stop_flag,
    )
