"""Deletion protection without the webhook: a finalizer held only while a connection has users.

An object of one of the in-use kinds (``--in-use-kinds``, default Deployments, StatefulSets,
DaemonSets, Jobs, CronJobs) labelled ``warehouse-operator.io/connection: <name>`` uses the
connection ``<name>`` of its namespace. The operator adds the finalizer
``warehouse-operator.io/in-use`` to a connection while it has users and removes it as soon as it
has none, so an unused connection never waits for the operator to be deleted. A connection
being deleted while still in use gets one status patch: a ``DeletionBlocked`` condition naming
the users, and one Warning event. The annotation ``warehouse-operator.io/allow-delete-in-use:
"true"`` turns the protection off for that connection.

The decisions are pure functions (``plan``); ``InUseController`` applies them, one connection at
a time: finalizers with the ``resourceVersion`` it last saw as a precondition (a conflict means a
newer version is on its way through the watch, and the decision is made again then), the
``DeletionBlocked`` condition through the status writer shared with the scheduler, which owns
the rest of the status. Who uses what
is known from the watches (``UsersIndex``: every event of the in-use kinds, so that a removed
label is seen too); before protection is taken away or a held deletion is reported, the users
are read from the API (``list_users``), so a watch that has not listed everything yet, or
missed an event, never lets a connection in use be deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from warehouse_operator.kube.errors import Conflict, NotFound, describe
from warehouse_operator.kube.paths import connection_path, object_path
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.models import ALLOW_DELETE_IN_USE_ANNOTATION, CONNECTION_LABEL, GROUP
from warehouse_operator.status import condition
from warehouse_operator.statuswriter import Owner, StatusWriter

logger = logging.getLogger(__name__)

FINALIZER = f"{GROUP}/in-use"
BLOCKED_CONDITION = "DeletionBlocked"
BLOCKED_REASON = "InUse"
USERS_SHOWN = 10
OWNER = Owner("in-use", frozenset({BLOCKED_CONDITION}))  # of the status: this condition only

Key = tuple[str, str]  # (namespace, connection name)


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InUseKind:
    """One kind whose labelled objects use connections: ``group/version/plural`` (``v1/pods`` for the core group)."""

    group: str
    version: str
    plural: str

    @classmethod
    def parse(cls, text: str) -> InUseKind:
        parts = [p.strip() for p in text.strip().split("/")]
        if len(parts) == 2:
            parts.insert(0, "")
        if len(parts) != 3 or not all(parts[1:]) or any(" " in p for p in parts):
            raise ValueError(f"not group/version/plural: {text!r}")
        return cls(parts[0], parts[1], parts[2].lower())

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        return f"{self.group_version}/{self.plural}"


def parse_kinds(texts: Iterable[str]) -> tuple[InUseKind, ...]:
    """The in-use kinds from the configuration, without duplicates; ValueError on a malformed one."""
    kinds: list[InUseKind] = []
    for text in texts:
        if text.strip():
            kind = InUseKind.parse(text)
            if kind not in kinds:
                kinds.append(kind)
    return tuple(kinds)


# --- users ---------------------------------------------------------------------------------------


def _metadata(body: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = body.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def connection_of(body: Mapping[str, Any]) -> str | None:
    """The connection an object says it uses (its label), if any."""
    labels = _metadata(body).get("labels")
    value = labels.get(CONNECTION_LABEL) if isinstance(labels, Mapping) else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def user_ref(body: Mapping[str, Any], kind: str | None = None) -> str:
    """How a user is named in messages: ``deployment/api``, like ``kubectl get`` prints it."""
    kind = kind or body.get("kind") or "object"
    return f"{str(kind).lower()}/{_metadata(body).get('name', '')}"


def index_entry(body: Mapping[str, Any]) -> dict[Key, str]:
    """What one in-use object contributes to the index: {(namespace, connection): user}."""
    name = connection_of(body)
    namespace = _metadata(body).get("namespace")
    if name is None or not isinstance(namespace, str):
        return {}
    return {(namespace, name): user_ref(body)}


def users_in_list(listing: Mapping[str, Any]) -> list[str]:
    """Users in a LIST response (items of a list carry no ``kind``: the list's own names it)."""
    list_kind = str(listing.get("kind") or "")
    kind = list_kind.removesuffix("List") if list_kind.endswith("List") else None
    items = listing.get("items")
    return [
        user_ref(item, item.get("kind") or kind)
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, Mapping) and _metadata(item).get("deletionTimestamp") is None
    ]


def format_users(users: Iterable[str], limit: int = USERS_SHOWN) -> str:
    """``deployment/api, job/etl`` (sorted, without duplicates; long lists end in "and N more")."""
    unique = sorted(set(users))
    shown = ", ".join(unique[:limit])
    return shown if len(unique) <= limit else f"{shown} and {len(unique) - limit} more"


def blocked_message(users: Iterable[str]) -> str:
    return (
        f"deletion waits until nothing uses this connection: {format_users(users)} "
        f"(remove their {CONNECTION_LABEL} label, delete them, or annotate the connection "
        f'{ALLOW_DELETE_IN_USE_ANNOTATION}="true")'
    )


class UsersIndex:
    """(namespace, connection) -> users, kept from every event of the in-use kinds."""

    def __init__(self) -> None:
        self._by_object: dict[tuple[str, str, str], tuple[Key, str]] = {}
        self._by_connection: dict[Key, set[str]] = {}

    def update(self, kind: InUseKind, body: Mapping[str, Any], event_type: str | None) -> list[Key]:
        """Take one event in; the connections whose users changed."""
        meta = _metadata(body)
        namespace = str(meta.get("namespace") or "")
        obj = (str(kind), namespace, str(meta.get("name") or ""))
        name = None if event_type == "DELETED" else connection_of(body)
        now = ((namespace, name), user_ref(body)) if name else None
        before = self._by_object.get(obj)
        if now == before:
            return []  # an update that does not change who uses what (most of them)
        if before is not None:
            users = self._by_connection.get(before[0])
            if users is not None:
                users.discard(before[1])
                if not users:
                    del self._by_connection[before[0]]
        if now is None:
            self._by_object.pop(obj, None)
        else:
            self._by_object[obj] = now
            self._by_connection.setdefault(now[0], set()).add(now[1])
        return [entry[0] for entry in (before, now) if entry is not None]

    def users(self, namespace: str, name: str) -> list[str]:
        return sorted(self._by_connection.get((namespace, name), ()))


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


# --- decisions -----------------------------------------------------------------------------------


def allows_delete_in_use(body_or_annotations: Mapping[str, Any] | None) -> bool:
    """The override annotation, on an object (or its annotations)."""
    if body_or_annotations is None:
        return False
    annotations: Any = body_or_annotations
    if "metadata" in body_or_annotations:
        annotations = _metadata(body_or_annotations).get("annotations")
    value = (
        annotations.get(ALLOW_DELETE_IN_USE_ANNOTATION)
        if isinstance(annotations, Mapping)
        else None
    )
    return isinstance(value, str) and value.strip().lower() == "true"


@dataclass(frozen=True)
class ConnectionView:
    """What the in-use logic needs of a WarehouseConnection."""

    namespace: str
    name: str
    uid: str | None
    resource_version: str | None
    generation: int | None
    finalizers: tuple[str, ...]
    deleting: bool
    allow_delete: bool
    conditions: tuple[Mapping[str, Any], ...]

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def protected(self) -> bool:
        return FINALIZER in self.finalizers

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ConnectionView:
        meta = _metadata(body)
        finalizers = meta.get("finalizers")
        status = body.get("status")
        conditions = status.get("conditions") if isinstance(status, Mapping) else None
        generation = meta.get("generation")
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=uid if isinstance(uid, str) else None,
            resource_version=version if isinstance(version, str) else None,
            generation=generation if isinstance(generation, int) else None,
            finalizers=tuple(f for f in finalizers if isinstance(f, str))
            if isinstance(finalizers, list)
            else (),
            deleting=meta.get("deletionTimestamp") is not None,
            allow_delete=allows_delete_in_use(body),
            conditions=tuple(c for c in conditions if isinstance(c, Mapping))
            if isinstance(conditions, list)
            else (),
        )


@dataclass(frozen=True)
class Plan:
    """What to change: the new finalizer list (None: leave it) and/or the blocked message."""

    finalizers: tuple[str, ...] | None = None
    blocked: str | None = None

    @property
    def empty(self) -> bool:
        return self.finalizers is None and self.blocked is None


def plan(view: ConnectionView, users: Sequence[str]) -> Plan:
    """The finalizer follows the users; a deletion held by users is reported once."""
    wanted = bool(users) and not view.allow_delete
    if wanted and not view.protected and not view.deleting:
        # (the API server refuses new finalizers on an object being deleted)
        return Plan(finalizers=(*view.finalizers, FINALIZER))
    if not wanted and view.protected:
        return Plan(finalizers=tuple(f for f in view.finalizers if f != FINALIZER))
    if wanted and view.protected and view.deleting:
        message = blocked_message(users)
        current = next((c for c in view.conditions if c.get("type") == BLOCKED_CONDITION), None)
        if current is None or current.get("status") != "True" or current.get("message") != message:
            return Plan(blocked=message)
    return Plan()


def blocked_conditions(view: ConnectionView, message: str, now: datetime) -> list[dict[str, Any]]:
    """The condition list with ``DeletionBlocked`` set; other conditions are kept as they are."""
    others = [dict(c) for c in view.conditions if c.get("type") != BLOCKED_CONDITION]
    return [
        *others,
        condition(
            view.conditions, BLOCKED_CONDITION, True, BLOCKED_REASON, message, view.generation, now
        ),
    ]


# --- applying the decisions ------------------------------------------------------------------------


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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
