"""Keeping the serving certificate current: from a folder, or self-managed through a Secret.

Either from ``--webhook-cert-dir`` (``tls.crt``/``tls.key``, e.g. a cert-manager Secret mounted
there; reloaded when the files change), or self-managed: a CA and a serving certificate made
here (``ca.py``), kept in a Secret shared by all replicas (they must all present certificates
from the CA the API server trusts), renewed before expiry, and the CA bundle written into the
ValidatingWebhookConfiguration's ``caBundle`` (restored if a deployment tool resets it).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warehouse_operator.kube.errors import Conflict, describe
from warehouse_operator.kube.paths import object_path
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.webhooks.ca import CertificateBundle, renew_bundle, service_dns_names

logger = logging.getLogger(__name__)

WEBHOOK_CONFIG_API = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
API_TIMEOUT = 8.0  # each read or write of the Secret and the webhook configuration


class ServingContext:
    """The server's SSLContext; a new certificate is loaded into it in place, so established
    listeners present it on their next handshake."""

    def __init__(self) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.fingerprint: str | None = None
        self.loaded = False

    def load_pem(self, cert_pem: bytes, key_pem: bytes) -> bool:
        """Load the pair; False when it is the one loaded already. ssl.SSLError on a bad pair."""
        fingerprint = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()
        if fingerprint == self.fingerprint:
            return False
        with tempfile.TemporaryDirectory(prefix="whc-webhook-") as folder:
            cert_file, key_file = os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key")
            for path, data in ((cert_file, cert_pem), (key_file, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            # a bad pair would leave a context half-changed: try it on a scratch one first
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
            self.context.load_cert_chain(cert_file, key_file)
        self.fingerprint = fingerprint
        self.loaded = True
        return True


class DirectoryCertificates:
    """``tls.crt``/``tls.key`` from a folder (a mounted cert-manager Secret), reloaded on change."""

    def __init__(
        self, folder: str | Path, serving: ServingContext, *, poll_interval: float = 5.0
    ) -> None:
        self.folder = Path(folder)
        self.serving = serving
        self.poll_interval = poll_interval
        self.reloads = 0
        self._bad: str | None = None

    def _read(self) -> tuple[bytes, bytes]:
        return (self.folder / "tls.crt").read_bytes(), (self.folder / "tls.key").read_bytes()

    def load(self) -> None:
        """The first load: raises when the files are missing or do not match."""
        cert, key = self._read()
        self.serving.load_pem(cert, key)

    def reload(self) -> bool:
        """True when a new pair was loaded; a half-written or broken pair keeps the old one."""
        try:
            cert, key = self._read()
            changed = self.serving.load_pem(cert, key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            detail = type(exc).__name__
            if detail != self._bad:
                logger.warning(
                    "webhook certificate in %s not loaded (%s); keeping the previous one",
                    self.folder,
                    detail,
                )
            self._bad = detail
            return False
        self._bad = None
        if changed:
            self.reloads += 1
            logger.info("webhook certificate reloaded from %s", self.folder)
        return changed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            self.reload()


@dataclass(frozen=True, kw_only=True)
class SelfSignedOptions:
    """Where the certificate lives and whom it names (the names come from the settings)."""

    namespace: str
    service: str
    secret_name: str
    webhook_config: str
    ca_validity: dt.timedelta = dt.timedelta(days=3650)
    cert_validity: dt.timedelta = dt.timedelta(days=365)
    renew_at: float = 1 / 3  # renew when a third of the lifetime is left
    check_interval: float = 60.0
    extra_dns_names: tuple[str, ...] = ()

    @property
    def dns_names(self) -> list[str]:
        return service_dns_names(self.service, self.namespace) + list(self.extra_dns_names)


class SelfSignedCertificates:
    """A CA and serving certificate of our own, shared by the replicas through a Secret."""

    def __init__(self, api: KubeApi, serving: ServingContext, options: SelfSignedOptions) -> None:
        self.api = api
        self.serving = serving
        self.options = options
        self.bundle: CertificateBundle | None = None
        self.rotations = 0
        self.ca_bundle_patches = 0

    @property
    def _secret_path(self) -> str:
        return object_path("v1", "secrets", self.options.namespace, self.options.secret_name)

    async def ensure(self) -> CertificateBundle:
        """A usable bundle in the Secret (made or renewed here if needed), loaded for serving."""
        opts = self.options
        for _ in range(5):
            secret = await self.api.get_object(self._secret_path, timeout=API_TIMEOUT)
            data = secret.get("data") if isinstance(secret, Mapping) else None
            current = CertificateBundle.from_secret_data(data)
            if current is not None and current.usable(
                opts.dns_names, dt.datetime.now(dt.UTC), opts.renew_at
            ):
                bundle = current
                break
            bundle = await asyncio.to_thread(
                renew_bundle,
                current,
                opts.dns_names,
                ca_validity=opts.ca_validity,
                cert_validity=opts.cert_validity,
                renew_at=opts.renew_at,
            )
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": opts.secret_name,
                    "namespace": opts.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "warehouse-operator"},
                },
                "data": bundle.secret_data(),
            }
            try:
                if isinstance(secret, Mapping):
                    meta = secret.get("metadata") or {}
                    body["metadata"]["resourceVersion"] = meta.get("resourceVersion")
                    body["metadata"]["labels"] = {
                        **(meta.get("labels") or {}),
                        **body["metadata"]["labels"],
                    }
                    await self.api.replace_object(self._secret_path, body, timeout=API_TIMEOUT)
                else:
                    await self.api.create_object(
                        object_path("v1", "secrets", self.options.namespace),
                        body,
                        timeout=API_TIMEOUT,
                    )
            except Conflict:
                continue  # another replica wrote it first: use theirs
            self.rotations += 1
            logger.info(
                "webhook certificate %s in Secret %s/%s",
                "issued" if current is None else "renewed",
                opts.namespace,
                opts.secret_name,
            )
            break
        else:
            raise RuntimeError("the webhook certificate Secret keeps changing under us")
        if self.serving.load_pem(bundle.cert_pem, bundle.key_pem) and self.bundle is not None:
            logger.info("webhook now serves its renewed certificate")
        self.bundle = bundle
        await self.publish_ca_bundle(bundle.ca_pem)
        return bundle

    async def publish_ca_bundle(self, ca_pem: bytes) -> bool:
        """Write the CA bundle into every webhook of the ValidatingWebhookConfiguration (if
        it exists and differs). True when it was patched."""
        path = f"{WEBHOOK_CONFIG_API}/{self.options.webhook_config}"
        config = await self.api.get_object(path, timeout=API_TIMEOUT)
        if not isinstance(config, Mapping):
            logger.debug("no ValidatingWebhookConfiguration %s yet", self.options.webhook_config)
            return False
        wanted = base64.b64encode(ca_pem).decode()
        ops: list[dict[str, Any]] = []
        webhooks = config.get("webhooks")
        for index, hook in enumerate(webhooks if isinstance(webhooks, list) else []):
            if not isinstance(hook, Mapping):
                continue
            client = hook.get("clientConfig")
            if isinstance(client, Mapping) and client.get("caBundle") == wanted:
                continue
            ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": hook.get("name")})
            if not isinstance(client, Mapping):
                ops.append(
                    {
                        "op": "add",
                        "path": f"/webhooks/{index}/clientConfig",
                        "value": {"caBundle": wanted},
                    }
                )
            else:
                ops.append(
                    {
                        "op": "add",
                        "path": f"/webhooks/{index}/clientConfig/caBundle",
                        "value": wanted,
                    }
                )
        if not ops:
            return False
        await self.api.patch_object(
            path, ops, content_type="application/json-patch+json", timeout=API_TIMEOUT
        )
        self.ca_bundle_patches += 1
        logger.info(
            "CA bundle written into ValidatingWebhookConfiguration %s", self.options.webhook_config
        )
        return True

    async def run(self) -> None:
        """Re-check now and then: renew before expiry, pick up another replica's renewal, and
        put the CA bundle back if a deployment tool reset it."""
        while True:
            await asyncio.sleep(self.options.check_interval)
            try:
                await self.ensure()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "webhook certificate check failed (%s); trying again in %gs",
                    describe(exc),
                    self.options.check_interval,
                )
