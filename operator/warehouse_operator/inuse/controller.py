"""Applying the in-use decisions through the API, one connection at a time, while this replica leads."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from warehouse_operator.inuse.model import (
    BLOCKED_CONDITION,
    FINALIZER,
    ConnectionView,
    InUseKind,
    Key,
    UsersIndex,
    blocked_conditions,
    format_users,
    plan,
    users_in_list,
)
from warehouse_operator.kube.errors import Conflict, NotFound, describe
from warehouse_operator.kube.paths import connection_path, object_path
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.models import ALLOW_DELETE_IN_USE_ANNOTATION, CONNECTION_LABEL
from warehouse_operator.statuswriter import Owner, StatusWriter
from warehouse_operator.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

OWNER = Owner("in-use", frozenset({BLOCKED_CONDITION}))  # of the status: this condition only


async def list_users(
    api: KubeApi,
    kinds: Sequence[InUseKind],
    namespace: str,
    name: str,
    timeout: float = 8.0,
) -> list[str]:
    """The users of a connection as the API has them now: a LIST per kind, by label."""

    async def one_kind(kind: InUseKind) -> list[str]:
        try:
            listing = await api.list_objects(
                object_path(kind.group_version, kind.plural, namespace),
                label_selector=f"{CONNECTION_LABEL}={name}",
                timeout=timeout,
                retries=1,
            )
        except NotFound:
            return []  # that kind is not served by this cluster
        return users_in_list(listing)

    found = await asyncio.gather(*(one_kind(kind) for kind in kinds))
    return sorted({user for users in found for user in users})


class InUseController:
    """Keeps the in-use finalizer in step with the users; only while this replica leads."""

    def __init__(
        self,
        api: KubeApi,
        kinds: Sequence[InUseKind],
        *,
        status_writer: StatusWriter | None = None,
    ) -> None:
        """``status_writer``: the one the other writers of status use (the scheduler's)."""
        self.api = api
        self.status_writer = status_writer or StatusWriter(api)
        self.kinds = tuple(kinds)
        self.index = UsersIndex()
        self.connections: dict[Key, ConnectionView] = {}
        self._pending: dict[Key, None] = {}  # ordered set
        self._reported: dict[Key, str] = {}  # the blocked message last evented, per connection
        self._wake = asyncio.Event()
        self._leading = False
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self, *, leading: bool) -> None:
        self._task = asyncio.create_task(self._run(), name="whc-in-use")
        if leading:
            self.start_leading()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def start_leading(self) -> None:
        self._leading = True
        for key in self.connections:  # what changed while another replica led
            self._enqueue(key)

    def stop_leading(self) -> None:
        self._leading = False

    # --- what the watches see ----------------------------------------------------------------------

    def observe_connection(self, body: Mapping[str, Any], event_type: str | None) -> None:
        view = ConnectionView.from_body(body)
        self.status_writer.observe(body, event_type)
        if event_type == "DELETED":
            self.connections.pop(view.key, None)
            self._pending.pop(view.key, None)
            self._reported.pop(view.key, None)
            return
        self.connections[view.key] = view
        self._enqueue(view.key)

    def observe_user(
        self, kind: InUseKind, body: Mapping[str, Any], event_type: str | None
    ) -> None:
        """Any event of an in-use kind: recheck the connections whose users it changed."""
        for key in self.index.update(kind, body, event_type):
            if key in self.connections:
                self._enqueue(key)

    @property
    def pending(self) -> int:
        """Connections waiting for a decision."""
        return len(self._pending)

    # --- the work ----------------------------------------------------------------------------------

    def _enqueue(self, key: Key) -> None:
        if self._leading:
            self._pending[key] = None
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and self._leading:
                key = next(iter(self._pending))
                del self._pending[key]
                try:
                    await self.reconcile(key)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.warning(
                        "%s/%s: could not update the in-use finalizer: %s",
                        *key,
                        describe(exc),
                    )
                    await asyncio.sleep(1.0)
                    self._enqueue(key)  # an API outage: try again

    async def reconcile(self, key: Key) -> None:
        view = self.connections.get(key)
        if view is None or not self._leading:
            return
        users = self.index.users(*key)
        todo = plan(view, users)
        if todo.empty:
            return
        releasing = todo.finalizers is not None and FINALIZER not in todo.finalizers
        if (releasing and not view.allow_delete) or todo.blocked is not None:
            # taking protection away, or telling a person who holds a deletion: ask the API
            users = await list_users(self.api, self.kinds, *key)
            todo = plan(view, users)
            if todo.empty:
                return
        path = connection_path(*key)
        precondition = {"resourceVersion": view.resource_version} if view.resource_version else {}
        if todo.finalizers is not None:
            fin_patch = {"metadata": {**precondition, "finalizers": list(todo.finalizers)}}
            response = await self._patch(path, fin_patch)
            if isinstance(response, Mapping):
                self.status_writer.observe(response)  # its version is the latest one
                if self.connections.get(key) is view:
                    self.connections[key] = ConnectionView.from_body(response)
            if response is not None:
                logger.info(
                    "%s/%s: %s the %s finalizer (%s)",
                    *key,
                    "added" if FINALIZER in todo.finalizers else "removed",
                    FINALIZER,
                    f"used by {format_users(users)}"
                    if users and not view.allow_delete
                    else "no users"
                    if not users
                    else f"{ALLOW_DELETE_IN_USE_ANNOTATION} is set",
                )
        if todo.blocked is not None:
            conditions = blocked_conditions(view, todo.blocked, datetime.now(UTC))
            written = await self.status_writer.write(key, OWNER, {"conditions": conditions})
            if written is None:
                return  # gone
            self.writes += 1
            if self.connections.get(key) is view:
                self.connections[key] = dataclasses.replace(
                    view,
                    resource_version=self.status_writer.version(key) or view.resource_version,
                    conditions=tuple(written.get("conditions") or ()),
                )
            if self._reported.get(key) == todo.blocked:
                return  # reported before (written again after a conflict or a restart): no news
            self._reported[key] = todo.blocked
            logger.info("%s/%s: %s", *key, todo.blocked)
            with contextlib.suppress(Exception):  # an event is worth less than the status
                await self.api.post_event(
                    key[0], key[1], view.uid, "Warning", BLOCKED_CONDITION, todo.blocked
                )

    async def _patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        """None when the object is gone or changed meanwhile (its next watch event decides again)."""
        try:
            response = await self.api.patch_object(path, patch)
        except Conflict:
            return None
        self.writes += 1
        return response
