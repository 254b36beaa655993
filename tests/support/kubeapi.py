"""A Kubernetes API for end-to-end tests: kmock's stateful emulator, served over HTTP.

``KubeAPIServer`` runs the emulator in its own process on 127.0.0.1 (``python -m
tests.support.kubeapi``), so that it outlives operator restarts and can itself be stopped and
started again on the same port (its objects are kept in a state file across restarts)::

    with KubeAPIServer() as api:
        api.write_kubeconfig(path)   # a kubeconfig that points at it
        api.restart()                # an API server outage; objects survive

kmock 0.8 stores objects as plain JSON and merges patches into them. ``KubeAPIEmulator``
fills in, on top of it, what an operator relies on from a real API server:

- ``metadata.uid``, ``creationTimestamp``, ``namespace`` (from the URL) and ``generateName``;
- a cluster-wide ``resourceVersion`` on every write, on lists and on watch events; watches
  that start from a ``resourceVersion`` replay only what changed after it (kmock replays
  everything), ``sendInitialEvents`` with its closing bookmark, ``timeoutSeconds``;
- ``metadata.generation``: 1 on create, +1 when anything but ``metadata`` and ``status``
  changes (for the resources that have one); the ``status`` subresource: writes to it change
  only ``status``, writes to the main resource never change ``status``;
- no-op patches change nothing and emit no watch event; ``resourceVersion`` preconditions
  (409), JSON-patch ``test`` failures (422); ``PUT`` (replace);
- label selectors (equality and existence) and ``metadata.name``/``metadata.namespace``
  field selectors on lists and watches;
- ``/api/v1/namespaces`` (kmock cannot parse that path): create, get, list, watch, delete;
  deleting a namespace deletes the objects in it;
- custom resources are pruned, defaulted and validated against the schema and CEL rules of
  their CRD (``tests.support.kube_admission``), on create and on every update, status included;
  invalid writes get 422 Invalid;
- HTTP 201 on create; routing cost that stays flat over a long session.

Still missing, compared with a real cluster: admission webhooks, RBAC and authentication,
server-side apply, strategic merge of lists (patches replace lists), garbage collection by
owner references, namespace termination (deletion is immediate), watch events for objects
that stop matching a label selector, ``410 Gone`` for old resourceVersions, CRD versions
conversion, and the CEL cost limits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import copy
import datetime
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml

from tests.support.kube_admission import Rejected, SchemaAdmission
from tests.support.servers import (
    Managed,
    die_with_parent,
    kill_process,
    stop_process,
    wait_for_port,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"

_READY_PREFIX = "KUBEAPI LISTENING "

# group/version/plural -> discovery info. ``generation``: whether the server keeps
# metadata.generation for it (custom resources and workload kinds do; Secrets do not).
RESOURCES: dict[str, dict[str, Any]] = {
    "v1/namespaces": {"kind": "Namespace", "namespaced": False, "subresources": {"status"}},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
    "v1/events": {"kind": "Event", "namespaced": True},
    "v1/pods": {"kind": "Pod", "namespaced": True, "subresources": {"status"}},
    "v1/services": {"kind": "Service", "namespaced": True, "subresources": {"status"}},
    "v1/serviceaccounts": {"kind": "ServiceAccount", "namespaced": True},
    "events.k8s.io/v1/events": {"kind": "Event", "namespaced": True},
    "coordination.k8s.io/v1/leases": {"kind": "Lease", "namespaced": True},
    "apps/v1/deployments": {"kind": "Deployment", "namespaced": True, "subresources": {"status"}},
    "apps/v1/statefulsets": {"kind": "StatefulSet", "namespaced": True, "subresources": {"status"}},
    "apps/v1/daemonsets": {"kind": "DaemonSet", "namespaced": True, "subresources": {"status"}},
    "batch/v1/jobs": {"kind": "Job", "namespaced": True, "subresources": {"status"}},
    "batch/v1/cronjobs": {"kind": "CronJob", "namespaced": True, "subresources": {"status"}},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition",
        "namespaced": False,
        "subresources": {"status"},
    },
    "admissionregistration.k8s.io/v1/validatingwebhookconfigurations": {
        "kind": "ValidatingWebhookConfiguration",
        "namespaced": False,
    },
    "warehouse-operator.io/v1alpha1/warehouseconnections": {
        "kind": "WarehouseConnection",
        "singular": "warehouseconnection",
        "namespaced": True,
        "shortnames": {"whc"},
        "categories": {"warehouse"},
        "subresources": {"status"},
    },
}
_CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
_WITH_GENERATION = {
    "apps/v1/deployments",
    "apps/v1/statefulsets",
    "apps/v1/daemonsets",
    "batch/v1/jobs",
    "batch/v1/cronjobs",
    "apiextensions.k8s.io/v1/customresourcedefinitions",
    "warehouse-operator.io/v1alpha1/warehouseconnections",
}
_NAMESPACES = kmock.resource("", "v1", "namespaces")
_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?:/([^/]+)(?:/(status|finalize))?)?/?$")
_MAX_KEPT_REQUESTS = 1000
_MANAGED_METADATA = ("uid", "creationTimestamp", "name", "namespace", "generation")


def _key(resource: Any) -> str:
    prefix = f"{resource.group}/" if resource.group else ""
    return f"{prefix}{resource.version}/{resource.plural}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rv(obj: Mapping[str, Any]) -> int:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what ``application/merge-patch+json`` means)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``old`` into ``new`` (None deletes a key)."""
    diff: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(before, dict) and isinstance(value, dict):
            sub = _merge_diff(before, value)
            if sub:
                diff[key] = sub
        elif key not in old or before != value:
            diff[key] = copy.deepcopy(value)
    return diff


class _Selector:
    """Label selectors (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``,
    ``a notin (x)``) and the ``metadata.name`` / ``metadata.namespace`` field selectors."""

    def __init__(self, params: Mapping[str, str]) -> None:
        self._labels = self._parse(params.get("labelSelector", ""))
        self._fields = self._parse(params.get("fieldSelector", ""))

    @staticmethod
    def _parse(text: str) -> list[tuple[str, str, frozenset[str]]]:
        terms: list[tuple[str, str, frozenset[str]]] = []
        for raw in re.split(r",(?![^()]*\))", text):
            term = raw.strip()
            if not term:
                continue
            if match := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term):
                values = frozenset(v.strip() for v in match.group(3).split(","))
                terms.append((match.group(1), match.group(2), values))
            elif match := re.fullmatch(r"([^!=\s]+)\s*(==|!=|=)\s*(\S*)", term):
                op = "!=" if match.group(2) == "!=" else "="
                terms.append((match.group(1), op, frozenset({match.group(3)})))
            elif term.startswith("!"):
                terms.append((term[1:], "absent", frozenset()))
            else:
                terms.append((term, "exists", frozenset()))
        return terms

    @staticmethod
    def _test(value: str | None, op: str, values: frozenset[str]) -> bool:
        if op == "exists":
            return value is not None
        if op == "absent":
            return value is None
        if op in ("=", "in"):
            return value in values
        return value not in values  # "!=" and "notin"

    def matches(self, obj: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        for key, op, values in self._labels:
            if not self._test(labels.get(key), op, values):
                return False
        for key, op, values in self._fields:
            if key.startswith("metadata.") and key != "metadata.labels":
                field = metadata.get(key.removeprefix("metadata."))
                if not self._test(field, op, values):
                    return False
        return True


_ROUTING: contextvars.ContextVar[Any] = contextvars.ContextVar("kubeapi_routing", default=None)


class _IndexedStore(dict[Any, Any]):
    """kmock's object store (a dict keyed by ``(resource, namespace, name)``) with an index by
    ``(group, version, plural, namespace, name)``, kept on every insertion and removal."""

    def __init__(self) -> None:
        super().__init__()
        self._by_ident: dict[tuple[Any, ...], Any] = {}

    @staticmethod
    def _ident(resource: Any, namespace: str | None, name: str) -> tuple[Any, ...]:
        return (resource.group, resource.version, resource.plural, namespace, name)

    def find(self, resource: Any, namespace: str | None, name: str) -> Any:
        return self._by_ident.get(self._ident(resource, namespace, name))

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._by_ident[self._ident(*key)] = key

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._by_ident.pop(self._ident(*key), None)

    def pop(self, key: Any, *default: Any) -> Any:
        self._by_ident.pop(self._ident(*key), None)
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self._by_ident.clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self._by_ident.pop(self._ident(*key), None)
        return key, value


@attrs.define(kw_only=True)
class KubeAPIEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server bookkeeping listed in the module docstring."""

    _revision: int = attrs.field(default=0, init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _admission: SchemaAdmission = attrs.field(factory=SchemaAdmission, init=False)

    # kmock finds an object by scanning every stored object for each request, so an API call
    # costs O(stored objects): at 10,000 objects the emulator, not the client, was what a
    # benchmark measured. The store is replaced by one that keeps an index of the same keys
    # (``resource == resource`` in kmock compares exactly group, version and plural), and
    # single-object requests, a create's "does it exist" included, are answered from it.
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        object.__setattr__(self._objects, "_objects", _IndexedStore())  # kmock freezes it

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:
        store = self._objects._objects
        resource = getattr(request, "resource", None)
        if (
            request.name is None
            or resource is None
            or not (strict or request.namespace is not None)
            or not isinstance(store, _IndexedStore)
        ):
            return self._scan(request, strict)
        key = store.find(resource, request.namespace, request.name)
        return [] if key is None else [store[key]]

    def _scan(self, request: Any, strict: bool) -> list[Any]:
        return [
            obj
            for (resource, namespace, name), obj in self._objects.items()
            # kmock's private matcher (name-mangled): the one its own lists use
            if self._KubernetesEmulator__check(  # type: ignore[attr-defined]
                request, resource, namespace, name, strict=strict
            )
        ]

    # -- declarations and state ------------------------------------------------------------------

    def declare(self, resources: Mapping[str, Mapping[str, Any]] = RESOURCES) -> None:
        for name, info in resources.items():
            self.resources[name] = kmock.ResourceInfo(
                kind=info["kind"],
                namespaced=info["namespaced"],
                singular=info.get("singular", info["kind"].lower()),
                shortnames=info.get("shortnames", set()),
                categories=info.get("categories", set()),
                subresources=info.get("subresources", set()),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            )

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def seed(self, resource: str, obj: Mapping[str, Any]) -> None:
        """Store an object as if it had been created through the API (before serving)."""
        res = kmock.resource(resource)
        body = copy.deepcopy(dict(obj))
        metadata = body.setdefault("metadata", {})
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata.setdefault("creationTimestamp", _now())
        metadata["resourceVersion"] = self._next_revision()
        if resource in _WITH_GENERATION:
            metadata.setdefault("generation", 1)
        if resource == _CRDS:
            self._admission.register(body)
        self.objects[res, metadata.get("namespace"), metadata["name"]] = body

    def dump_state(self) -> dict[str, Any]:
        items = []
        for (resource, namespace, name), obj in self.objects.items():
            if not obj.deleted:
                items.append(
                    {
                        "resource": _key(resource),
                        "namespace": namespace,
                        "name": name,
                        "object": obj.raw,
                    }
                )
        return {"revision": self._revision, "objects": items}

    def load_state(self, state: Mapping[str, Any]) -> None:
        for item in state.get("objects", []):
            resource = kmock.resource(item["resource"])
            self.objects[resource, item["namespace"], item["name"]] = item["object"]
            if item["resource"] == _CRDS:
                self._admission.register(item["object"])
        self._revision = max(self._revision, int(state.get("revision", 0)))

    def _is_namespaced(self, resource: Any) -> bool:
        info = RESOURCES.get(_key(resource))
        return bool(info["namespaced"]) if info else True

    def _has_status(self, resource: Any) -> bool:
        info = RESOURCES.get(_key(resource))
        return bool(info and "status" in info.get("subresources", set()))

    # -- routing ------------------------------------------------------------------------------

    # kmock keeps every request it served and routes each new one by filtering all of them:
    # the cost of a request grows with the number served before it. A server that runs for a
    # whole test session keeps only the requests still being routed.

    def _forget_request(self, raw_request: Any) -> None:
        self._requests[:] = [r for r in self._requests if r._raw_request is not raw_request]

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if len(self._requests) > _MAX_KEPT_REQUESTS:  # a safety net; normally they are few
            del self._requests[: -_MAX_KEPT_REQUESTS // 2]
        try:
            return await self._serve_raw(raw_request)
        finally:
            self._forget_request(raw_request)

    async def _serve_raw(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # /api/v1/namespaces[/NAME]: kmock cannot parse these paths, so the request is built here
        match = _NAMESPACE_PATH.match(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        name, subresource = match.group(1), match.group(2)
        params = dict(raw_request.query)
        method = raw_request.method.upper()
        action: Any = None
        if method == "GET":
            action = (
                kmock.action.WATCH
                if params.get("watch") == "true"
                else kmock.action.FETCH
                if name
                else kmock.action.LIST
            )
        elif method == "POST" and not name:
            action = kmock.action.CREATE
        elif method == "PATCH" and name:
            action = kmock.action.UPDATE
        elif method == "DELETE" and name:
            action = kmock.action.DELETE
        request = kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=params,
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=body,
            text=body.decode(errors="replace"),
            action=action,
            resource=_NAMESPACES,
            namespace=None,
            name=name,
            subresource=subresource,
        )
        self._requests.append(request)
        try:
            response: aiohttp.web.StreamResponse = await self._handle(request)
            return response
        except Exception as exc:
            self.errors.append(exc)
            rendered: aiohttp.web.StreamResponse = await self._render_error(exc)
            return rendered

    # -- writes ---------------------------------------------------------------------------------

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        is_write = request.action in (
            kmock.action.CREATE,
            kmock.action.UPDATE,
            kmock.action.DELETE,
        ) or (request.method == kmock.method.PUT and request.name)
        if request.action == kmock.action.LIST and request.params.get("watch", "").lower() in (
            "true",
            "1",
        ):
            # kmock knows only watch=true; clients also send True and 1, which a real server takes
            request = self._substitute(request, attrs.evolve(request, action=kmock.action.WATCH))
        if request.resource is None or not is_write:
            return await self._route(request)
        async with self._write_lock:
            if request.action == kmock.action.CREATE:
                request = self._prepare_create(request)
            elif request.action == kmock.action.DELETE:
                request = await self._prepare_delete(request)
            else:
                prepared = self._prepare_update(request)
                if isinstance(prepared, aiohttp.web.StreamResponse):
                    return prepared
                request = prepared
            response = await self._route(request)
            if (
                request.action == kmock.action.CREATE
                and response.status == 200
                and not response.prepared
            ):
                response.set_status(201)  # what a real server answers, and clients expect
            if request.resource == _NAMESPACES and request.action == kmock.action.DELETE:
                await self._delete_namespace_contents(request.name)
            return response

    # kmock routes a request by asking each reaction's filter whether the request is among the
    # requests it sees, which iterates every request kept (all open watches and every request
    # in flight) for each reaction: a fifth of the emulator's time in a burst. While a request
    # is being routed (a context variable: one per aiohttp task), the root shows only that
    # request, which gives every filter the same answer for it.

    async def _route(self, request: Any) -> aiohttp.web.StreamResponse:
        token = _ROUTING.set(request)
        try:
            response: aiohttp.web.StreamResponse = await super()._handle(request)
            return response
        finally:
            _ROUTING.reset(token)

    def __iter__(self) -> Iterator[Any]:
        routing = _ROUTING.get()
        if routing is not None:
            yield routing
            return
        yield from super().__iter__()

    def _admit(
        self, request: Any, body: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Prune, default and validate a custom resource against its CRD, as a server does."""
        try:
            return self._admission.admit(_key(request.resource), body, old)
        except Rejected as exc:
            raise kmock.KubernetesError(
                status=422, reason="Invalid", message=", ".join(exc.errors)
            ) from None

    def _substitute(self, old: Any, new: Any) -> Any:
        """Put a rewritten request in place of the received one: kmock routes by identity."""
        for index in range(len(self._requests) - 1, -1, -1):
            if self._requests[index] is old:
                self._requests[index] = new
                return new
        self._requests.append(new)
        return new

    def _current(self, request: Any) -> dict[str, Any]:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        raw: dict[str, Any] = copy.deepcopy(self.objects[key].raw)
        return raw

    def _prepare_create(self, request: Any) -> Any:
        if not isinstance(request.data, dict):
            raise kmock.KubernetesError(
                status=400, reason="BadRequest", message="the body must be an object"
            )
        body = copy.deepcopy(request.data)
        metadata = dict(body.get("metadata") or {})
        if not metadata.get("name"):
            prefix = metadata.get("generateName")
            if not prefix:
                raise kmock.KubernetesError(
                    status=422,
                    reason="Invalid",
                    message="metadata.name or metadata.generateName is required",
                )
            alphabet = "bcdfghjklmnpqrstvwxz2456789"
            metadata["name"] = prefix + "".join(secrets.choice(alphabet) for _ in range(5))
        if self._is_namespaced(request.resource):
            namespace = request.namespace or metadata.get("namespace") or "default"
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        for managed in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            metadata.pop(managed, None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = _now()
        metadata["resourceVersion"] = self._next_revision()
        if _key(request.resource) in _WITH_GENERATION:
            metadata["generation"] = 1
        else:
            metadata.pop("generation", None)
        body["metadata"] = metadata
        if self._has_status(request.resource) and request.resource != _NAMESPACES:
            body.pop("status", None)
        if request.resource == _NAMESPACES:
            body["status"] = {"phase": "Active"}
        body = self._admit(request, body, None)
        if _key(request.resource) == _CRDS:
            self._admission.register(body)
        return self._substitute(
            request, attrs.evolve(request, data=body, namespace=metadata.get("namespace"))
        )

    def _prepare_update(self, request: Any) -> Any:
        old = self._current(request)
        is_replace = request.method == kmock.method.PUT
        if request.subresource not in (None, "status"):
            raise kmock.KubernetesNotFoundError()
        if request.subresource == "status" and not self._has_status(request.resource):
            raise kmock.KubernetesNotFoundError()

        # the precondition: a resourceVersion in the body must be the current one
        wanted = (
            ((request.data or {}).get("metadata") or {}).get("resourceVersion")
            if isinstance(request.data, dict)
            else None
        )
        if wanted and str(wanted) != old["metadata"].get("resourceVersion"):
            raise kmock.KubernetesError(
                status=409,
                reason="Conflict",
                message="the object has been modified; please apply your changes to the latest version and try again",
            )

        if is_replace:
            if not isinstance(request.data, dict):
                raise kmock.KubernetesError(
                    status=400, reason="BadRequest", message="the body must be an object"
                )
            new = copy.deepcopy(request.data)
        elif isinstance(request.data, list):
            try:
                new = jsonpatch.apply_patch(old, request.data, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise kmock.KubernetesError(
                    status=422, reason="Invalid", message=str(exc)
                ) from None
        elif isinstance(request.data, dict):
            new = _merge_patch(old, request.data)
        else:
            raise kmock.KubernetesError(
                status=415,
                reason="UnsupportedMediaType",
                message="unsupported patch (server-side apply?)",
            )

        if request.subresource == "status":
            # only the status changes through the status subresource
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif self._has_status(request.resource):
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)

        metadata = dict(new.get("metadata") or {})
        for managed in _MANAGED_METADATA:
            if managed in old["metadata"]:
                metadata[managed] = old["metadata"][managed]
            else:
                metadata.pop(managed, None)
        metadata["resourceVersion"] = old["metadata"].get("resourceVersion")
        if "deletionTimestamp" in old["metadata"]:
            metadata["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        new["metadata"] = metadata
        new.setdefault("apiVersion", old.get("apiVersion"))
        new.setdefault("kind", old.get("kind"))

        new = self._admit(request, new, old)
        metadata = new["metadata"]
        if new == old:  # a no-op write: nothing changes, nobody is notified
            return aiohttp.web.json_response(old)

        def content(body: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in body.items() if k not in ("metadata", "status")}

        if "generation" in metadata and content(new) != content(old):
            metadata["generation"] = int(metadata["generation"]) + 1
        metadata["resourceVersion"] = self._next_revision()
        rewritten = attrs.evolve(
            request,
            action=kmock.action.UPDATE,
            method=kmock.method.PATCH,
            data=_merge_diff(old, new),
        )
        return self._substitute(request, rewritten)

    async def _prepare_delete(self, request: Any) -> Any:
        old = self._current(request)
        metadata = old["metadata"]
        if metadata.get("finalizers") and not metadata.get("deletionTimestamp"):
            # the object stays until its finalizers are gone: mark it, as a real server does
            marked: dict[str, Any] = {
                "deletionTimestamp": _now(),
                "resourceVersion": self._next_revision(),
            }
            if "generation" in metadata:
                marked["generation"] = int(metadata["generation"]) + 1
            mark = attrs.evolve(
                request,
                action=kmock.action.UPDATE,
                method=kmock.method.PATCH,
                subresource=None,
                data={"metadata": marked},
            )
            self._requests.append(mark)
            await super()._handle(mark)
        elif not metadata.get("finalizers"):
            # gone at once: the DELETED event carries a new resourceVersion, as on a real server
            key = (request.resource, request.namespace, request.name)
            self.objects[key]["metadata"] = dict(metadata, resourceVersion=self._next_revision())
        return request

    async def _delete_namespace_contents(self, namespace: str) -> None:
        async with self._lock:
            for (resource, obj_namespace, _name), obj in list(self.objects.items()):
                if obj_namespace == namespace and not obj.deleted:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})

    # -- reads ----------------------------------------------------------------------------------

    def _matching(self, request: Any, selector: _Selector) -> list[dict[str, Any]]:
        found = []
        for (resource, namespace, name), obj in self.objects.items():
            if resource != request.resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            if request.name is not None and name != request.name:
                continue
            raw = obj.raw
            if selector.matches(raw):
                found.append(raw)
        return found

    def _list_kind(self, request: Any) -> tuple[str, str]:
        info = RESOURCES.get(_key(request.resource))
        kind = info["kind"] if info else str(request.resource.plural).capitalize()
        group = request.resource.group
        api_version = (
            f"{group}/{request.resource.version}" if group else str(request.resource.version)
        )
        return kind, api_version

    async def _serve_list(self, request: Any) -> dict[str, Any]:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._matching(request, _Selector(request.params))
            revision = str(self._revision)
        kind, api_version = self._list_kind(request)
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        if _metadata_only(request):
            items = [_partial(o) for o in items]
            kind, api_version = "PartialObjectMetadata", "meta.k8s.io/v1"
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": revision},
            "items": items,
        }

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        yield b""  # send the headers now: the stream is open even if nothing happens
        self._forget_request(request._raw_request)  # routed: long-lived, so out of the way
        params = request.params
        selector = _Selector(params)
        since_text = params.get("resourceVersion", "")
        since = int(since_text) if since_text.isdigit() and since_text != "0" else None
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        bus = self._buses[request.resource]
        async with self._lock:
            marker = await bus.mark()  # before the snapshot is released: nothing falls between
            snapshot = self._matching(request, selector)
            revision = str(self._revision)
        kind, api_version = self._list_kind(request)
        shape = _partial if _metadata_only(request) else (lambda obj: obj)
        try:
            async with asyncio.timeout(timeout):
                for raw in snapshot:
                    if since is None or _rv(raw) > since:
                        yield {"type": "ADDED", "object": shape(raw)}
                if params.get("sendInitialEvents") == "true":
                    yield {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": kind,
                            "apiVersion": api_version,
                            "metadata": {
                                "resourceVersion": revision,
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    }
                async for event in bus.stream(since=marker):
                    raw = event.get("object", {})
                    metadata = raw.get("metadata", {})
                    if (
                        request.namespace is not None
                        and metadata.get("namespace") != request.namespace
                    ):
                        continue
                    if request.name is not None and metadata.get("name") != request.name:
                        continue
                    if selector.matches(raw):
                        yield {**event, "object": shape(raw)} if event.get("object") else event
        except TimeoutError:
            return  # the server-side timeout asked for: end the stream normally
        finally:
            with contextlib.suppress(ValueError):
                await bus.unmark(marker)


def _metadata_only(request: Any) -> bool:
    """``Accept: ...;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1``: metadata, no data."""
    accept = request._raw_request.headers.get("Accept", "")
    return "as=PartialObjectMetadata" in accept


def _partial(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata", {}),
    }


# --- the process ---------------------------------------------------------------------------------


def crd_documents(directory: Path = CRD_DIR) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in ``crds/`` (none if the folder is empty)."""
    found: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.y*ml")) if directory.is_dir() else []:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                found.append(doc)
    return found


async def serve(host: str, port: int, state_file: Path | None) -> None:
    emulator = KubeAPIEmulator()
    emulator.declare()
    if state_file is not None and state_file.exists() and state_file.stat().st_size:
        emulator.load_state(json.loads(state_file.read_text()))
    else:
        for crd in crd_documents():
            emulator.seed("apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        emulator.seed(
            "v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
        )

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    async with emulator, kmock.Server(emulator, host=host, port=port) as server:
        print(f"{_READY_PREFIX}{server.port}", flush=True)
        await stopping.wait()
        if state_file is not None:
            tmp = state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(emulator.dump_state()))
            tmp.replace(state_file)
        # no graceful shutdown: open watch streams would hold it for a minute; clients see
        # their connections reset, as when a real API server goes away
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.kubeapi")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--state-file", type=Path, default=None, help="objects kept across restarts"
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.state_file))


# --- the controller used by tests -----------------------------------------------------------------


class KubeAPIServerError(RuntimeError):
    pass


class KubeAPIServer(Managed):
    """The emulator in a child process on 127.0.0.1; stoppable and restartable on its port."""

    host = "127.0.0.1"

    def __init__(self, *, workdir: Path | None = None, start_timeout: float = 30.0) -> None:
        self._own_dir = (
            tempfile.TemporaryDirectory(prefix="whc-kubeapi-") if workdir is None else None
        )
        self.workdir = Path(self._own_dir.name) if self._own_dir is not None else workdir
        assert self.workdir is not None
        self.state_file = self.workdir / "kubeapi-state.json"
        self.log_file = self.workdir / "kubeapi.log"
        self.port = 0
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if not self.port:
            raise KubeAPIServerError("the API server has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        if self.running:
            return self
        command = [sys.executable, "-m", "tests.support.kubeapi", "--host", self.host]
        command += ["--port", str(self.port), "--state-file", str(self.state_file)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
        }
        log = open(self.log_file, "ab")  # noqa: SIM115  # the child keeps it open
        try:
            self._process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO_ROOT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        assert self._process.stdout is not None
        deadline = time.monotonic() + self._start_timeout
        line = b""
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line or line.decode().startswith(_READY_PREFIX):
                break
        text = line.decode().strip()
        if not text.startswith(_READY_PREFIX):
            self.stop()
            raise KubeAPIServerError(f"the API emulator did not start; its log:\n{self.log_tail()}")
        self.port = int(text.removeprefix(_READY_PREFIX))
        if not wait_for_port(self.port, deadline - time.monotonic(), host=self.host):
            raise KubeAPIServerError(
                f"the API emulator does not accept connections on port {self.port}"
            )
        return self

    def stop(self) -> None:
        """Stop the server; its objects are saved and come back with ``start()``."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process)
        if process.stdout is not None:
            process.stdout.close()

    def kill(self) -> None:
        """Kill the server without saving: objects written since the last stop are lost."""
        process, self._process = self._process, None
        if process is not None:
            kill_process(process)
            if process.stdout is not None:
                process.stdout.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def reset(self) -> None:
        """Stop, forget every object, start empty (on the same port)."""
        self.stop()
        self.state_file.unlink(missing_ok=True)
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kubeconfig(self) -> dict[str, Any]:
        return kubeconfig_for(self.url)

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(self.kubeconfig()))
        os.chmod(path, 0o600)
        return path

    def close(self) -> None:
        self.stop()
        if self._own_dir is not None:
            self._own_dir.cleanup()


def kubeconfig_for(server: str, *, namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig for an API server without authentication (the emulator)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "e2e", "user": {"token": "e2e-no-auth"}}],
        "contexts": [
            {
                "name": "kmock",
                "context": {"cluster": "kmock", "user": "e2e", "namespace": namespace},
            }
        ],
        "current-context": "kmock",
    }


if __name__ == "__main__":
    main()
