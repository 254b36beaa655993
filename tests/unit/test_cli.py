"""``warehouse-operator check`` and ``crd`` on manifests that need no server."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from warehouse_operator.cli import configure_logging, main
from warehouse_operator.crd import crd_text

MANIFEST = """
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: team}
stringData: {username: app, password: Canary-Pw-123}
---
apiVersion: warehouse-operator.io/v1alpha1
kind: WarehouseConnection
metadata: {name: orders, namespace: team}
spec:
  provider: postgres
  credentialsSecretRef: {name: db}
  postgres: {host: 169.254.169.254, database: orders}
"""


def test_check_prints_the_status_it_would_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    assert main(["check", "-f", str(path)]) == 1
    out = capsys.readouterr().out
    doc = yaml.safe_load(out)
    assert doc["kind"] == "WarehouseConnection"
    assert doc["metadata"] == {"name": "orders", "namespace": "team"}
    assert doc["status"]["phase"] == "Failed"
    assert doc["status"]["reason"] == "DestinationDenied"
    assert [c["name"] for c in doc["status"]["checks"]] == ["spec", "credentials", "destination"]
    assert "Canary-Pw-123" not in out


def test_check_json_and_list_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = [d for d in yaml.safe_load_all(MANIFEST)]
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs}))
    assert main(["check", "-f", str(path), "-o", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"]["reason"] == "DestinationDenied"


def test_check_secret_in_another_namespace_is_not_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        MANIFEST.replace("namespace: team}\nstringData", "namespace: other}\nstringData")
    )
    assert main(["check", "-f", str(path)]) == 1
    assert yaml.safe_load(capsys.readouterr().out)["status"]["reason"] == "SecretNotFound"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("a: [unclosed", "not valid YAML"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n", "no WarehouseConnection"),
    ],
)
def test_check_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "m.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["check", "-f", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_check_bad_cidr_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    assert main(["check", "-f", str(path), "--egress-denied-cidrs", "nope"]) == 2
    assert "invalid CIDR" in capsys.readouterr().err


def test_crd_command_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    out = capsys.readouterr().out
    assert out == crd_text()
    assert (
        out
        == (
            Path(__file__).parents[2] / "crds" / "warehouseconnections.warehouse-operator.io.yaml"
        ).read_text()
    )


@pytest.mark.parametrize(
    ("user", "needed"),
    [
        ({"token": "abc"}, False),
        ({"client-certificate-data": "x", "client-key-data": "y"}, False),
        ({"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1beta1"}}, True),
        ({"auth-provider": {"name": "oidc"}}, True),
    ],
)
def test_client_library_only_for_plugin_logins(
    tmp_path: Path, user: dict[str, object], needed: bool
) -> None:
    from warehouse_operator.cli import _kubeconfig_needs_client_library

    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({"users": [{"name": "u", "user": user}]}))
    assert _kubeconfig_needs_client_library({"KUBECONFIG": str(path)}) is needed
    assert _kubeconfig_needs_client_library({"KUBECONFIG": str(tmp_path / "missing")}) is False


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_logs_name_loggers_in_full(root_logging: None) -> None:
    before = set(logging.getLogger().handlers)
    configure_logging("text", "INFO")
    added = [h for h in logging.getLogger().handlers if h not in before]
    assert len(added) == 1
    for name in ("warehouse_operator.scheduler", "kopf.activities.startup"):
        record = logging.LogRecord(name, logging.INFO, __file__, 1, "hello", None, None)
        line = added[0].format(record)
        assert f"] {name} [INFO" in line
        assert line.endswith("hello")
    assert logging.getLogger().level == logging.INFO
    assert logging.getLogger("kopf.objects").level == logging.WARNING


def test_run_usage_errors_exit_2_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHC_MAX_CONCURRENT_TESTS", "many")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "invalid WHC_MAX_CONCURRENT_TESTS" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--leader-elect=perhaps"])
    assert exit_info.value.code == 2
    assert "not a boolean" in capsys.readouterr().err
