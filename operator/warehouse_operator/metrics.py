"""Every Prometheus metric of the operator, exactly as the API contract names them. Labels never
hold Secret values."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

PER_CONNECTION = ("namespace", "name", "provider")


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    return Gauge(name, documentation, labels, registry=REGISTRY)


def _counter(name: str, documentation: str, labels: Sequence[str]) -> Counter:
    """Exposed as ``<name>_total``."""
    return Counter(name, documentation, labels, registry=REGISTRY)


# --- connection tests ----------------------------------------------------------------------------

CONNECTION_UP = _gauge(
    "warehouse_connection_up",
    "1 when the connection's last test succeeded, 0 when it failed.",
    PER_CONNECTION,
)
TEST_DURATION = Histogram(
    "warehouse_connection_test_duration_seconds",
    "Duration of connection tests (connect and lightweight query), by provider and result.",
    ["provider", "result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
TESTS_TOTAL = _counter(
    "warehouse_connection_tests",
    "Connection tests run, by provider, result and reason.",
    ["provider", "result", "reason"],
)
LAST_TEST = _gauge(
    "warehouse_connection_last_test_timestamp_seconds",
    "Unix time of the connection's last finished test.",
    PER_CONNECTION,
)
TESTS_IN_PROGRESS = _gauge(
    "warehouse_connection_tests_in_progress",
    "Connection tests running right now (bounded by --max-concurrent-tests).",
)

# --- leader election (leader.py) -----------------------------------------------------------------

IS_LEADER = _gauge(
    "warehouse_operator_is_leader",
    "1 while this replica holds the leader Lease (and runs tests), else 0.",
    ["lease"],
)
LEADER_TRANSITIONS = _counter(
    "warehouse_operator_leader_transitions",
    "Times this replica started or stopped leading: acquired, lost (renewal failed or taken), released (shutdown).",
    ["lease", "transition"],
)

# --- admission webhook (webhooks/admission.py) ---------------------------------------------------

ADMISSION_REVIEWS = _counter(
    "warehouse_operator_admission_reviews",
    "Admission reviews answered, by operation and outcome (allowed, denied, error).",
    ["operation", "outcome"],
)

_PROVIDERS = frozenset({"postgres", "snowflake", "bigquery"})


def _provider_label(provider: str | None) -> str:
    # only known values become labels: a label is never an arbitrary user string
    return provider if provider in _PROVIDERS else "unknown"


def record_test(
    namespace: str,
    name: str,
    provider: str | None,
    ok: bool,
    reason: str,
    seconds: float,
    at: float,
) -> None:
    label = _provider_label(provider)
    result = "success" if ok else "failure"
    TEST_DURATION.labels(label, result).observe(seconds)
    TESTS_TOTAL.labels(label, result, reason).inc()
    CONNECTION_UP.labels(namespace, name, label).set(1 if ok else 0)
    LAST_TEST.labels(namespace, name, label).set(at)


def forget_connection(namespace: str, name: str, provider: str | None) -> None:
    label = _provider_label(provider)
    for gauge in (CONNECTION_UP, LAST_TEST):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name, label)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
