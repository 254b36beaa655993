"""``warehouse-operator test`` and ``kubectl whc``: arguments, output, exit codes, and logging
in as kubectl does, without a cluster."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from warehouse_operator.cli import main
from warehouse_operator.ondemand import command, output
from warehouse_operator.ondemand.cluster import Cluster, CommandError, _Errors, connect
from warehouse_operator.ondemand.output import Outcome

LONG_MESSAGE = (
    "could not connect to orders.db.internal:5432: connection refused; is the server running "
    "and accepting TCP/IP connections on that port, and does the egress policy allow it?"
)


def connection(name: str, phase: str | None, reason: str = "", **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"provider": "postgres"},
    }
    if phase is not None:
        obj["status"] = {"phase": phase, "reason": reason, **status}
    return obj


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["test"], "give the NAME of a WarehouseConnection, or --all, or -l SELECTOR"),
        (["test", "orders", "--all"], "give a NAME or --all / -l SELECTOR, not both"),
        (["test", "orders", "-l", "a=b"], "give a NAME or --all / -l SELECTOR, not both"),
        (["test", "--all", "-A", "-n", "team"], "give -n NAMESPACE or -A, not both"),
        (["test", "orders", "-A"], "-A goes with --all or -l"),
        (["test", "orders", "--timeout", "0s"], "--timeout must be more than 0s"),
        (["test", "orders", "--timeout", "soon"], "--timeout: invalid duration"),
    ],
)
def test_usage_errors_exit_2_before_any_cluster_is_needed(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # a kubeconfig that does not exist: the arguments are checked first
    assert main([*argv, "--kubeconfig", str(tmp_path / "none")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"warehouse-operator test: {error}")


def test_the_plugin_checks_its_arguments_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.kubectl_main(["status", "-n", "team", "-A"]) == 2
    assert capsys.readouterr().err == "kubectl whc status: give -n NAMESPACE or -A, not both\n"
    assert command.kubectl_main(["test", "--all", "--timeout=-1s"]) == 2
    assert "kubectl whc test: --timeout" in capsys.readouterr().err


def test_the_plugin_knows_test_and_status_only() -> None:
    with pytest.raises(SystemExit) as exited:
        command.kubectl_parser().parse_args(["delete"])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60.0), ("2m", 120.0), ("1m30s", 90.0), ("90", 90.0), ("0.5", 0.5)]
)
def test_timeouts_are_durations_or_seconds(text: str, seconds: float) -> None:
    assert command.parse_timeout(text) == seconds


def test_the_default_timeout_is_a_minute() -> None:
    args = command.kubectl_parser().parse_args(["test", "orders"])
    assert command.check_test_arguments(args) == 60.0


def test_each_request_is_a_fresh_rfc3339_timestamp() -> None:
    now = datetime(2026, 12, 6, 15, 4, 5, 123456, tzinfo=UTC)
    assert command.request_value(now) == "2026-12-06T15:04:05.123456Z"
    assert datetime.fromisoformat(command.request_value().replace("Z", "+00:00")).tzinfo


def test_only_the_status_of_exactly_that_request_is_an_answer() -> None:
    value = "2026-12-06T15:04:05.123456Z"
    older = connection("orders", "Connected", lastHandledTestRequest="2026-12-06T15:04:05Z")
    assert not command.handled(older, value)
    assert not command.handled(connection("orders", None), value)
    assert command.handled(connection("orders", "Failed", lastHandledTestRequest=value), value)


# --- output ------------------------------------------------------------------------------------


def test_one_result_shows_phase_reason_message_latency_and_checks() -> None:
    obj = connection(
        "orders",
        "Connected",
        "Connected",
        message="connected in 7 ms",
        latencyMs=7,
        serverVersion="PostgreSQL 15.18",
        checks=[
            {"name": "connect", "result": "Passed", "message": "reached it", "durationMs": 6},
            {
                "name": "query",
                "result": "Passed",
                "message": "SELECT 1 returned 1",
                "durationMs": 1,
            },
        ],
    )
    text = output.describe(Outcome("team", "orders", obj))
    assert text.splitlines() == [
        "WarehouseConnection team/orders (postgres)",
        "  status:    Connected",
        "  reason:    Connected",
        "  message:   connected in 7 ms",
        "  latency:   7ms",
        "  server:    PostgreSQL 15.18",
        "  checks:",
        "    connect  Passed       6ms  reached it",
        "    query    Passed       1ms  SELECT 1 returned 1",
    ]


def test_a_failure_shows_no_latency_of_an_older_success() -> None:
    obj = connection("orders", "Failed", "AuthenticationFailed", message="no", latencyMs=7)
    text = output.describe(Outcome("team", "orders", obj))
    assert "latency" not in text
    assert "  reason:    AuthenticationFailed" in text


def test_the_table_never_cuts_the_message() -> None:
    rows = [
        Outcome(
            "team", "orders", connection("orders", "Failed", "Unreachable", message=LONG_MESSAGE)
        ),
        Outcome("team", "billing", connection("billing", "Connected", "Connected", latencyMs=12)),
    ]
    lines = output.outcomes_table(rows).splitlines()
    assert lines[0].split() == list(output.HEADERS)
    assert lines[1].endswith(LONG_MESSAGE)
    assert lines[2].split() == ["team", "billing", "postgres", "Connected", "Connected", "12ms"]
    # columns line up under their headers
    assert lines[1].index("Failed") == lines[0].index("STATUS") == lines[2].index("Connected")


def test_a_message_with_line_breaks_stays_on_its_row() -> None:
    obj = connection("orders", "Failed", "ProviderError", message="first\nsecond")
    line = output.objects_table([obj]).splitlines()[1]
    assert line.endswith("first second")


def test_an_unanswered_connection_is_a_row_of_its_own() -> None:
    row = output.row("team", "orders", connection("orders", "Connected"), answered=False)
    assert row == ["team", "orders", "postgres", output.NO_ANSWER, "", "", "no operator answered"]


def test_a_connection_never_tested_is_pending() -> None:
    assert output.row("team", "new", connection("new", None))[3] == "Pending"


def test_yaml_and_json_print_the_objects_status() -> None:
    one = [Outcome("team", "orders", connection("orders", "Connected", "Connected"))]
    doc = yaml.safe_load(output.document(one, "yaml"))
    assert doc["kind"] == "WarehouseConnection"
    assert doc["metadata"] == {"name": "orders", "namespace": "team"}
    assert doc["status"]["phase"] == "Connected"
    two = [*one, Outcome("team", "billing", connection("billing", "Failed"))]
    listed = json.loads(output.document(two, "json"))
    assert listed["kind"] == "List"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["orders", "billing"]


def test_exit_codes() -> None:
    ok = Outcome("team", "a", connection("a", "Connected", "Connected"))
    failed = Outcome("team", "b", connection("b", "Failed", "Timeout"))
    unanswered = Outcome("other", "c", connection("c", "Connected"), answered=False)
    assert output.exit_code([ok]) == 0
    assert output.exit_code([ok, ok]) == 0
    assert output.exit_code([ok, failed]) == 1
    assert output.exit_code([failed]) == 1
    assert output.exit_code([ok, unanswered]) == 2
    assert output.exit_code([failed, unanswered]) == 2
    assert output.exit_code([]) == 2


def test_the_no_answer_message_names_where_the_operator_should_watch() -> None:
    unanswered = [
        Outcome("team", "a", connection("a", None), answered=False),
        Outcome("ops", "b", connection("b", None), answered=False),
        Outcome("done", "c", connection("c", "Connected")),
    ]
    assert output.no_answer_hint(unanswered[:1], 60.0) == (
        "no operator answered within 60s: is it running and watching namespace team?"
    )
    assert output.no_answer_hint(unanswered, 1.5) == (
        "no operator answered within 1.5s: is it running and watching namespaces ops, team?"
    )


# --- API errors --------------------------------------------------------------------------------


def api_error(status: int, message: str | None = None) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps({"kind": "Status", "message": message}) if message else None
    return exc


class FakeConfiguration:
    host = "https://api.example:6443"


class FakeApiClient:
    configuration = FakeConfiguration()


def error_message(exc: BaseException, name: str | None = "orders") -> str:
    cluster = Cluster(api=FakeApiClient(), namespace="team")
    with pytest.raises(CommandError) as raised, _Errors(cluster, "team", name):
        raise exc
    return str(raised.value)


def test_api_errors_are_told_in_words() -> None:
    assert error_message(api_error(404, 'warehouseconnections "orders" not found')) == (
        'warehouseconnection "orders" not found in namespace "team"'
    )
    no_crd = error_message(api_error(404, "the server could not find the requested resource"))
    assert "serves no WarehouseConnections (is the CRD installed?" in no_crd
    forbidden = error_message(
        api_error(403, 'User "dev" cannot patch resource "warehouseconnections"')
    )
    assert forbidden.startswith('no permission in namespace "team": User "dev" cannot patch')
    assert "get, list, watch and patch" in forbidden
    assert "did not accept the credentials" in error_message(api_error(401))
    assert error_message(api_error(500)) == (
        "the Kubernetes API at https://api.example:6443 answered HTTP 500"
    )
    refused = error_message(ConnectionRefusedError(111, "refused"))
    assert refused == ("cannot reach the Kubernetes API at https://api.example:6443: refused")


# --- logging in --------------------------------------------------------------------------------


def kubeconfig(path: Path, server: str, contexts: dict[str, str | None], current: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "kube-token-canary"}}],
        "contexts": [
            {
                "name": n,
                "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})},
            }
            for n, ns in contexts.items()
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_current_context_gives_the_namespace(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "k", "http://127.0.0.1:1", {"dev": "team", "prod": None}, "dev")
    cluster = connect(str(path), None, {})
    assert cluster.namespace == "team"
    assert cluster.server == "http://127.0.0.1:1"
    cluster.close()
    other = connect(str(path), "prod", {})
    assert other.namespace == "default"
    other.close()


def test_kubeconfig_lists_are_merged_as_kubectl_merges_them(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", "http://127.0.0.1:1", {"dev": "team"}, "dev")
    second = tmp_path / "b"
    second.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c2", "cluster": {"server": "http://127.0.0.1:2"}}],
                "users": [{"name": "u2", "user": {"token": "t2"}}],
                "contexts": [
                    {"name": "ops", "context": {"cluster": "c2", "user": "u2", "namespace": "ops"}}
                ],
            }
        )
    )
    cluster = connect(None, "ops", {"KUBECONFIG": f"{first}:{second}"})
    assert (cluster.server, cluster.namespace) == ("http://127.0.0.1:2", "ops")
    cluster.close()


def test_an_unknown_context_is_an_error(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "k", "http://127.0.0.1:1", {"dev": "team"}, "dev")
    with pytest.raises(CommandError, match='context "nope" is not in the kubeconfig'):
        connect(str(path), "nope", {})


def test_without_a_kubeconfig_the_service_account_is_used(tmp_path: Path) -> None:
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("sa-token-canary\n")
    (account / "namespace").write_text("ops\n")
    environ = {
        "KUBECONFIG": str(tmp_path / "missing"),
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "WHC_SERVICE_ACCOUNT_DIR": str(account),
    }
    cluster = connect(None, None, environ)
    assert (cluster.server, cluster.namespace) == ("https://10.0.0.1:443", "ops")
    assert cluster.api.configuration.api_key == {"authorization": "sa-token-canary"}
    cluster.close()


def test_an_unreachable_api_exits_2_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kubeconfig(tmp_path / "k", "http://127.0.0.1:1", {"dev": "team"}, "dev")
    assert main(["test", "orders", "--kubeconfig", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "warehouse-operator test: cannot reach the Kubernetes API at http://127.0.0.1:1: "
        "Connection refused\n"
    )
    assert "kube-token-canary" not in captured.err


def test_the_package_installs_the_kubectl_plugin() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["kubectl-whc"]
    assert target == "warehouse_operator.ondemand.command:kubectl_main"
    # kubectl finds a plugin by its file name: kubectl-whc serves `kubectl whc`
    assert command.kubectl_parser().prog == "kubectl whc"


def test_a_broken_kubeconfig_is_an_error_that_quotes_none_of_it(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("users: [{name: u, user: {token: kube-token-canary}\n")
    with pytest.raises(CommandError) as raised:
        connect(str(path), None, {})
    assert str(raised.value) == f"cannot use the kubeconfig: {path} is not valid YAML"
