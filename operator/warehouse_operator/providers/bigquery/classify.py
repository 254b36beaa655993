"""Google's errors -> a reason and a message a person understands (pure; tested on its own)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from warehouse_operator.models import Reason
from warehouse_operator.providers import network
from warehouse_operator.providers.bigquery.calls import UnexpectedAnswer


def classify_transport_error(
    exc: BaseException, what: str, where: str
) -> tuple[Reason, str] | None:
    """A failure to talk to the ``what`` at ``where`` at all (no HTTP answer), or None."""
    return network.classify_network_error(exc, f"the {what} at {where}")


def _oauth_error(exc: BaseException) -> tuple[str, str]:
    """(error code, description) of a token endpoint's refusal, as google-auth reports it."""
    data = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(data, Mapping) and isinstance(data.get("error"), str):
        return data["error"], str(data.get("error_description") or "")
    text = str(exc.args[0]) if exc.args else str(exc)
    code, _, description = text.partition(": ")
    if re.fullmatch(r"[a-z_]+", code):
        return code, description
    return "", text


def classify_token_error(exc: BaseException, email: str, where: str) -> tuple[Reason, str]:
    """Map a failure of the ``authenticate`` stage to a reason and a message (pure)."""
    from google.auth import exceptions as auth

    if isinstance(exc, auth.RefreshError):
        code, description = _oauth_error(exc)
        detail = f"{code}: {description}" if code and description else (code or description)
        if code in ("invalid_grant", "invalid_client", "unauthorized_client", "access_denied"):
            hint = ""
            low = description.lower()
            if "not found" in low:
                hint = " (the service account does not exist)"
            elif "signature" in low:
                hint = " (the key is not, or no longer, a key of this service account)"
            return (
                Reason.AUTHENTICATION_FAILED,
                f"the token endpoint {where} refused service account {email!r}: {detail}{hint}",
            )
        return Reason.PROVIDER_ERROR, f"the token endpoint {where} issued no access token: {detail}"
    transport = classify_transport_error(exc, "OAuth token endpoint", where)
    if transport is not None:
        return transport
    return Reason.PROVIDER_ERROR, f"authentication failed: {type(exc).__name__}: {exc}"


def _api_error_detail(exc: Any) -> tuple[str, str]:
    """(first error reason, message) of a google-api-core error."""
    errors = getattr(exc, "errors", None) or []
    first = errors[0] if errors and isinstance(errors[0], Mapping) else {}
    reason = str(first.get("reason") or "")
    message = str(getattr(exc, "message", "") or first.get("message") or exc)
    return reason, message


def classify_api_error(
    exc: BaseException,
    *,
    stage: str,
    email: str,
    project: str,
    dataset: tuple[str, str] | None,
    where: str,
) -> tuple[Reason, str]:
    """Map a failure of the ``query`` or ``dataset`` stage to a reason and a message (pure)."""
    from google.api_core import exceptions as core

    if isinstance(exc, core.RetryError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, UnexpectedAnswer):
        return Reason.PROVIDER_ERROR, str(exc)
    if isinstance(exc, core.GoogleAPICallError):
        code = exc.code or 0
        reason, message = _api_error_detail(exc)
        target = (
            f"dataset {dataset[0]}:{dataset[1]}"
            if stage == "dataset" and dataset is not None
            else f"project {project}"
        )
        if code == 401:
            return (
                Reason.AUTHENTICATION_FAILED,
                f"the BigQuery API at {where} did not accept the access token of {email!r}: {message}",
            )
        if code == 403 and reason not in ("rateLimitExceeded", "quotaExceeded"):
            action = (
                f"read {target}" if stage == "dataset" else f"run query jobs in project {project}"
            )
            return Reason.PERMISSION_DENIED, f"{email!r} may not {action}: {message}"
        if code == 404:
            low = message.lower()
            if "project" in low and "dataset" not in low:
                missing = f"project {project}"
            elif "dataset" in low or stage == "dataset":
                missing = target
            else:
                missing = f"project {project}"
            return Reason.NOT_FOUND, f"{missing} was not found: {message}"
        return Reason.PROVIDER_ERROR, f"the BigQuery API answered HTTP {code}: {message}"
    transport = classify_transport_error(exc, "BigQuery API", where)
    if transport is not None:
        return transport
    return Reason.PROVIDER_ERROR, f"{stage} failed: {type(exc).__name__}: {exc}"
