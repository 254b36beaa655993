"""A recording stand-in for the Kubernetes API (``kube.KubeApi``), for scheduler and status tests.

It keeps each connection's status with a resourceVersion (conditional writes to a changed
object raise ``Conflict``), serves Secrets' data, and records every call. Objects named in
``gone`` answer as deleted objects do (None). ``write_as_other`` plays another writer.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from warehouse_operator.kube.errors import Conflict

Key = tuple[str, str]


@dataclass
class Patch:
    namespace: str
    name: str
    status: dict[str, Any]
    at: float
    resource_version: str | None = None  # the precondition it was sent with

    @property
    def pending(self) -> bool:
        return self.status.get("phase") == "Pending"


@dataclass
class PostedEvent:
    namespace: str
    name: str
    type: str
    reason: str
    message: str
    at: float


def _merge(status: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(status)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass
class RecordingApi:
    secrets: dict[Key, dict[str, Any]] = field(default_factory=dict)
    gone: set[Key] = field(default_factory=set)
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    patches: list[Patch] = field(default_factory=list)
    events: list[PostedEvent] = field(default_factory=list)
    secret_reads: list[Key] = field(default_factory=list)
    object_reads: list[str] = field(default_factory=list)
    conflicts: int = 0
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    # --- the port -----------------------------------------------------------------------------

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, version: str | None = None
    ) -> Any:
        key = (namespace, name)
        if key in self.gone:
            return None
        obj = self._object(key)
        if version is not None and version != obj["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict(409, "the object has been modified")
        self.patches.append(Patch(namespace, name, dict(status), time.monotonic(), version))
        self._store(key, _merge(obj.get("status") or {}, status))
        return copy.deepcopy(self.objects[key])

    async def get_object(self, path: str, *, timeout: float | None = None, retries: int = 0) -> Any:
        self.object_reads.append(path)
        parts = path.strip("/").split("/")
        # .../namespaces/NS/<plural>/NAME, or .../<plural>/NAME for an object without a namespace
        namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""
        key = (namespace, parts[-1])
        if key in self.gone or key not in self.objects:
            return None
        return copy.deepcopy(self.objects[key])

    async def get_secret_data(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.secret_reads.append((namespace, name))
        data = self.secrets.get((namespace, name))
        return dict(data) if data is not None else None

    async def post_event(
        self, namespace: str, name: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        self.events.append(PostedEvent(namespace, name, type_, reason, message, time.monotonic()))

    # --- playing the rest of the cluster ----------------------------------------------------------

    def _object(self, key: Key) -> dict[str, Any]:
        if key not in self.objects:
            self._store(key, {})
        return self.objects[key]

    def _store(self, key: Key, status: dict[str, Any]) -> None:
        old = self.objects.get(key) or {"metadata": {"namespace": key[0], "name": key[1]}}
        meta = {**old["metadata"], "resourceVersion": str(next(self._versions))}
        self.objects[key] = {**old, "metadata": meta, "status": status}

    def add(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object (a new resourceVersion); the object as stored (its watch event)."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        self.objects[key] = copy.deepcopy(dict(body))
        self._store(key, dict(body.get("status") or {}))
        return copy.deepcopy(self.objects[key])

    def write_as_other(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Another writer merge-patches the status; the object as it is now (a watch event)."""
        key = (namespace, name)
        self._store(key, _merge(self._object(key).get("status") or {}, patch))
        return copy.deepcopy(self.objects[key])

    # --- what happened ----------------------------------------------------------------------------

    @property
    def results(self) -> list[Patch]:
        """Status writes of test results (not the "Pending" of new connections)."""
        return [p for p in self.patches if not p.pending]

    def pending_of(self) -> list[str]:
        return [p.name for p in self.patches if p.pending]

    def patches_of(self, namespace: str, name: str) -> list[Patch]:
        return [p for p in self.patches if (p.namespace, p.name) == (namespace, name)]

    def written(self) -> set[Key]:
        return {(p.namespace, p.name) for p in self.patches}

    def reasons(self, name: str) -> list[str]:
        return [p.status["reason"] for p in self.results if p.name == name]

    def told(self) -> list[tuple[str, str, str]]:
        """Events as (name, type, reason)."""
        return [(e.name, e.type, e.reason) for e in self.events]
