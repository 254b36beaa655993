"""The few Kubernetes API calls the operator makes itself, outside kopf's watches.

kopf watches; this client writes: one status PATCH per test, events on transitions, and a GET
of a Secret the first time a connection references it. Every call has a timeout, and
transient failures (429, 5xx, connection errors) are retried with capped, jittered backoff.
Credentials come from the same login as kopf's (kubeconfig, in-cluster service account).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import ssl
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from warehouse_operator.kube.errors import Conflict, api_error
from warehouse_operator.kube.paths import connection_path, is_dns_subdomain, object_path
from warehouse_operator.kube.port import MERGE_PATCH, Body, Secs
from warehouse_operator.models import GROUP, KIND, VERSION

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 15.0
RETRIES = 5
COMPONENT = "warehouse-operator"


class ConnectionInfoLike(Protocol):
    server: str
    ca_path: Any
    ca_data: Any
    insecure: bool | None
    username: str | None
    password: str | None
    scheme: str | None
    token: str | None
    certificate_path: Any
    certificate_data: Any
    private_key_path: Any
    private_key_data: Any


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _maybe_b64(value: Any) -> bytes:
    """kubeconfig ``*-data`` fields are base64; some loaders hand them over already decoded."""
    raw = _as_bytes(value)
    if b"-----BEGIN" in raw:
        return raw
    return base64.b64decode(raw)


class KubeClient:
    def __init__(self, login: Callable[[], ConnectionInfoLike]) -> None:
        self._login = login
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._lock = asyncio.Lock()
        self.requests = {"GET": 0, "PATCH": 0, "POST": 0}

    async def _ensure(self, force: bool = False) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is not None and not force:
                return self._session
            if self._session is not None:
                await self._session.close()
            info = await asyncio.to_thread(self._login)
            self._session = self._make_session(info)
            return self._session

    def _make_session(self, info: ConnectionInfoLike) -> aiohttp.ClientSession:
        self._server = info.server.rstrip("/")
        headers: dict[str, str] = {"User-Agent": f"{COMPONENT}/status-writer"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        elif info.username and info.password:
            basic = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        ssl_ctx: ssl.SSLContext | bool = True
        if self._server.startswith("https"):
            ctx = ssl.create_default_context()
            if info.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if info.ca_path:
                ctx.load_verify_locations(cafile=os.fsdecode(info.ca_path))
            elif info.ca_data:
                ctx.load_verify_locations(cadata=_maybe_b64(info.ca_data).decode())
            cert, key = self._client_cert_files(info)
            if cert and key:
                ctx.load_cert_chain(cert, key)
            ssl_ctx = ctx
        connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=20)
        return aiohttp.ClientSession(
            headers=headers,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        )

    def _client_cert_files(self, info: ConnectionInfoLike) -> tuple[str | None, str | None]:
        cert = os.fsdecode(info.certificate_path) if info.certificate_path else None
        key = os.fsdecode(info.private_key_path) if info.private_key_path else None
        if info.certificate_data or info.private_key_data:
            if self._tmpdir is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="whc-kube-")
            if info.certificate_data:
                cert = os.path.join(self._tmpdir.name, "client.crt")
                _write_private(cert, _maybe_b64(info.certificate_data))
            if info.private_key_data:
                key = os.path.join(self._tmpdir.name, "client.key")
                _write_private(key, _maybe_b64(info.private_key_data))
        return cert, key

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content_type: str = "application/json",
        not_found_ok: bool = False,
        params: Mapping[str, str] | None = None,
        retries: int = RETRIES,
        timeout: float | None = None,
        conflict_fails: bool = False,
        accept: str | None = None,
    ) -> Any:
        """One API call. ``conflict_fails``: a 409 raises ``Conflict`` at once (optimistic
        concurrency: the caller decides what a lost race means) instead of being retried."""
        delay = 0.2
        relogged = False
        # a per-call bound, tighter than the session's (never None: that would mean no limit)
        extra: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout else {}
        for attempt in range(retries + 1):
            session = await self._ensure()
            self.requests[method] = self.requests.get(method, 0) + 1
            try:
                async with session.request(
                    method,
                    self._server + path,
                    json=json_body,
                    params=params,
                    headers=_headers(json_body is not None, content_type, accept),
                    **extra,
                ) as resp:
                    if resp.status == 404 and not_found_ok:
                        return None
                    if resp.status == 401 and not relogged:
                        relogged = True
                        await self._ensure(force=True)
                        continue
                    if resp.status < 400:
                        return await resp.json(content_type=None)
                    error = api_error(resp.status, (await resp.text())[:300])
                    if isinstance(error, Conflict) and conflict_fails:
                        raise error
                    if not isinstance(error, Conflict) and resp.status != 429 and resp.status < 500:
                        raise error
                    retry_after = resp.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        delay = max(delay, min(float(retry_after), 10.0))
                    failure: Exception = error
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = exc
            if attempt == retries:
                raise failure
            logger.debug("retrying %s %s after %s", method, path, failure)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
        raise RuntimeError("unreachable")

    # --- the calls ----------------------------------------------------------------------------

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, version: str | None = None
    ) -> Any:
        """Merge-patch the status subresource; None when the object is gone. With
        ``version`` the patch is conditional (``Conflict`` when the object changed)."""
        body: dict[str, Any] = {"status": dict(status)}
        if version:
            body["metadata"] = {"resourceVersion": version}
        return await self._request(
            "PATCH",
            connection_path(namespace, name, "status"),
            json_body=body,
            content_type=MERGE_PATCH,
            not_found_ok=True,
            conflict_fails=version is not None,
        )

    async def get_secret_data(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret's ``data``; None when it does not exist (or its name could not exist);
        ``Forbidden`` when the operator may not read Secrets there."""
        if not (is_dns_subdomain(namespace) and is_dns_subdomain(name)):
            return None  # never a path: "../other-namespace/secrets/x" must not go anywhere
        body = await self._request(
            "GET", object_path("v1", "secrets", namespace, name), not_found_ok=True
        )
        if body is None:
            return None
        data = body.get("data") if isinstance(body, dict) else None
        return dict(data) if isinstance(data, dict) else {}

    async def post_event(
        self,
        namespace: str,
        name: str,
        uid: str | None,
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": name,
            "namespace": namespace,
        }
        if uid:
            involved["uid"] = uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": involved,
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._request("POST", object_path("v1", "events", namespace), json_body=body)

    # --- generic object calls (leader election, admission, finalizers) ----------------------------

    async def get_object(self, path: str, *, timeout: Secs = None, retries: int = RETRIES) -> Any:
        """The object at ``path`` (see ``object_path``); None when it does not exist."""
        return await self._request("GET", path, not_found_ok=True, timeout=timeout, retries=retries)

    async def list_objects(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        timeout: Secs = None,
        retries: int = RETRIES,
    ) -> dict[str, Any]:
        """A list response (``kind``, ``items``) of the collection at ``path``."""
        params = {"labelSelector": label_selector} if label_selector else None
        body = await self._request("GET", path, params=params, timeout=timeout, retries=retries)
        return body if isinstance(body, dict) else {}

    async def create_object(
        self, path: str, body: Body, *, timeout: Secs = None, retries: int = RETRIES
    ) -> Any:
        """POST to a collection; ``Conflict`` when the name is taken."""
        return await self._write("POST", path, dict(body), timeout=timeout, retries=retries)

    async def replace_object(
        self, path: str, body: Body, *, timeout: Secs = None, retries: int = RETRIES
    ) -> Any:
        """PUT; with ``metadata.resourceVersion`` in ``body`` a stale write raises ``Conflict``."""
        return await self._write("PUT", path, dict(body), timeout=timeout, retries=retries)

    async def patch_object(
        self,
        path: str,
        patch: Any,
        *,
        content_type: str = MERGE_PATCH,
        timeout: Secs = None,
        retries: int = RETRIES,
    ) -> Any:
        """PATCH; None when the object is gone, ``Conflict`` when a precondition failed."""
        return await self._write(
            "PATCH", path, patch, content_type, not_found_ok=True, timeout=timeout, retries=retries
        )

    async def _write(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str = "application/json",
        **options: Any,
    ) -> Any:
        """A write whose lost race (409) is the caller's to decide, never retried here."""
        return await self._request(
            method, path, json_body=body, content_type=content_type, conflict_fails=True, **options
        )


def _headers(has_body: bool, content_type: str, accept: str | None) -> dict[str, str] | None:
    headers = {"Content-Type": content_type} if has_body else {}
    if accept:
        headers["Accept"] = accept
    return headers or None


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
