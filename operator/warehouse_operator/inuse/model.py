"""The in-use decisions, pure: who uses a connection, and what its finalizer and status should say.

The in-use kinds, the users of each connection as the watches report them (``UsersIndex``),
the messages, and ``plan``: from a connection (``ConnectionView``) and its users, the new
finalizer list and/or the ``DeletionBlocked`` message. Nothing here talks to the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from warehouse_operator.models import ALLOW_DELETE_IN_USE_ANNOTATION, CONNECTION_LABEL, GROUP
from warehouse_operator.status import condition

FINALIZER = f"{GROUP}/in-use"
BLOCKED_CONDITION = "DeletionBlocked"
BLOCKED_REASON = "InUse"
USERS_SHOWN = 10


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
