"""Admission decisions: delete-in-use protection (409) and one connection per namespace (403).

- DELETE of a WarehouseConnection that objects of the in-use kinds in its namespace use (label
  ``warehouse-operator.io/connection: <name>``) is refused with ``status.code: 409`` (reason
  ``Conflict``) and a message naming them (``deployment/api, job/etl``), unless the connection
  carries ``warehouse-operator.io/allow-delete-in-use: "true"`` or its namespace is being
  deleted (namespace deletion removes the users too and must never hang on this webhook);
- CREATE, with ``--one-connection-per-namespace``, is refused (403 Forbidden, like an exceeded
  quota) when the namespace already has a connection that is not being deleted.

The users are read from the API (a LIST per kind with a label selector) at the moment of the
request, so the answer never depends on a warm cache; when those reads fail the request is
refused (500), which the override annotation always gets around.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from warehouse_operator.inuse import (
    InUseKind,
    allows_delete_in_use,
    format_users,
    list_users,
)
from warehouse_operator.kube.errors import describe
from warehouse_operator.kube.paths import CONNECTIONS, connection_path, object_path
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.metrics import ADMISSION_REVIEWS
from warehouse_operator.models import (
    ALLOW_DELETE_IN_USE_ANNOTATION,
    CONNECTION_LABEL,
    GROUP,
    KIND,
    PLURAL,
)

logger = logging.getLogger(__name__)

ADMISSION_API_VERSION = "admission.k8s.io/v1"
LOOKUP_TIMEOUT = 8.0  # under the API server's default webhook timeout (10 s)


# --- decisions (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: int = 200
    reason: str = ""
    message: str = ""

    @property
    def outcome(self) -> str:
        return "allowed" if self.allowed else "error" if self.code >= 500 else "denied"


ALLOW = Decision(True)


def decide_delete(
    connection: Mapping[str, Any], users: Sequence[str], namespace_terminating: bool = False
) -> Decision:
    """DELETE of a connection: refused (409) while something uses it, unless overridden."""
    if not users or namespace_terminating or allows_delete_in_use(connection):
        return ALLOW
    meta = connection.get("metadata")
    name = meta.get("name", "") if isinstance(meta, Mapping) else ""
    return Decision(
        False,
        409,
        "Conflict",
        f"{KIND} {name!r} is in use by {format_users(users)}: remove their {CONNECTION_LABEL} "
        f"label or delete them first, or annotate the connection "
        f'{ALLOW_DELETE_IN_USE_ANNOTATION}="true" to delete it anyway',
    )


def decide_create(
    connection: Mapping[str, Any], others: Sequence[Mapping[str, Any]], one_per_namespace: bool
) -> Decision:
    """CREATE: with the one-per-namespace policy, refused (403) when another one exists."""
    if not one_per_namespace:
        return ALLOW
    meta = connection.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    existing = sorted(
        str(o["metadata"].get("name"))
        for o in others
        if isinstance(o.get("metadata"), Mapping)
        and o["metadata"].get("name") != meta.get("name")
        and o["metadata"].get("deletionTimestamp") is None
    )
    if not existing:
        return ALLOW
    return Decision(
        False,
        403,
        "Forbidden",
        f"namespace {meta.get('namespace', '')!r} already has a {KIND} ({', '.join(existing)}); "
        "this operator allows one per namespace",
    )


def review_response(uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview answer for one request."""
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = {
            "status": "Failure",
            "code": decision.code,
            "reason": decision.reason,
            "message": decision.message,
        }
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}


def _is_connection(request: Mapping[str, Any]) -> bool:
    resource = request.get("resource")
    kind = request.get("kind")
    if isinstance(resource, Mapping):
        return resource.get("group") == GROUP and resource.get("resource") == PLURAL
    return isinstance(kind, Mapping) and kind.get("group") == GROUP and kind.get("kind") == KIND


# --- lookups (the API) ---------------------------------------------------------------------------


class Admission:
    """Answers AdmissionReviews, reading what it needs from the API."""

    def __init__(
        self,
        api: KubeApi,
        *,
        in_use_kinds: Sequence[InUseKind],
        one_connection_per_namespace: bool,
    ) -> None:
        self.api = api
        self.in_use_kinds = tuple(in_use_kinds)
        self.one_connection_per_namespace = one_connection_per_namespace

    async def users_of(self, namespace: str, name: str) -> list[str]:
        return await list_users(self.api, self.in_use_kinds, namespace, name, LOOKUP_TIMEOUT)

    async def namespace_terminating(self, namespace: str) -> bool:
        """Whether the namespace is being deleted; False when that cannot be read (the
        refusal then stands: the users are known)."""
        try:
            body = await self.api.get_object(
                object_path("v1", "namespaces", name=namespace), timeout=LOOKUP_TIMEOUT, retries=1
            )
        except Exception as exc:
            logger.debug("namespace %s could not be read: %s", namespace, type(exc).__name__)
            return False
        if not isinstance(body, Mapping):
            return True  # gone already
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        return bool(meta.get("deletionTimestamp")) or status.get("phase") == "Terminating"

    async def decide(self, request: Mapping[str, Any]) -> Decision:
        if not _is_connection(request):
            return ALLOW
        operation = request.get("operation")
        namespace = str(request.get("namespace") or "")
        name = str(request.get("name") or "")
        if operation == "DELETE":
            old = request.get("oldObject")
            if not isinstance(old, Mapping):
                old = await self.api.get_object(
                    connection_path(namespace, name),
                    timeout=LOOKUP_TIMEOUT,
                    retries=1,
                )
                if not isinstance(old, Mapping):
                    return ALLOW  # nothing left to protect
            if allows_delete_in_use(old):
                return ALLOW  # no API call at all: the override works even when reads fail
            users = await self.users_of(namespace, name)
            if users and await self.namespace_terminating(namespace):
                return ALLOW
            return decide_delete(old, users)
        if operation == "CREATE" and self.one_connection_per_namespace:
            obj = request.get("object")
            obj = dict(obj) if isinstance(obj, Mapping) else {}
            meta = dict(obj.get("metadata") or {})
            meta.setdefault("namespace", namespace)
            meta.setdefault("name", name)
            obj["metadata"] = meta
            listing = await self.api.list_objects(
                object_path(CONNECTIONS, PLURAL, namespace),
                timeout=LOOKUP_TIMEOUT,
                retries=1,
            )
            items = listing.get("items")
            others = [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []
            return decide_create(obj, others, True)
        return ALLOW

    async def review(self, review: Mapping[str, Any]) -> dict[str, Any]:
        """One AdmissionReview in, its answer out. ValueError when it is not one."""
        request = review.get("request")
        if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
            raise ValueError("not an AdmissionReview request")
        operation = str(request.get("operation") or "")
        try:
            decision = await self.decide(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            cause = describe(exc)
            logger.warning(
                "admission of %s %s/%s failed: %s",
                operation,
                request.get("namespace"),
                request.get("name"),
                cause,
            )
            decision = Decision(
                False,
                500,
                "InternalError",
                f"could not check whether the {KIND} is in use ({cause}); try again, or annotate "
                f'it {ALLOW_DELETE_IN_USE_ANNOTATION}="true" to delete it anyway',
            )
        ADMISSION_REVIEWS.labels(operation or "UNKNOWN", decision.outcome).inc()
        if not decision.allowed:
            logger.info(
                "refused %s of %s/%s: %s",
                operation,
                request.get("namespace"),
                request.get("name"),
                decision.message,
            )
        return review_response(request["uid"], decision)
