"""Operator configuration: command-line flags, each with an environment variable (Helm values map to them)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warehouse_operator.models import parse_duration
from warehouse_operator.probe import DEFAULT_DENIED, EgressPolicy

DEFAULT_IN_USE_KINDS = (
    "apps/v1/deployments",
    "apps/v1/statefulsets",
    "apps/v1/daemonsets",
    "batch/v1/jobs",
    "batch/v1/cronjobs",
)


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    default_test_interval: float = 300.0
    max_concurrent_tests: int = 50
    egress_allowed_cidrs: tuple[str, ...] = ()
    egress_denied_cidrs: tuple[str, ...] = DEFAULT_DENIED
    in_use_kinds: tuple[str, ...] = DEFAULT_IN_USE_KINDS
    log_format: str = "text"
    log_level: str = "INFO"
    metrics_port: int = 8080
    health_port: int = 8081
    startup_spread: float = 30.0
    leader_elect: bool = False
    leader_election_namespace: str = ""
    leader_election_lease: str = "warehouse-operator"
    leader_election_lease_duration: float = 15.0
    leader_election_renew_deadline: float = 10.0
    leader_election_retry_period: float = 2.0
    webhook_port: int = 0  # 0: the webhook server is off
    webhook_cert_dir: str = ""
    webhook_service_name: str = "warehouse-operator-webhook"
    webhook_secret_name: str = "warehouse-operator-webhook-tls"  # noqa: S105  (a name)
    webhook_config_name: str = "warehouse-operator"
    one_connection_per_namespace: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.from_cidrs(self.egress_allowed_cidrs, self.egress_denied_cidrs)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _bool(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value!r}")
    return number


def _cidrs(value: str) -> tuple[str, ...]:
    cidrs = _csv(value)
    try:
        EgressPolicy.from_cidrs(cidrs, ())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return cidrs


# flag, env var, type, default, help
_OPTIONS: Sequence[tuple[str, str, Callable[[str], Any], object, str]] = (
    (
        "--namespaces",
        "WHC_NAMESPACES",
        _csv,
        (),
        "comma-separated namespaces to watch (default: all)",
    ),
    (
        "--default-test-interval",
        "WHC_DEFAULT_TEST_INTERVAL",
        _duration,
        300.0,
        "test interval when spec.testInterval is not set (default 5m)",
    ),
    (
        "--max-concurrent-tests",
        "WHC_MAX_CONCURRENT_TESTS",
        _positive_int,
        50,
        "tests running at once, operator-wide (default 50)",
    ),
    (
        "--egress-allowed-cidrs",
        "WHC_EGRESS_ALLOWED_CIDRS",
        _cidrs,
        (),
        "comma-separated CIDRs tests may connect to (default: any)",
    ),
    (
        "--egress-denied-cidrs",
        "WHC_EGRESS_DENIED_CIDRS",
        _cidrs,
        DEFAULT_DENIED,
        "comma-separated CIDRs tests may never connect to (default: link-local)",
    ),
    (
        "--in-use-kinds",
        "WHC_IN_USE_KINDS",
        _csv,
        DEFAULT_IN_USE_KINDS,
        "group/version/plural of kinds whose labelled objects use a connection",
    ),
    ("--log-format", "WHC_LOG_FORMAT", str, "text", "text or json"),
    ("--log-level", "WHC_LOG_LEVEL", str, "INFO", "DEBUG, INFO, WARNING or ERROR"),
    ("--metrics-port", "WHC_METRICS_PORT", _port, 8080, "port of /metrics (0: off)"),
    ("--health-port", "WHC_HEALTH_PORT", _port, 8081, "port of /healthz and /readyz (0: off)"),
    (
        "--startup-spread",
        "WHC_STARTUP_SPREAD",
        _duration,
        30.0,
        "on start, re-tests of up-to-date connections are spread over this long",
    ),
    (
        "--leader-elect",
        "WHC_LEADER_ELECT",
        _bool,
        False,
        "use a Lease so that only one replica tests",
    ),
    (
        "--leader-election-namespace",
        "WHC_LEADER_ELECTION_NAMESPACE",
        str,
        "",
        "namespace of the Lease (default: the pod's)",
    ),
    (
        "--leader-election-lease",
        "WHC_LEADER_ELECTION_LEASE",
        str,
        "warehouse-operator",
        "name of the Lease",
    ),
    (
        "--leader-election-lease-duration",
        "WHC_LEADER_ELECTION_LEASE_DURATION",
        _duration,
        15.0,
        "how long a leader's lease lasts without renewal (default 15s)",
    ),
    (
        "--leader-election-renew-deadline",
        "WHC_LEADER_ELECTION_RENEW_DEADLINE",
        _duration,
        10.0,
        "a leader that cannot renew within this long stops testing (default 10s)",
    ),
    (
        "--leader-election-retry-period",
        "WHC_LEADER_ELECTION_RETRY_PERIOD",
        _duration,
        2.0,
        "how often the lease is tried and renewed (default 2s)",
    ),
    (
        "--webhook-port",
        "WHC_WEBHOOK_PORT",
        _port,
        0,
        "port of the admission webhook server (0: off)",
    ),
    (
        "--webhook-cert-dir",
        "WHC_WEBHOOK_CERT_DIR",
        str,
        "",
        "folder with tls.crt and tls.key for the webhook",
    ),
    (
        "--webhook-service-name",
        "WHC_WEBHOOK_SERVICE_NAME",
        str,
        "warehouse-operator-webhook",
        "Service in front of the webhook (names in its self-managed certificate)",
    ),
    (
        "--webhook-secret-name",
        "WHC_WEBHOOK_SECRET_NAME",
        str,
        "warehouse-operator-webhook-tls",
        "Secret holding the self-managed webhook certificate",
    ),
    (
        "--webhook-config-name",
        "WHC_WEBHOOK_CONFIG_NAME",
        str,
        "warehouse-operator",
        "ValidatingWebhookConfiguration whose caBundle the operator keeps current",
    ),
    (
        "--one-connection-per-namespace",
        "WHC_ONE_CONNECTION_PER_NAMESPACE",
        _bool,
        False,
        "refuse a second WarehouseConnection in a namespace",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, env, kind, default, help_text in _OPTIONS:
        parser.add_argument(
            flag, type=kind, default=None, metavar=env, help=f"{help_text} [env {env}]"
        )
        del default


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags win over environment variables, which win over defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for flag, env, kind, default, _ in _OPTIONS:
        attr = flag.removeprefix("--").replace("-", "_")
        value = getattr(args, attr, None)
        if value is None and environ.get(env) is not None:
            try:
                value = kind(environ[env])
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise SystemExit(f"warehouse-operator: invalid {env}: {exc}") from None
        values[attr] = default if value is None else value
    if values["log_format"] not in ("text", "json"):
        raise SystemExit("warehouse-operator: --log-format must be text or json")
    return Settings(**values)  # type: ignore[arg-type]
