"""``warehouse-operator test`` and ``kubectl-whc test | status`` as a person runs them: real
processes, against the real operator process and a Kubernetes API (the emulator, or the
cluster of ``WHC_E2E_KUBECONFIG``)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.kube_cluster import TEST_REQUESTED_ANNOTATION
from tests.support.kube_e2e import E2E
from tests.support.kube_operator import REPO_ROOT, operator_command

pytestmark = pytest.mark.e2e


def kubectl_whc_command() -> list[str]:
    """The plugin's console script beside the interpreter, else its module."""
    script = Path(sys.executable).parent / "kubectl-whc"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "warehouse_operator.ondemand.command"]


def run(e2e: E2E, command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WHC_", "KUBERNETES_")) and key != "KUBECONFIG"
    }
    env["KUBECONFIG"] = str(e2e.target.kubeconfig)
    done = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    for text in (done.stdout, done.stderr):
        assert e2e.redact(text) == text, "a Secret value was printed"
    return done


def test_test_waits_for_its_own_test_and_prints_it(e2e: E2E) -> None:
    e2e.create_pg_secret("pg")
    e2e.ns.create_connection("orders", e2e.postgres_spec("pg"))
    first = e2e.wait_for_phase("orders", "Connected")["status"]["lastTestedAt"]

    done = run(e2e, operator_command(), "test", "orders", "-n", e2e.ns.name, "--timeout", "30s")

    assert done.returncode == 0, done.stderr
    assert f"WarehouseConnection {e2e.ns.name}/orders (postgres)" in done.stdout
    assert "status:    Connected" in done.stdout
    assert "latency:" in done.stdout
    assert "checks:" in done.stdout
    assert "query" in done.stdout
    obj = e2e.ns.get_connection("orders")
    asked = obj["metadata"]["annotations"][TEST_REQUESTED_ANNOTATION]
    assert obj["status"]["lastHandledTestRequest"] == asked
    assert obj["status"]["lastTestedAt"] >= first

    # the plugin, as JSON: the status of exactly the test it asked for
    done = run(e2e, kubectl_whc_command(), "test", "orders", "-n", e2e.ns.name, "-o", "json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["metadata"] == {"name": "orders", "namespace": e2e.ns.name}
    assert printed["status"]["phase"] == "Connected"
    again = e2e.ns.get_connection("orders")
    assert again["metadata"]["annotations"][TEST_REQUESTED_ANNOTATION] != asked
    assert (
        printed["status"]["lastHandledTestRequest"]
        == again["metadata"]["annotations"][TEST_REQUESTED_ANNOTATION]
    )


def test_a_wrong_password_exits_1_with_the_reason(e2e: E2E) -> None:
    canary = "canary-" + secrets.token_hex(16)
    e2e.create_pg_secret("pg", password=canary)
    e2e.ns.create_connection("orders", e2e.postgres_spec("pg"))
    e2e.wait_for_authentication_failure("orders")

    done = run(e2e, kubectl_whc_command(), "test", "orders", "-n", e2e.ns.name)

    assert done.returncode == 1, done.stderr
    assert "status:    Failed" in done.stdout
    assert "reason:    AuthenticationFailed" in done.stdout
    assert "Failed" in done.stdout.split("checks:")[1]
    assert canary not in done.stdout + done.stderr

    status = run(e2e, kubectl_whc_command(), "status", "-n", e2e.ns.name)
    assert status.returncode == 0, status.stderr
    header, line = status.stdout.splitlines()
    assert header.split() == [
        "NAMESPACE", "NAME", "PROVIDER", "STATUS", "REASON", "LATENCY", "MESSAGE"
    ]  # fmt: skip
    message = " ".join(e2e.ns.status("orders")["message"].split())
    assert line.split()[:5] == [e2e.ns.name, "orders", "postgres", "Failed", "AuthenticationFailed"]
    assert line.endswith(message)  # the whole message, uncut


def test_a_missing_connection_exits_2_saying_so(e2e: E2E) -> None:
    done = run(e2e, operator_command(), "test", "nope", "-n", e2e.ns.name)

    assert done.returncode == 2
    assert done.stdout == ""
    assert (
        f'warehouse-operator test: warehouseconnection "nope" not found in namespace '
        f'"{e2e.ns.name}"' in done.stderr
    )


def test_without_an_operator_it_gives_up_after_the_timeout(e2e: E2E) -> None:
    e2e.operator.stop()
    e2e.create_pg_secret("pg")
    e2e.ns.create_connection("orders", e2e.postgres_spec("pg"))

    done = run(e2e, kubectl_whc_command(), "test", "orders", "-n", e2e.ns.name, "--timeout", "2s")

    assert done.returncode == 2
    assert done.stdout == ""  # the status there is an older test's, not an answer
    assert (
        "kubectl whc test: no operator answered within 2s: is it running and watching "
        f"namespace {e2e.ns.name}?"
    ) in done.stderr
    # the request stays, for the operator to handle when it comes back
    annotations = e2e.ns.get_connection("orders")["metadata"]["annotations"]
    assert TEST_REQUESTED_ANNOTATION in annotations


def test_all_tests_every_connection_and_prints_a_table(e2e: E2E) -> None:
    e2e.create_pg_secret("pg")
    for name in ("orders", "billing"):
        e2e.ns.create_connection(name, e2e.postgres_spec("pg"))
        e2e.wait_for_phase(name, "Connected")

    done = run(e2e, operator_command(), "test", "--all", "-n", e2e.ns.name, "--timeout", "30s")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "PROVIDER",
        "STATUS",
        "REASON",
        "LATENCY",
        "MESSAGE",
    ]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(rows) == {"orders", "billing"}
    for row in rows.values():
        assert row[0] == e2e.ns.name
        assert row[2:5] == ["postgres", "Connected", "Connected"]
        assert row[5].endswith("ms")
    for name in ("orders", "billing"):
        obj = e2e.ns.get_connection(name)
        asked = obj["metadata"]["annotations"][TEST_REQUESTED_ANNOTATION]
        assert obj["status"]["lastHandledTestRequest"] == asked


def test_a_selector_picks_what_is_tested_and_one_failure_fails_the_run(e2e: E2E) -> None:
    e2e.create_pg_secret("pg")
    e2e.create_pg_secret("wrong", password="wrong-" + secrets.token_hex(8))
    # a label only this test's objects carry: -A must not reach anyone else's on a real cluster
    group = {"metadata": {"labels": {"whc-e2e-group": e2e.ns.name}}}
    for name, secret in (("orders", "pg"), ("billing", "wrong"), ("other", "pg")):
        e2e.ns.create_connection(name, e2e.postgres_spec(secret))
        if name != "other":
            e2e.ns.patch_connection(name, group)
    e2e.wait_for_phase("other", "Connected")
    e2e.wait_for_authentication_failure("billing")
    before = e2e.ns.get_connection("other")["metadata"].get("annotations") or {}

    selector = f"whc-e2e-group={e2e.ns.name}"
    done = run(e2e, kubectl_whc_command(), "test", "-A", "-l", selector, "--timeout", "30s")

    assert done.returncode == 1, done.stderr
    rows = {line.split()[1]: line.split() for line in done.stdout.splitlines()[1:]}
    assert set(rows) == {"orders", "billing"}
    assert rows["orders"][3] == "Connected"
    assert rows["billing"][3:5] == ["Failed", "AuthenticationFailed"]
    after = e2e.ns.get_connection("other")["metadata"].get("annotations") or {}
    assert after.get(TEST_REQUESTED_ANNOTATION) == before.get(TEST_REQUESTED_ANNOTATION)

    status = run(e2e, kubectl_whc_command(), "status", "-A", "-l", selector)
    assert status.returncode == 0, status.stderr
    listed = [line.split()[:4] for line in status.stdout.splitlines()[1:]]
    assert listed == [
        [e2e.ns.name, "billing", "postgres", "Failed"],
        [e2e.ns.name, "orders", "postgres", "Connected"],
    ]
