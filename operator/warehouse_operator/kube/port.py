"""The one port through which the operator's machinery reaches the Kubernetes API.

``KubeClient`` implements it; the scheduler, the in-use controller, admission, the certificate
manager and the leader elector depend on this Protocol only, and tests hand them fakes of it.
Failures are the typed errors of ``kube.errors`` (or transport errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class KubeApi(Protocol):
    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> Any:
        """Merge-patch a connection's status; None when it is gone. With ``resource_version``
        the write is conditional: a changed object raises ``Conflict``."""
        ...

    async def get_secret_data(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret's ``data``; None when it does not exist; ``Forbidden`` when RBAC says no."""
        ...

    async def post_event(
        self, namespace: str, name: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None: ...

    async def get_object(
        self, path: str, *, timeout: float | None = None, retries: int = ...
    ) -> Any:
        """The object at ``path``; None when it does not exist."""
        ...

    async def list_objects(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        timeout: float | None = None,
        retries: int = ...,
    ) -> dict[str, Any]: ...

    async def create_object(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        timeout: float | None = None,
        retries: int = ...,
    ) -> Any:
        """POST; ``Conflict`` when the name is taken."""
        ...

    async def replace_object(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        timeout: float | None = None,
        retries: int = ...,
    ) -> Any:
        """PUT; ``Conflict`` when ``metadata.resourceVersion`` is stale."""
        ...

    async def patch_object(
        self,
        path: str,
        patch: Any,
        *,
        content_type: str = ...,
        timeout: float | None = None,
        retries: int = ...,
    ) -> Any:
        """PATCH; None when the object is gone, ``Conflict`` when a precondition failed."""
        ...
