"""Operator configuration: each setting declared once, as a field of ``Settings``.

A field's declaration (``setting(...)``) holds everything about it: how a value is read, the
default, the placeholder and the help. The flag (``--default-test-interval``) and the
environment variable (``WHC_DEFAULT_TEST_INTERVAL``) follow from the field's name; the
argparse options, ``run --help`` and the tables in README.md and docs/INSTALL.md
(``make docs``) are all made from these declarations. Flags win over environment variables,
which win over defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from warehouse_operator.models import parse_duration
from warehouse_operator.probe import DEFAULT_DENIED, EgressPolicy

DEFAULT_IN_USE_KINDS = (
    "apps/v1/deployments",
    "apps/v1/statefulsets",
    "apps/v1/daemonsets",
    "batch/v1/jobs",
    "batch/v1/cronjobs",
)
ENV_PREFIX = "WHC_"

T = TypeVar("T")


# --- reading values ------------------------------------------------------------------------------


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def parse_bool(value: str) -> bool:
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


def _log_format(value: str) -> str:
    if value not in ("text", "json"):
        raise argparse.ArgumentTypeError(f"must be text or json: {value!r}")
    return value


def _log_level(value: str) -> str:
    if value.upper() not in logging.getLevelNamesMapping():
        raise argparse.ArgumentTypeError(f"unknown log level: {value!r}")
    return value.upper()


def show_duration(seconds: float) -> str:
    """``300.0`` as ``5m``, ``0.5`` as ``500ms``: the way durations are written on input."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# --- declaring settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting as the command line, the environment and the documentation see it."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    placeholder: str  # empty for a switch
    help: str
    shown: str  # the default as help and documentation print it
    helm: str  # the chart value that sets it, for docs/INSTALL.md
    prose: bool = False  # ``shown`` is words ("any"), not a value

    @property
    def shown_markdown(self) -> str:
        return self.shown if self.prose else f"`{self.shown}`"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def switch(self) -> bool:
        return self.parse is parse_bool


def setting(
    parse: Callable[[str], T],
    default: T,
    help: str,
    *,
    placeholder: str,
    shown: str | None = None,
    helm: str = "`extraEnv`",
) -> T:
    """A ``Settings`` field and its option, declared together (the option is named later)."""
    option = Option(
        "",
        parse,
        default,
        placeholder,
        help,
        _show(default) if shown is None else shown,
        helm,
        prose=shown is not None,
    )
    # the dataclass sees a field; type checkers see a default of type T
    return field(default=default, metadata={"option": option})


def _show(default: object) -> str:
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return show_duration(default)
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def switch_setting(default: bool, help: str, *, helm: str = "`extraEnv`") -> bool:
    return setting(parse_bool, default, help, placeholder="", helm=helm)


def duration_setting(default: float, help: str, *, helm: str = "`extraEnv`") -> float:
    return setting(_duration, default, help, placeholder="DURATION", helm=helm)


def port_setting(default: int, help: str, *, helm: str) -> int:
    return setting(_port, default, help, placeholder="PORT", helm=helm)


def name_setting(default: str, help: str, *, helm: str = "set by the chart") -> str:
    return setting(str, default, help, placeholder="NAME", helm=helm)


def cidrs_setting(
    default: tuple[str, ...], help: str, *, shown: str | None = None, helm: str
) -> tuple[str, ...]:
    return setting(_cidrs, default, help, placeholder="CIDRS", shown=shown, helm=helm)


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = setting(
        _csv,
        (),
        "namespaces to watch, comma-separated",
        placeholder="NAMESPACES",
        shown="all namespaces",
        helm="`watchedNamespaces`",
    )
    default_test_interval: float = duration_setting(
        300.0, "test interval when spec.testInterval is not set", helm="`defaultTestInterval`"
    )
    max_concurrent_tests: int = setting(
        _positive_int,
        50,
        "tests running at once, operator-wide",
        placeholder="N",
        helm="`maxConcurrentTests`",
    )
    egress_allowed_cidrs: tuple[str, ...] = cidrs_setting(
        (), "CIDRs tests may connect to, comma-separated", shown="any", helm="`egress.allowedCIDRs`"
    )
    egress_denied_cidrs: tuple[str, ...] = cidrs_setting(
        DEFAULT_DENIED,
        "CIDRs tests may never connect to, comma-separated; link-local holds cloud metadata",
        helm="`egress.deniedCIDRs`",
    )
    in_use_kinds: tuple[str, ...] = setting(
        _csv,
        DEFAULT_IN_USE_KINDS,
        "group/version/plural of the kinds whose labelled objects use a connection",
        placeholder="KINDS",
        helm="`inUseKinds`",
    )
    log_format: str = setting(
        _log_format, "text", "text or json", placeholder="FORMAT", helm="`logging.format`"
    )
    log_level: str = setting(
        _log_level,
        "INFO",
        "DEBUG, INFO, WARNING or ERROR",
        placeholder="LEVEL",
        helm="`logging.level`",
    )
    metrics_port: int = port_setting(
        8080, "port of /metrics; 0: off", helm="`metrics.port`, `metrics.enabled`"
    )
    health_port: int = port_setting(
        8081, "port of /healthz and /readyz; 0: off", helm="`health.port`"
    )
    startup_spread: float = duration_setting(
        30.0,
        "on start, re-tests of up-to-date connections are spread over this long",
        helm="`startupSpread`",
    )
    leader_elect: bool = switch_setting(
        False,
        "use a Lease so that only one replica tests",
        helm="`leaderElection.enabled` (auto: on when replicas > 1)",
    )
    leader_election_namespace: str = setting(
        str,
        "",
        "namespace of the Lease",
        placeholder="NAMESPACE",
        shown="the pod's",
        helm="the release namespace",
    )
    leader_election_lease: str = name_setting(
        "warehouse-operator", "name of the Lease", helm="`leaderElection.leaseName`"
    )
    leader_election_lease_duration: float = duration_setting(
        15.0, "how long a leader's lease lasts without renewal"
    )
    leader_election_renew_deadline: float = duration_setting(
        10.0, "a leader that cannot renew within this long stops testing"
    )
    leader_election_retry_period: float = duration_setting(
        2.0, "how often the lease is tried and renewed"
    )
    webhook_port: int = port_setting(
        0,
        "port of the admission webhook server; 0: off",
        helm="`webhook.enabled`, `webhook.port`",
    )
    webhook_cert_dir: str = setting(
        str,
        "",
        "folder with tls.crt and tls.key for the webhook",
        placeholder="PATH",
        shown="none: a self-managed certificate",
        helm="set with `webhook.certManager.enabled`",
    )
    webhook_service_name: str = name_setting(
        "warehouse-operator-webhook",
        "Service in front of the webhook, named in its self-managed certificate",
    )
    webhook_secret_name: str = name_setting(
        "warehouse-operator-webhook-tls",
        "Secret holding the self-managed webhook certificate",
    )
    webhook_config_name: str = name_setting(
        "warehouse-operator",
        "ValidatingWebhookConfiguration whose caBundle the operator keeps current",
    )
    one_connection_per_namespace: bool = switch_setting(
        False,
        "refuse a second WarehouseConnection in a namespace",
        helm="`oneConnectionPerNamespace`",
    )
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.from_cidrs(self.egress_allowed_cidrs, self.egress_denied_cidrs)


OPTIONS: tuple[Option, ...] = tuple(
    replace(f.metadata["option"], name=f.name) for f in fields(Settings) if "option" in f.metadata
)


# --- the command line ------------------------------------------------------------------------------


class Switch(argparse.Action):
    """``--x`` / ``--no-x``; ``--x=true`` and ``--x false`` are read too, as they once had to be."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        negated = [f"--no-{s.removeprefix('--')}" for s in option_strings]
        super().__init__([*option_strings, *negated], dest, nargs="?", **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        negated = bool(option_string and option_string.startswith("--no-"))
        if values is None:
            setattr(namespace, self.dest, not negated)
            return
        if negated:
            raise argparse.ArgumentError(self, "takes no value")
        try:
            setattr(namespace, self.dest, parse_bool(str(values)))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None


class HelpFormatter(argparse.HelpFormatter):
    """Switches read ``--x, --no-x`` in help, not ``--x [X]``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, Switch):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if isinstance(action, Switch):
            return ""  # usage: [--leader-elect]
        return super()._format_args(action, default_metavar)


def help_line(option: Option) -> str:
    return f"{option.help} (default: {option.shown}; env {option.env})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for option in OPTIONS:
        if option.switch:
            parser.add_argument(option.flag, action=Switch, default=None, help=help_line(option))
        else:
            parser.add_argument(
                option.flag,
                type=option.parse,
                default=None,
                metavar=option.placeholder,
                help=help_line(option),
            )


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags win over environment variables, which win over defaults. A bad environment
    variable is a usage error (exit 2) naming the variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for option in OPTIONS:
        value = getattr(args, option.name, None)
        if value is None and environ.get(option.env) is not None:
            try:
                value = option.parse(environ[option.env])
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise UsageError(f"invalid {option.env}: {exc}") from None
        if value is not None:
            values[option.name] = value
    return Settings(**values)  # type: ignore[arg-type]


class UsageError(SystemExit):
    """Bad input: exit status 2, as argparse gives; the command line prints the message."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = f"warehouse-operator: {message}"

    def __str__(self) -> str:
        return self.message


# --- documentation ---------------------------------------------------------------------------------


def markdown_flags_table() -> str:
    """README.md's table of flags."""
    rows = ["| flag | env | default | what |", "|---|---|---|---|"]
    for option in OPTIONS:
        flag = f"`{option.flag}`" + (f", `--no-{option.flag[2:]}`" if option.switch else "")
        placeholder = f" {option.placeholder}" if option.placeholder else ""
        rows.append(
            f"| {flag}{placeholder} | `{option.env}` | {option.shown_markdown} | {option.help} |"
        )
    return "\n".join(rows) + "\n"


def markdown_env_table() -> str:
    """docs/INSTALL.md's table of environment variables and the chart values that set them."""
    rows = ["| variable | default | Helm value |", "|---|---|---|"]
    for option in OPTIONS:
        rows.append(f"| `{option.env}` | {option.shown_markdown} | {option.helm} |")
    return "\n".join(rows) + "\n"
