"""The data of the Secrets that connections reference, and only of those.

Secrets are watched as metadata only: for a referenced Secret, a new resourceVersion means one
GET of its data (reads of one Secret never overlap: a change during a read means one more read
after it); the data of Secrets nobody uses never reaches the operator. A Secret's data that
changes (or appears, or goes) is news for the connections that use it: ``on_change`` hears of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from warehouse_operator.kube.errors import Forbidden, describe
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.tasks import cancel_and_wait_all

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
_MISSING = object()


def api_failure(exc: Exception) -> str:
    """A failed Secret read in words fit for a log line or a status message."""
    if isinstance(exc, Forbidden):
        return "the operator is not allowed to read Secrets in this namespace"
    return describe(exc)


class SecretCache:
    def __init__(self, api: KubeApi, on_change: Callable[[Iterable[Key]], None]) -> None:
        self.api = api
        self._on_change = on_change
        self._users: dict[Key, set[Key]] = {}  # (namespace, Secret) -> connections
        self._data: dict[Key, dict[str, Any] | None] = {}
        self._versions: dict[Key, str] = {}  # the last resourceVersion seen
        self._fetching: dict[Key, bool] = {}  # reads under way (True: read again after)
        self._background: set[asyncio.Task[None]] = set()

    def holds(self, skey: Key) -> bool:
        """Whether the data of this Secret is in memory."""
        return skey in self._data

    async def stop(self) -> None:
        await cancel_and_wait_all(self._background)

    # --- who uses what ---------------------------------------------------------------------------

    def ref(self, skey: Key, user: Key) -> None:
        self._users.setdefault(skey, set()).add(user)

    def unref(self, skey: Key, user: Key) -> None:
        users = self._users.get(skey)
        if users is not None:
            users.discard(user)
            if not users:
                del self._users[skey]
                self._data.pop(skey, None)
                self._versions.pop(skey, None)

    def _changed(self, skey: Key) -> None:
        self._on_change(list(self._users.get(skey, ())))

    # --- what the watch sees ---------------------------------------------------------------------

    def observe(self, namespace: str, name: str, data: Mapping[str, Any] | None) -> None:
        """A Secret was listed, added, modified (``data``) or deleted (None)."""
        skey = (namespace, name)
        if not self._users.get(skey):
            return  # nobody uses it: keep nothing of it in memory
        new = dict(data) if data is not None else None
        old = self._data.get(skey, _MISSING)
        self._data[skey] = new
        if old is not _MISSING and old != new:
            self._changed(skey)

    def listed(self, items: list[tuple[str, str, str]]) -> None:
        """A complete listing of Secrets' (namespace, name, resourceVersion)."""
        present = {(ns, name): version for ns, name, version in items}
        for skey in list(self._users):
            if skey in present:
                self._version(skey, present[skey])
            elif self._data.get(skey) is not None:
                self._versions.pop(skey, None)
                self.observe(*skey, None)  # deleted while the watch was away

    def changed(self, kind: str, namespace: str, name: str, version: str) -> None:
        skey = (namespace, name)
        if skey not in self._users:
            return
        if kind == "DELETED":
            self._versions.pop(skey, None)
            self.observe(namespace, name, None)
        else:
            self._version(skey, version)

    def _version(self, skey: Key, version: str) -> None:
        if self._versions.get(skey) == version:
            return
        never_read = skey not in self._data and skey not in self._versions
        self._versions[skey] = version
        if never_read:
            return  # the first test that needs it reads it
        if skey in self._fetching:
            self._fetching[skey] = True  # read it again when the read under way ends
            return
        self._fetching[skey] = False
        task = asyncio.create_task(self._refetch(skey))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refetch(self, skey: Key) -> None:
        try:
            while True:
                self._fetching[skey] = False
                try:
                    data = await self.api.get_secret_data(*skey)
                except Exception as exc:
                    # forget what we had: the next test reads it afresh
                    logger.warning(
                        "Secret %s/%s changed but could not be read: %s", *skey, api_failure(exc)
                    )
                    self._data.pop(skey, None)
                    self._changed(skey)
                    return
                if skey in self._users:
                    self.observe(*skey, data)
                if not self._fetching.get(skey):
                    return
        finally:
            self._fetching.pop(skey, None)

    # --- what a test reads -----------------------------------------------------------------------

    async def get(self, skey: Key) -> dict[str, Any] | None:
        """The Secret's data, from memory when known; raises what the API raises."""
        if skey in self._data:
            return self._data[skey]
        data = await self.api.get_secret_data(*skey)
        if skey in self._users and skey not in self._data:
            self._data[skey] = data
        return data
