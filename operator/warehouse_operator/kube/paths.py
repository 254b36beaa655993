"""API paths and names: every path the operator requests is built here."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from warehouse_operator.kube.incluster import service_account_dir
from warehouse_operator.models import GROUP, PLURAL, VERSION

CONNECTIONS = f"{GROUP}/{VERSION}"


def object_path(
    group_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The API path of a collection, an object or its subresource: ``apps/v1`` ->
    ``/apis/apps/v1/...``, ``v1`` -> ``/api/v1/...``."""
    root = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
    path = f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"
    if name:
        path = f"{path}/{name}"
        if subresource:
            path = f"{path}/{subresource}"
    return path


def connection_path(namespace: str, name: str, subresource: str | None = None) -> str:
    """The path of a WarehouseConnection (or its ``status``)."""
    return object_path(CONNECTIONS, PLURAL, namespace, name, subresource)


def pod_namespace(environ: Mapping[str, str] | None = None) -> str:
    """The operator's own namespace: POD_NAMESPACE (downward API), else the service account's,
    else ``default`` (running outside a cluster)."""
    environ = os.environ if environ is None else environ
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    try:
        with open(service_account_dir(environ) / "namespace", encoding="utf-8") as handle:
            found = handle.read().strip()
    except OSError:
        found = ""
    return found or "default"


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns_subdomain(value: str) -> bool:
    """A valid Kubernetes object name (RFC 1123 subdomain): safe as one URL path segment."""
    return len(value) <= 253 and _DNS_SUBDOMAIN.fullmatch(value) is not None
