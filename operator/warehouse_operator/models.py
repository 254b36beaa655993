"""Typed models of the WarehouseConnection API: spec, status, reasons.

Everything here is pure: no I/O, no Kubernetes, no drivers. The CRD in ``crds/`` is the
schema users see; these models re-validate what the API server hands us, because objects
created before a CRD upgrade (or on a server that does not enforce the schema) may not match.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

GROUP = "warehouse-operator.io"
VERSION = "v1alpha1"
PLURAL = "warehouseconnections"
KIND = "WarehouseConnection"

TEST_REQUESTED_ANNOTATION = f"{GROUP}/test-requested-at"
CONNECTION_LABEL = f"{GROUP}/connection"
ALLOW_DELETE_IN_USE_ANNOTATION = f"{GROUP}/allow-delete-in-use"


class Reason(StrEnum):
    """Machine-readable outcome of a test (``status.reason``)."""

    CONNECTED = "Connected"
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_KEY_MISSING = "SecretKeyMissing"
    INVALID_CREDENTIALS = "InvalidCredentials"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    PERMISSION_DENIED = "PermissionDenied"
    NOT_FOUND = "NotFound"
    UNREACHABLE = "Unreachable"
    TIMEOUT = "Timeout"
    TLS_ERROR = "TLSError"
    DESTINATION_DENIED = "DestinationDenied"
    PROVIDER_ERROR = "ProviderError"

    @property
    def needs_human(self) -> bool:
        """True when retrying cannot help until a person changes the spec or the Secret."""
        return self in _STALLED_REASONS


_STALLED_REASONS = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.SECRET_NOT_FOUND,
        Reason.SECRET_KEY_MISSING,
        Reason.INVALID_CREDENTIALS,
        Reason.DESTINATION_DENIED,
    }
)


class ProbeFailure(Exception):
    """A test failed for a known reason: unusable credentials, a refused login, no answer...

    ``message`` is shown to users: it names fields and keys, never their values (and is
    redacted again before it is shown). Raised from the Secret parsing up to the providers.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Phase(StrEnum):
    PENDING = "Pending"
    CONNECTED = "Connected"
    FAILED = "Failed"


class CheckResult(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    SKIPPED = "Skipped"


# --- durations -------------------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION_SECONDS = 7 * 24 * 3600.0


def parse_duration(text: str) -> float:
    """Parse a Kubernetes-style duration (``30s``, ``5m``, ``1h30m``, ``250ms``) into seconds."""
    if not isinstance(text, str) or len(text) > 32 or not _DURATION_RE.fullmatch(text):
        raise ValueError(
            # the value is not quoted: messages never repeat what a user typed
            "invalid duration: use a number and a unit, e.g. 30s, 5m, 1h"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART_RE.findall(text))
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError("invalid duration: 7 days at most")
    return seconds


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[str, AfterValidator(_check_duration)]


def format_duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


# --- spec ------------------------------------------------------------------------------------

# a DNS name, an IPv4 address or an IPv6 address (bare or in brackets)
_HOST_RE = re.compile(r"^[A-Za-z0-9:\[]([A-Za-z0-9.\-:_\[\]]{0,252})$")


def _check_host(host: str) -> str:
    if not _HOST_RE.fullmatch(host):
        raise ValueError("must be a DNS name or an IP address")
    return host


def _check_url(url: str) -> str:
    if not re.fullmatch(r"^https?://[^\s/?#@]+(:[0-9]{1,5})?(/[^\s]*)?$", url):
        raise ValueError("must be an http:// or https:// URL without credentials")
    return url


Host = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_check_host)]
Url = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_check_url)]
Name = Annotated[str, Field(min_length=1, max_length=255)]


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True, strict=True)


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class PostgresSpec(_Model):
    host: Host
    port: int = Field(default=5432, ge=1, le=65535)
    database: Name
    ssl_mode: SslMode = Field(default="prefer", alias="sslMode")


class SnowflakeSpec(_Model):
    account: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.\-]+$")]
    auth_method: Literal["password", "keyPair"] = Field(default="password", alias="authMethod")
    warehouse: Name | None = None
    database: Name | None = None
    role: Name | None = None
    schema_: Name = Field(default="PUBLIC", alias="schema")
    endpoint: Url | None = None


class BigQuerySpec(_Model):
    project_id: Annotated[str, Field(min_length=1, max_length=255)] = Field(alias="projectId")
    dataset_id: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        default=None, alias="datasetId"
    )
    location: Name | None = None
    endpoint: Url | None = None


class SecretRef(_Model):
    name: Annotated[str, Field(min_length=1, max_length=253)]
    keys: dict[str, Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=dict
    )


ProviderName = Literal["bigquery", "snowflake", "postgres"]


class ConnectionSpec(_Model):
    provider: ProviderName
    display_name: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, alias="displayName"
    )
    credentials_secret_ref: SecretRef = Field(alias="credentialsSecretRef")
    postgres: PostgresSpec | None = None
    snowflake: SnowflakeSpec | None = None
    bigquery: BigQuerySpec | None = None
    # no schema default: the operator's --default-test-interval applies when it is not set
    test_interval: Duration | None = Field(default=None, alias="testInterval")
    test_timeout: Duration = Field(default="10s", alias="testTimeout")
    suspend: bool = False

    @field_validator("provider", mode="before")
    @classmethod
    def _alias_postgresql(cls, value: Any) -> Any:
        return "postgres" if value == "postgresql" else value

    @model_validator(mode="after")
    def _provider_block_present(self) -> ConnectionSpec:
        if getattr(self, self.provider) is None:
            raise ValueError(f"spec.{self.provider} is required when provider is {self.provider}")
        if self.test_timeout_seconds <= 0:
            raise ValueError("spec.testTimeout must be greater than 0s")
        return self

    def test_interval_seconds(self, default: float) -> float:
        return default if self.test_interval is None else parse_duration(self.test_interval)

    @property
    def test_timeout_seconds(self) -> float:
        return parse_duration(self.test_timeout)


class InvalidSpecError(ValueError):
    """The spec cannot be used; the message is safe to show (it holds no values)."""


def parse_spec(raw: Any) -> ConnectionSpec:
    """Validate a raw ``spec`` mapping, or raise InvalidSpecError with a readable message."""
    if not isinstance(raw, dict):
        raise InvalidSpecError("spec must be an object")
    try:
        return ConnectionSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpecError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """A one-sentence summary naming fields, never echoing the offending values."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        msg = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"spec.{loc}: {msg}" if loc else msg)
    more = len(exc.errors()) - len(parts)
    text = "; ".join(parts)
    return f"{text} (and {more} more)" if more > 0 else text


# --- results and status ------------------------------------------------------------------------


class Check(BaseModel):
    """One stage of a test, as shown in ``status.checks``."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    result: CheckResult
    message: str = ""
    duration_ms: int = Field(default=0, alias="durationMs")


class ProbeResult(BaseModel):
    """What one test found. Messages are already redacted."""

    model_config = ConfigDict(frozen=True)

    reason: Reason
    message: str
    latency_ms: int | None = None
    server_version: str | None = None
    checks: tuple[Check, ...] = ()
    public_key_fingerprint: str | None = None
    warehouse_state: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is Reason.CONNECTED
