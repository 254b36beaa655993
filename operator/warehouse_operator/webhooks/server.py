"""The HTTPS server answering ``POST /validate`` with AdmissionReview ``admission.k8s.io/v1``.

What happens when the webhook itself cannot be reached is the ValidatingWebhookConfiguration's
``failurePolicy`` (the chart's choice): ``Fail`` (fail closed: no deletion of any connection
while no replica answers) or ``Ignore`` (fail open: deletions go through unchecked, and the
in-use finalizer is then the only protection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiohttp import web

from warehouse_operator.kube.port import KubeApi
from warehouse_operator.tasks import cancel_and_wait
from warehouse_operator.webhooks.admission import Admission
from warehouse_operator.webhooks.certificates import (
    DirectoryCertificates,
    SelfSignedCertificates,
    SelfSignedOptions,
    ServingContext,
)

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/validate"
MAX_REQUEST_BYTES = 3 * 1024 * 1024  # the API server's own request size limit


def build_app(admission: Admission) -> web.Application:
    async def validate(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, Mapping):
            return web.json_response({"error": "not an AdmissionReview"}, status=400)
        try:
            answer = await admission.review(body)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(answer)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.add_routes([web.post(WEBHOOK_PATH, validate), web.get("/healthz", healthz)])
    return app


class WebhookServer:
    """The HTTPS server and the task keeping its certificate current."""

    def __init__(
        self,
        admission: Admission,
        *,
        port: int,
        host: str = "0.0.0.0",
        cert_dir: str = "",
        self_signed: SelfSignedOptions | None = None,
        api: KubeApi | None = None,
        poll_interval: float = 5.0,
    ) -> None:
        if not cert_dir and (self_signed is None or api is None):
            raise ValueError("either a certificate folder or self-signed options and an API")
        self.admission = admission
        self.port = port
        self.host = host
        self.serving = ServingContext()
        self.directory = (
            DirectoryCertificates(cert_dir, self.serving, poll_interval=poll_interval)
            if cert_dir
            else None
        )
        self.self_signed = (
            SelfSignedCertificates(api, self.serving, self_signed)
            if not cert_dir and self_signed is not None and api is not None
            else None
        )
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.directory is not None:
            self.directory.load()
            keeper = self.directory.run()
        else:
            assert self.self_signed is not None
            await self.self_signed.ensure()
            keeper = self.self_signed.run()
        # a stop gives a review in flight 1 s (aiohttp's default: 60), then answers no more
        self._runner = web.AppRunner(
            build_app(self.admission), access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, host=self.host, port=self.port, ssl_context=self.serving.context
        )
        await site.start()
        self._task = asyncio.create_task(keeper, name="whc-webhook-certificates")
        logger.info("admission webhook listening on port %d (HTTPS, %s)", self.port, WEBHOOK_PATH)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
