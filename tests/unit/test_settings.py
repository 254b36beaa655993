import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from warehouse_operator import settings as settings_mod
from warehouse_operator.models import parse_duration
from warehouse_operator.settings import OPTIONS, Settings, add_arguments, from_args

ROOT = Path(__file__).resolve().parents[2]


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
    with pytest.raises(SystemExit, match="WHC_MAX_CONCURRENT_TESTS") as exit_info:
        parse([], {"WHC_MAX_CONCURRENT_TESTS": "many"})
    assert exit_info.value.code == 2


def test_bad_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(["--log-format", "xml"])
    assert exit_info.value.code == 2
    assert "--log-format" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="WHC_LOG_FORMAT"):
        parse([], {"WHC_LOG_FORMAT": "xml"})


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


# --- switches ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, False),
        (["--leader-elect"], {}, True),
        (["--no-leader-elect"], {"WHC_LEADER_ELECT": "true"}, False),
        ([], {"WHC_LEADER_ELECT": "true"}, True),
        ([], {"WHC_LEADER_ELECT": "0"}, False),
        # an explicit value, as the flags once needed
        (["--leader-elect=true"], {}, True),
        (["--leader-elect", "false"], {"WHC_LEADER_ELECT": "true"}, False),
        (["--leader-elect=off"], {}, False),
    ],
)
def test_switches(argv: list[str], env: dict[str, str], expected: bool) -> None:
    assert parse(argv, env).leader_elect is expected


@pytest.mark.parametrize(
    "argv",
    [["--leader-elect=maybe"], ["--no-leader-elect=true"], ["--one-connection-per-namespace", "x"]],
)
def test_bad_switch_values_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    assert "error: argument --" in capsys.readouterr().err


def test_bad_switch_in_the_environment() -> None:
    with pytest.raises(SystemExit, match="WHC_ONE_CONNECTION_PER_NAMESPACE"):
        parse([], {"WHC_ONE_CONNECTION_PER_NAMESPACE": "maybe"})


# --- one declaration -----------------------------------------------------------------------------


def test_every_field_but_extra_is_a_declared_option() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert [o.name for o in OPTIONS] == [n for n in names if n != "extra"]
    for option in OPTIONS:
        assert option.flag == "--" + option.name.replace("_", "-")
        assert option.env == "WHC_" + option.name.upper()
        # the dataclass default is the declared one, and reading its shown form gives it back
        assert getattr(Settings(), option.name) == option.default
        if not option.prose:
            assert option.parse(option.shown if not option.switch else str(option.default)) == (
                option.default
            )


def test_help_shows_placeholder_default_and_variable_of_every_option() -> None:
    parser = argparse.ArgumentParser(
        formatter_class=lambda prog: settings_mod.HelpFormatter(prog, width=1000)
    )
    add_arguments(parser)
    text = parser.format_help()
    for option in OPTIONS:
        if option.switch:
            assert re.search(rf"{option.flag}, --no-{option.flag[2:]}\s", text)
            assert f"{option.flag} [" not in text
        else:
            assert option.placeholder.isupper()
            assert re.search(rf"{option.flag} {option.placeholder}\s", text)
            assert option.placeholder != option.env
        assert settings_mod.help_line(option) in text
        assert f"(default: {option.shown}; env {option.env})" in text


def test_durations_are_shown_the_way_they_are_written() -> None:
    shown = {0.5: "500ms", 2.0: "2s", 30.0: "30s", 90.0: "90s", 300.0: "5m", 7200.0: "2h"}
    for seconds, text in shown.items():
        assert settings_mod.show_duration(seconds) == text
        assert parse_duration(text) == seconds


# --- the documentation agrees --------------------------------------------------------------------


def generated_section(path: Path) -> str:
    text = path.read_text()
    found = re.search(r"<!-- settings: begin.*?-->\n(.*?)<!-- settings: end -->", text, re.DOTALL)
    assert found, f"{path.name} has no generated settings table"
    return found.group(1)


def test_readme_flags_table_is_the_declarations() -> None:
    assert generated_section(ROOT / "README.md") == settings_mod.markdown_flags_table(), (
        "run `make docs`"
    )


def test_install_guide_table_is_the_declarations() -> None:
    assert generated_section(ROOT / "docs" / "INSTALL.md") == settings_mod.markdown_env_table(), (
        "run `make docs`"
    )
