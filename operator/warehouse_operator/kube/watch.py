"""The metadata-only watch of Secrets.

Secrets are watched as metadata only: the operator never receives, parses or holds the data of
Secrets it does not use (Helm keeps ~100 KB release Secrets in every namespace it touches).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable

import aiohttp

from warehouse_operator.kube.client import KubeClient
from warehouse_operator.kube.errors import api_error, describe
from warehouse_operator.kube.paths import object_path

logger = logging.getLogger(__name__)

PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
PARTIAL_ONE = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
LIST_PAGE = 500
WATCH_SECONDS = 290


class SecretMetadataWatch:
    """List and watch Secrets' metadata (name, namespace, resourceVersion) and report changes.

    ``on_list(keys)`` is called after each complete listing with the (namespace, name,
    resourceVersion) of every Secret; ``on_event(type, namespace, name, resourceVersion)`` for
    each ADDED / MODIFIED / DELETED after it. A watch that ends is resumed from the last
    resourceVersion; one the server no longer holds (410 Gone) is replaced by a new listing.
    """

    def __init__(
        self,
        client: KubeClient,
        namespace: str | None,
        on_list: Callable[[list[tuple[str, str, str]]], None],
        on_event: Callable[[str, str, str, str], None],
    ) -> None:
        self.client = client
        self.path = object_path("v1", "secrets", namespace)
        self.on_list = on_list
        self.on_event = on_event
        self.listings = 0

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                version: str | None = await self._list()
                delay = 1.0
                while version is not None:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API is away: try again, never give up
                logger.warning(
                    "watching Secrets at %s failed (%s); retrying", self.path, describe(exc)
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 30.0)

    async def _list(self) -> str:
        found: list[tuple[str, str, str]] = []
        token = ""
        while True:
            params = {"limit": str(LIST_PAGE)} | ({"continue": token} if token else {})
            body = await self.client._request("GET", self.path, params=params, accept=PARTIAL_LIST)
            for item in body.get("items") or []:
                meta = item.get("metadata") or {}
                found.append(
                    (
                        str(meta.get("namespace", "")),
                        str(meta.get("name", "")),
                        str(meta.get("resourceVersion", "")),
                    )
                )
            meta = body.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                self.listings += 1
                self.on_list(found)
                return str(meta.get("resourceVersion", ""))

    async def _watch(self, version: str) -> str | None:
        """Follow one watch request; the version to resume from, or None to list again."""
        session = await self.client._ensure()
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
            "resourceVersion": version,
        }
        timeout = aiohttp.ClientTimeout(total=WATCH_SECONDS + 30, sock_read=WATCH_SECONDS + 30)
        async with session.get(
            self.client._server + self.path,
            params=params,
            headers={"Accept": PARTIAL_ONE},
            timeout=timeout,
        ) as resp:
            if resp.status == 410:
                return None
            if resp.status >= 400:
                raise api_error(resp.status, (await resp.text())[:300])
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                meta = obj.get("metadata") or {}
                if kind == "ERROR":
                    return None if obj.get("code") == 410 else version
                version = str(meta.get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.on_event(
                        kind, str(meta.get("namespace", "")), str(meta.get("name", "")), version
                    )
        return version
