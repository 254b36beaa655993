"""The one writer of a connection's status: each part has one owner, and no write drops another's.

An ``Owner`` owns status fields and condition types: the scheduler owns every field but
``conditions`` and the conditions ``Ready``/``Reconciling``/``Stalled``; the in-use controller
owns the ``DeletionBlocked`` condition only. ``StatusWriter.write`` merges an owner's part into
the status as last known and writes it with that status's ``resourceVersion`` as a precondition;
when someone else wrote in between (``Conflict``), it reads the object, merges again and retries
(a bounded number of times). Other owners' conditions are written back as they are.

The last known status and version come from the writer's own write responses and from the
watch (``observe``), without a read: steady state costs one PATCH per write. A watch event that
echoes one of our own writes, or is older than what we know, is skipped, so a late echo never
takes the cache back; any other event means someone else changed the object and is adopted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from warehouse_operator.kube.errors import Conflict
from warehouse_operator.kube.paths import connection_path
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.status import merge_patch

Key = tuple[str, str]  # (namespace, name)

ATTEMPTS = 4
_OWN_VERSIONS = 16  # how many of our own writes' versions are remembered per object


@dataclass(frozen=True)
class Owner:
    """What one writer owns: condition types, and (``fields``) every field but ``conditions``."""

    name: str
    conditions: frozenset[str]
    fields: bool = False


@dataclass(slots=True)
class _Known:
    uid: str | None
    version: str | None
    status: dict[str, Any]
    ours: tuple[str, ...] = ()  # a tuple, not a deque: an empty deque alone is 760 bytes


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = body.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _not_newer(version: str, than: str | None) -> bool:
    """resourceVersions are opaque, but the API server's are integers: compare those."""
    return than is not None and version.isdigit() and than.isdigit() and int(version) <= int(than)


def _conditions(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    conds = status.get("conditions")
    return [c for c in conds if isinstance(c, Mapping)] if isinstance(conds, list) else []


def merge(known: Mapping[str, Any], owner: Owner, part: Mapping[str, Any]) -> dict[str, Any]:
    """``known`` with the owner's part of it replaced by ``part``. Conditions keep their place;
    the owner's new condition types are added at the end, in ``part``'s order."""
    source = part if owner.fields else known
    merged = {k: v for k, v in source.items() if k != "conditions"}
    mine = {c.get("type"): dict(c) for c in _conditions(part) if c.get("type") in owner.conditions}
    conditions: list[dict[str, Any]] = []
    for cond in _conditions(known):
        type_ = cond.get("type")
        if type_ not in owner.conditions:
            conditions.append(dict(cond))
        elif type_ in mine:
            conditions.append(mine.pop(type_))
    conditions.extend(mine.values())
    if conditions:
        merged["conditions"] = conditions
    return merged


def _patch(known: Mapping[str, Any], merged: Mapping[str, Any], owner: Owner) -> dict[str, Any]:
    """A merge patch turning ``known`` into ``merged`` (a removed key is None). An owner of
    conditions only sends the conditions."""
    patch = merge_patch(known, merged)
    if not owner.fields:
        patch = {"conditions": patch.get("conditions")}
    return patch


class StatusWriter:
    def __init__(self, api: KubeApi, *, attempts: int = ATTEMPTS) -> None:
        self.api = api
        self.attempts = attempts
        self._known: dict[Key, _Known] = {}
        self.writes = 0
        self.conflicts = 0

    def status(self, key: Key) -> dict[str, Any]:
        """The status as last known (empty when none is known)."""
        known = self._known.get(key)
        return known.status if known is not None else {}

    def version(self, key: Key) -> str | None:
        known = self._known.get(key)
        return known.version if known is not None else None

    def forget(self, key: Key) -> None:
        self._known.pop(key, None)

    def observe(
        self, body: Mapping[str, Any], event_type: str | None = None, *, trusted: bool = False
    ) -> None:
        """A watch event (or a response) for a connection. An event without a resourceVersion
        cannot be told from an echo of our own: its status is taken only when ``trusted``."""
        meta = _meta(body)
        key: Key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event_type == "DELETED":
            self.forget(key)
            return
        uid, version = _str(meta.get("uid")), _str(meta.get("resourceVersion"))
        known = self._known.get(key)
        if known is not None and uid is not None and known.uid not in (None, uid):
            known = None  # deleted and created again under the same name
        if known is not None:
            if version is None and not trusted:
                return
            if version is not None and (
                version in known.ours or _not_newer(version, known.version)
            ):
                return  # our own write's echo, or older than what we know
        status = body.get("status")
        status = dict(status) if isinstance(status, Mapping) else {}
        if known is None:
            self._known[key] = _Known(uid, version, status)
            return
        known.uid, known.status = uid or known.uid, status
        known.version = version or known.version

    async def write(self, key: Key, owner: Owner, part: Mapping[str, Any]) -> dict[str, Any] | None:
        """Write the owner's ``part`` of the status; the status as written, or None when the
        object is gone. Raises ``Conflict`` when every attempt lost a race, and what the API
        raises otherwise."""
        namespace, name = key
        for attempt in range(self.attempts):
            known = self._known.setdefault(key, _Known(None, None, {}))
            merged = merge(known.status, owner, part)
            try:
                response = await self.api.patch_status(
                    namespace,
                    name,
                    _patch(known.status, merged, owner),
                    version=known.version,
                )
            except Conflict:
                self.conflicts += 1
                if attempt + 1 == self.attempts:
                    raise
                current = await self.api.get_object(connection_path(namespace, name))
                if not isinstance(current, Mapping):
                    self.forget(key)
                    return None
                self.observe(current, trusted=True)
                continue
            if response is None:
                self.forget(key)
                return None
            self.writes += 1
            return self._written(
                key, known, merged, response, conditional=known.version is not None
            )
        raise AssertionError("unreachable")

    def _written(
        self, key: Key, known: _Known, merged: dict[str, Any], response: Any, *, conditional: bool
    ) -> dict[str, Any]:
        meta = _meta(response) if isinstance(response, Mapping) else {}
        version = _str(meta.get("resourceVersion"))
        status = response.get("status") if isinstance(response, Mapping) else None
        if not conditional and version is not None and isinstance(status, Mapping):
            # written without knowing the object: the server's status may hold other owners'
            # conditions. After a conditional write the server's status is ``merged`` itself,
            # and keeping ours keeps its strings shared instead of a parsed copy per connection
            # (the bench's memory scenario read 322.5 MB at 10,000 connections with the copy, a
            # deque per object and no slots; 263.9 and 286.9 MB without them)
            merged = dict(status)
        if version is not None:
            known.ours = (*known.ours[1 - _OWN_VERSIONS :], version)
            if _not_newer(version, known.version):
                return merged  # a newer event arrived while we wrote: keep it
        if self._known.get(key) is not known:
            return merged  # forgotten, or deleted and created again, meanwhile
        known.version = version if version is not None else known.version
        known.status = merged
        known.uid = known.uid or _str(meta.get("uid"))
        return merged
