"""kopf glue only: feed what the watches see to the scheduler; decide nothing else here.

Only ``@kopf.on.event`` handlers are used: they
make kopf store nothing on the objects (no annotations, no finalizers), so deleting a
connection never waits for kopf and Secrets are never written to. The one finalizer there is,
``warehouse-operator.io/in-use``, is ours (inuse) and present only while a connection has
users. With ``--leader-elect`` every replica watches, serves the webhook and is ready; only the
Lease holder tests and writes finalizers (leader.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web

from warehouse_operator import inuse, leader, metrics, webhooks
from warehouse_operator.kube import (
    InClusterError,
    KubeClient,
    SecretMetadataWatch,
    in_cluster_config,
    pod_namespace,
    service_account_dir,
)
from warehouse_operator.models import GROUP, PLURAL, VERSION
from warehouse_operator.scheduler import Scheduler
from warehouse_operator.settings import Settings
from warehouse_operator.tasks import cancel_all, cancel_and_wait_all

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
    secret_watches: list[asyncio.Task[None]] = field(default_factory=list)
    in_use_kinds: tuple[inuse.InUseKind, ...] = ()
    in_use: inuse.InUseController | None = None
    elector: leader.LeaderElector | None = None
    webhook: webhooks.WebhookServer | None = None
    # the tasks there were before the operator started: never its to cancel
    outside_tasks: frozenset[asyncio.Task[Any]] = frozenset()

    def kopf_leftovers(self) -> list[asyncio.Task[Any]]:
        """kopf's tasks that outlive their parent: its API discovery (started with
        ``as_completed``) goes on retrying after the operator stops."""
        current = asyncio.current_task()
        return [
            task
            for task in asyncio.all_tasks()
            if task is not current
            and task not in self.outside_tasks
            and _module_of(task).partition(".")[0] == "kopf"
        ]

    def started_leading(self) -> None:
        if self.scheduler is not None:
            self.scheduler.resume()
        if self.in_use is not None:
            self.in_use.start_leading()

    def stopped_leading(self) -> None:
        if self.scheduler is not None:
            self.scheduler.pause()
        if self.in_use is not None:
            self.in_use.stop_leading()


def _login(runtime: Runtime, settings: kopf.OperatorSettings) -> Any:
    """Log in in-cluster (as client-go's rest.InClusterConfig) or else by kubeconfig, and
    remember the result for our own API writes. Called again whenever kopf or KubeClient get a
    401, so a rotated service-account token is read afresh."""
    info = None
    try:
        found = in_cluster_config(os.environ, service_account_dir(os.environ))
        in_cluster_error = None
    except InClusterError as exc:  # a mounted kubeconfig may still serve, as it did before
        found, in_cluster_error = None, exc
    if found is not None:
        info = kopf.ConnectionInfo(
            server=found.server,
            ca_path=found.ca_path,
            token=found.token,
            default_namespace=found.namespace,
            trust_env=settings.networking.trust_env,
        )
    if info is None:
        try:  # exec and auth-provider plugins (cli lets the client library in only for those)
            info = kopf.login_via_client(logger=logger, settings=settings)
        except kopf.LoginError:
            info = None
    if info is None:
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError(str(in_cluster_error or "not in a cluster and no kubeconfig found"))
    runtime.login_info = info
    return info


def _module_of(task: asyncio.Task[Any]) -> str:
    frame = getattr(task.get_coro(), "cr_frame", None)
    return str(frame.f_globals.get("__name__", "")) if frame is not None else ""


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf_settings_holder: dict[str, kopf.OperatorSettings] = {}
    runtime.in_use_kinds = inuse.parse_kinds(runtime.settings.in_use_kinds)
    _register_in_use_kinds(runtime, registry)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        kopf_settings_holder["settings"] = settings
        try:
            await _start(runtime, settings)
        except asyncio.CancelledError:
            # stopped while starting: kopf runs no cleanup after a startup cut short
            await _stop(runtime)
            raise

    @kopf.on.cleanup(registry=registry)
    async def shutdown(**_: Any) -> None:
        await _stop(runtime)

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **_: Any) -> Any:
        return _login(runtime, settings)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def connection_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        if runtime.scheduler is not None:
            runtime.scheduler.observe(body, type)
        if runtime.in_use is not None:
            runtime.in_use.observe_connection(body, type)

    return registry


async def _start(runtime: Runtime, settings: kopf.OperatorSettings) -> None:
    """kopf's settings, then the client, webhook, scheduler, watches, in-use, elector, servers."""
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace reads needed
    settings.posting.enabled = False  # events are ours, and only on transitions
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.peering.standalone = True
    conf = runtime.settings
    runtime.client = KubeClient(lambda: _login(runtime, settings))
    # what can fail comes first, and fails for good: a retried startup would start twice
    try:
        timings = leader.LeaderTimings(
            lease_duration=conf.leader_election_lease_duration,
            renew_deadline=conf.leader_election_renew_deadline,
            retry_period=conf.leader_election_retry_period,
        )
        if conf.webhook_port:
            runtime.webhook = webhooks.WebhookServer(
                webhooks.Admission(
                    runtime.client,
                    in_use_kinds=runtime.in_use_kinds,
                    one_connection_per_namespace=conf.one_connection_per_namespace,
                ),
                port=conf.webhook_port,
                cert_dir=conf.webhook_cert_dir,
                self_signed=None
                if conf.webhook_cert_dir
                else webhooks.SelfSignedOptions(
                    namespace=pod_namespace(),
                    service=conf.webhook_service_name,
                    secret_name=conf.webhook_secret_name,
                    webhook_config=conf.webhook_config_name,
                ),
                api=runtime.client,
            )
            await runtime.webhook.start()
    except Exception as exc:
        raise kopf.PermanentError(f"cannot start: {exc}") from exc
    runtime.scheduler = Scheduler(
        runtime.client,
        max_concurrent=conf.max_concurrent_tests,
        default_interval=conf.default_test_interval,
        policy=conf.egress_policy,
        startup_spread=conf.startup_spread,
    )
    runtime.scheduler.start(active=not conf.leader_elect)
    # Secrets: metadata only, and not through kopf (it would receive and parse every
    # Secret's data, Helm release Secrets included); see kube.SecretMetadataWatch
    for namespace in conf.namespaces or (None,):
        watch = SecretMetadataWatch(
            runtime.client,
            namespace,
            runtime.scheduler.secrets_listed,
            runtime.scheduler.secret_changed,
        )
        runtime.secret_watches.append(asyncio.create_task(watch.run()))
    if runtime.in_use_kinds:
        runtime.in_use = inuse.InUseController(
            runtime.client,
            runtime.in_use_kinds,
            status_writer=runtime.scheduler.status_writer,  # one writer of status
        )
        runtime.in_use.start(leading=not conf.leader_elect)
    if conf.leader_elect:
        runtime.elector = leader.LeaderElector(
            runtime.client,
            namespace=conf.leader_election_namespace or pod_namespace(),
            name=conf.leader_election_lease,
            identity=leader.make_identity(os.environ.get("HOSTNAME")),
            timings=timings,
            on_started_leading=runtime.started_leading,
            on_stopped_leading=runtime.stopped_leading,
        )
        runtime.elector.start()
    await _start_servers(runtime)
    runtime.ready = True


async def _stop(runtime: Runtime) -> None:
    """Stop what ``_start`` started, in order, without waiting on the API: every task is
    cancelled (in-flight writes with it) and the Lease release has a short bound of its own."""
    runtime.ready = False
    watches, runtime.secret_watches = runtime.secret_watches, []
    await cancel_and_wait_all(watches)
    if runtime.webhook is not None:
        await runtime.webhook.stop()
    if runtime.scheduler is not None:
        await runtime.scheduler.stop()  # no test outlives the lease
    if runtime.in_use is not None:
        await runtime.in_use.stop()
    if runtime.elector is not None:
        await runtime.elector.stop()  # releases the Lease: a follower takes over at once
    if runtime.client is not None:
        await runtime.client.close()
    servers, runtime.servers = runtime.servers, []
    for server in servers:
        await server.cleanup()
    # kopf's own API calls (resource discovery retrying while the API is away) run in tasks
    # of their own that outlive it; kopf would wait 5 s for them: nothing is left for them to do
    await cancel_all(runtime.kopf_leftovers())


def _register_in_use_kinds(runtime: Runtime, registry: kopf.OperatorRegistry) -> None:
    """An event handler per in-use kind, for all its objects: kopf's label filters are applied
    on our side of the watch, and a filtered handler would never hear of a label removed."""
    for number, kind in enumerate(runtime.in_use_kinds):

        def make_user_event(kind: inuse.InUseKind) -> Any:
            async def user_event(type: str | None, body: kopf.Body, **_: Any) -> None:
                if runtime.in_use is not None:
                    runtime.in_use.observe_user(kind, body, type)

            return user_event

        kopf.on.event(
            group=kind.group,
            version=kind.version,
            plural=kind.plural,
            id=f"in_use_event_{number}",
            registry=registry,
        )(make_user_event(kind))


async def _start_servers(runtime: Runtime) -> None:
    conf = runtime.settings

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        # followers are ready too: ready means "works and can take over", not "leads"
        if not runtime.ready:
            return web.Response(status=503, text="starting\n")
        role = (
            ""
            if runtime.elector is None
            else (" (leader)\n" if runtime.elector.is_leader else " (follower)\n")
        )
        return web.Response(text="ready" + (role or "\n"))

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
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)  # a stop waits ≤ 1 s
        await runner.setup()
        await web.TCPSite(runner, host="0.0.0.0", port=port).start()
        runtime.servers.append(runner)


async def run_operator(settings: Settings, stop_flag: asyncio.Event | None = None) -> None:
    runtime = Runtime(settings=settings)
    try:
        registry = build_registry(runtime)
    except ValueError as exc:
        raise SystemExit(f"warehouse-operator: invalid --in-use-kinds: {exc}") from None
    namespaces = list(settings.namespaces)
    runtime.outside_tasks = frozenset(asyncio.all_tasks())
    await kopf.operator(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        stop_flag=stop_flag,
    )
