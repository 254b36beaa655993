"""The one port through which the operator's machinery reaches the Kubernetes API.

``KubeClient`` implements it; the scheduler, the status writer, the in-use controller,
admission, the certificate keeper and the leader elector depend on this Protocol only, and
tests hand them fakes of it. Failures are the typed errors of ``kube.errors`` (or transport
errors: the API did not answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

Body = Mapping[str, Any]
Secs = float | None  # a per-call bound on top of the client's own; None: the client's
MERGE_PATCH = "application/merge-patch+json"


class KubeApi(Protocol):
    async def patch_status(
        self, namespace: str, name: str, status: Body, *, version: str | None = None
    ) -> Any:
        """Merge-patch a connection's status; None when it is gone. With ``version`` (a
        resourceVersion) the write is conditional: a changed object raises ``Conflict``."""
        ...

    async def get_secret_data(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret's ``data``; None when it does not exist; ``Forbidden`` when RBAC says no."""
        ...

    async def post_event(
        self, namespace: str, name: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None: ...

    async def get_object(self, path: str, *, timeout: Secs = None, retries: int = ...) -> Any:
        """The object at ``path``; None when it does not exist."""
        ...

    async def list_objects(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        timeout: Secs = None,
        retries: int = ...,
    ) -> dict[str, Any]: ...

    async def create_object(
        self, path: str, body: Body, *, timeout: Secs = None, retries: int = ...
    ) -> Any:
        """POST; ``Conflict`` when the name is taken."""
        ...

    async def replace_object(
        self, path: str, body: Body, *, timeout: Secs = None, retries: int = ...
    ) -> Any:
        """PUT; ``Conflict`` when ``metadata.resourceVersion`` is stale."""
        ...

    async def patch_object(
        self,
        path: str,
        patch: Any,
        *,
        content_type: str = ...,
        timeout: Secs = None,
        retries: int = ...,
    ) -> Any:
        """PATCH; None when the object is gone, ``Conflict`` when a precondition failed."""
        ...
