import argparse

import pytest

from warehouse_operator.settings import Settings, add_arguments, from_args


def parse(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(argv), env or {})


def test_defaults() -> None:
    s = parse([])
    assert s.namespaces == ()
    assert s.default_test_interval == 300
    assert s.max_concurrent_tests == 50
    assert s.egress_denied_cidrs == ("169.254.0.0/16", "fe80::/10")
    assert not s.egress_policy.permits("169.254.169.254")
    assert s.log_format == "text"


def test_flags_win_over_environment() -> None:
    env = {
        "WHC_NAMESPACES": "a,b",
        "WHC_MAX_CONCURRENT_TESTS": "7",
        "WHC_DEFAULT_TEST_INTERVAL": "1m",
    }
    s = parse(["--max-concurrent-tests", "3"], env)
    assert s.namespaces == ("a", "b")
    assert s.max_concurrent_tests == 3
    assert s.default_test_interval == 60


def test_egress_cidrs() -> None:
    s = parse(["--egress-allowed-cidrs", "10.0.0.0/8", "--egress-denied-cidrs", "10.1.0.0/16"])
    assert s.egress_policy.permits("10.2.3.4")
    assert not s.egress_policy.permits("10.1.3.4")
    assert not s.egress_policy.permits("192.0.2.1")


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-concurrent-tests", "0"],
        ["--default-test-interval", "soon"],
        ["--egress-denied-cidrs", "nope"],
        ["--metrics-port", "70000"],
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2


def test_bad_environment_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="WHC_MAX_CONCURRENT_TESTS"):
        parse([], {"WHC_MAX_CONCURRENT_TESTS": "many"})


def test_bad_log_format() -> None:
    with pytest.raises(SystemExit, match="log-format"):
        parse(["--log-format", "xml"])


def test_leader_election_and_webhook_names() -> None:
    env = {
        "WHC_LEADER_ELECTION_LEASE_DURATION": "4s",
        "WHC_LEADER_ELECTION_RENEW_DEADLINE": "3s",
        "WHC_LEADER_ELECTION_RETRY_PERIOD": "500ms",
        "WHC_WEBHOOK_SERVICE_NAME": "svc",
    }
    s = parse(["--webhook-secret-name", "tls"], env)
    assert (
        s.leader_election_lease_duration,
        s.leader_election_renew_deadline,
        s.leader_election_retry_period,
    ) == (4, 3, 0.5)
    assert (s.webhook_service_name, s.webhook_secret_name, s.webhook_config_name) == (
        "svc",
        "tls",
        "warehouse-operator",
    )
    assert parse([]).leader_election_lease_duration == 15
