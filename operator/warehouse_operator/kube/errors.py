"""Typed Kubernetes API errors: callers match a class, never an HTTP status number.

Every failure of the operator's own API calls is an ``ApiError`` (the server answered with an
error) or a transport error (``aiohttp.ClientError``, ``TimeoutError``: it did not answer).
``describe`` words either for a log line or a status message, without the server's text (which
may echo a request body).
"""

from __future__ import annotations


class ApiError(Exception):
    """The API server answered with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Unauthorized(ApiError):
    """HTTP 401: the operator's credentials were refused (even after logging in again)."""


class Forbidden(ApiError):
    """HTTP 403: RBAC (or an admission webhook) does not allow the call."""


class NotFound(ApiError):
    """HTTP 404: the object (or its namespace, or its kind) does not exist."""


class Conflict(ApiError):
    """HTTP 409: a resourceVersion precondition failed, or the name is taken."""


class Gone(ApiError):
    """HTTP 410: a watch's or list's resourceVersion is older than the server keeps."""


class Invalid(ApiError):
    """HTTP 422: the object failed validation."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
}


def api_error(status: int, message: str) -> ApiError:
    """The typed error for an HTTP status (``ApiError`` itself for the others)."""
    return _BY_STATUS.get(status, ApiError)(status, message)


def describe(exc: BaseException) -> str:
    """A short, secret-free account of a failed API call."""
    if isinstance(exc, Forbidden):
        return "the Kubernetes API refused the operator (HTTP 403: check its RBAC)"
    if isinstance(exc, ApiError):
        return f"the Kubernetes API answered HTTP {exc.status}"
    return f"the Kubernetes API could not be reached ({type(exc).__name__})"
