"""End-to-end fixtures: the real operator process against a Kubernetes API.

By default the API is kmock's emulator (``tests.support.kubeapi``), started once per session
in its own process. With ``WHC_E2E_KUBECONFIG=/path/to/kubeconfig`` the same tests run against
that cluster instead: the CRD from ``crds/`` is applied when missing, and each test gets its own
namespace (``whc-e2e-<random>``), deleted afterwards. Either way the operator runs here, as a
subprocess, so the PostgreSQL server the tests start on 127.0.0.1 is reachable from it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube_cluster import Kube, Namespace, delete_namespace, ensure_crd, new_namespace
from tests.support.kube_e2e import E2E, KubeTarget
from tests.support.kube_operator import OperatorProcess
from tests.support.kubeapi import KubeAPIServer, crd_documents
from tests.support.pgserver import PostgresServer

KUBECONFIG_ENV = "WHC_E2E_KUBECONFIG"


@pytest.fixture(scope="session")
def kube_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeTarget]:
    configured = os.environ.get(KUBECONFIG_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise pytest.UsageError(f"{KUBECONFIG_ENV}={configured}: no such file")
        yield KubeTarget(kubeconfig=path, emulator=None)
        return
    workdir = tmp_path_factory.mktemp("kubeapi")
    with KubeAPIServer(workdir=workdir) as emulator:
        kubeconfig = emulator.write_kubeconfig(workdir / "kubeconfig")
        yield KubeTarget(kubeconfig=kubeconfig, emulator=emulator)


@pytest.fixture(scope="session")
def kube(kube_target: KubeTarget) -> Iterator[Kube]:
    client = Kube.connect(kube_target.kubeconfig)
    crds = crd_documents()
    if not crds:
        raise RuntimeError("no CustomResourceDefinition in crds/")
    for crd in crds:
        ensure_crd(client, crd)
    yield client
    client.close()


@pytest.fixture
def e2e(
    request: pytest.FixtureRequest,
    kube: Kube,
    kube_target: KubeTarget,
    postgres: PostgresServer,
    tmp_path: Path,
) -> Iterator[E2E]:
    """A fresh namespace with a running operator that watches only it."""
    marker = request.node.get_closest_marker("operator_args")
    extra_args = tuple(marker.args) if marker is not None else ()
    namespace = Namespace(kube, new_namespace(kube))
    operator = OperatorProcess(
        kubeconfig=kube_target.kubeconfig,
        namespaces=[namespace.name],
        log_file=tmp_path / "operator.log",
        extra_args=extra_args,
    )
    world = E2E(ns=namespace, operator=operator, pg=postgres, target=kube_target)
    operator.start()
    try:
        yield world
    finally:
        exit_code = operator.stop()
        try:
            call_report = getattr(request.node, "report_call", None)
            if call_report is not None and call_report.failed:
                sys.stderr.write(world.diagnostics() + "\n")
            # every test doubles as a leak test: no Secret value anywhere the operator writes
            world.assert_no_secret_leaks()
            # and as a robustness test: no crash, no unexpected exception, a clean exit
            assert exit_code in (0, None), (
                f"the operator exited with {exit_code}\n{world.diagnostics()}"
            )
            if request.node.get_closest_marker("operator_tracebacks_expected") is None:
                assert "Traceback" not in operator.log_text(), (
                    f"the operator logged an exception\n{world.diagnostics()}"
                )
        finally:
            delete_namespace(kube, namespace.name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "operator_args(*args): extra flags for `warehouse-operator run`"
    )
    config.addinivalue_line(
        "markers",
        "operator_tracebacks_expected: the test provokes failures the operator may log with a traceback",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)
