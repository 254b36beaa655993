"""The API behaviour the end-to-end tests and the operator rely on.

Against the emulator these check that it behaves like an API server where it matters; with
``WHC_E2E_KUBECONFIG`` the same assertions run against a real cluster, which keeps the
emulator honest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.support.kube_cluster import (
    GROUP,
    PLURAL,
    VERSION,
    Kube,
    Namespace,
    delete_namespace,
    new_namespace,
)
from tests.support.kube_e2e import KubeTarget

pytestmark = pytest.mark.e2e


@pytest.fixture
def ns(kube: Kube) -> Iterator[Namespace]:
    namespace = Namespace(kube, new_namespace(kube))
    try:
        yield namespace
    finally:
        delete_namespace(kube, namespace.name)


def _spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": "postgres",
        "credentialsSecretRef": {"name": "pg"},
        "postgres": {"host": "127.0.0.1", "port": 5432, "database": "appdb"},
    }
    spec.update(extra)
    return spec


def _patch_status(ns: Namespace, name: str, body: dict[str, Any]) -> dict[str, Any]:
    patched: dict[str, Any] = ns.kube.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns.name, PLURAL, name, body
    )
    return patched


def test_metadata_generation_and_status_subresource(ns: Namespace) -> None:
    created = ns.create_connection("c", _spec())
    meta = created["metadata"]
    assert meta["namespace"] == ns.name
    assert meta["uid"]
    assert meta["creationTimestamp"]
    assert meta["resourceVersion"]
    assert meta["generation"] == 1
    assert "status" not in created or not created["status"]

    # status writes go through the subresource and change neither spec nor generation
    written = _patch_status(ns, "c", {"status": {"phase": "Connected"}, "spec": {"suspend": True}})
    assert written["status"]["phase"] == "Connected"
    assert written["spec"]["suspend"] is False  # the schema default, unchanged
    assert written["metadata"]["generation"] == 1
    assert int(written["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    # metadata changes do not bump the generation; spec changes do; status is untouched by both
    annotated = ns.annotate("c", "example.com/a", "1")
    assert annotated["metadata"]["generation"] == 1
    changed = ns.patch_connection("c", {"spec": {"suspend": True}, "status": {"phase": "Failed"}})
    assert changed["metadata"]["generation"] == 2
    assert changed["status"]["phase"] == "Connected"

    # a merge patch with null removes a key
    removed = _patch_status(ns, "c", {"status": {"phase": None, "reason": "Connected"}})
    assert removed["status"] == {"reason": "Connected"}


def test_resource_version_precondition(ns: Namespace) -> None:
    created = ns.create_connection("c", _spec())
    ns.patch_spec("c", {"suspend": True})
    with pytest.raises(ApiException) as info:
        ns.patch_connection(
            "c",
            {
                "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                "spec": {"suspend": False},
            },
        )
    assert info.value.status == 409


def test_generate_name_and_events(ns: Namespace) -> None:
    body = {
        "metadata": {"generateName": "c."},
        "involvedObject": {"kind": "WarehouseConnection", "name": "c", "namespace": ns.name},
        "type": "Normal",
        "reason": "Connected",
        "message": "connected",
    }
    first = ns.kube.core.create_namespaced_event(ns.name, body)
    second = ns.kube.core.create_namespaced_event(ns.name, body)
    assert first.metadata.name.startswith("c.")
    assert first.metadata.name != second.metadata.name
    assert ns.event_reasons("c") == [("Normal", "Connected"), ("Normal", "Connected")]


def test_deleting_without_finalizers_is_immediate(ns: Namespace) -> None:
    ns.create_connection("c", _spec())
    ns.delete_connection("c")
    assert not ns.connection_exists("c")
    with pytest.raises(ApiException) as info:
        ns.delete_connection("c")
    assert info.value.status == 404


def test_watch_from_a_resource_version_sees_only_later_changes(ns: Namespace) -> None:
    ns.create_secret("old", {"password": "old-value-123"})
    listed = ns.kube.core.list_namespaced_secret(ns.name)
    since = listed.metadata.resource_version
    seen: list[tuple[str, str]] = []

    def changes() -> None:
        time.sleep(0.5)
        ns.create_secret("new", {"password": "new-value-123"})
        ns.update_secret("new", {"password": "newer-value-123"})
        ns.delete_secret("new")

    writer = threading.Thread(target=changes)
    writer.start()
    stream = watch.Watch().stream(
        ns.kube.core.list_namespaced_secret, ns.name, resource_version=since, timeout_seconds=3
    )
    for event in stream:
        name = event["object"].metadata.name
        if name in ("old", "new"):
            seen.append((event["type"], name))
    writer.join()
    assert seen == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "new")]


def test_label_selector(ns: Namespace) -> None:
    ns.create_secret("a", {"k": "value-aaaaaaaa"}, labels={"team": "data"})
    ns.create_secret("b", {"k": "value-bbbbbbbb"}, labels={"team": "web"})
    selected = ns.kube.core.list_namespaced_secret(ns.name, label_selector="team=data")
    assert [s.metadata.name for s in selected.items] == ["a"]
    selected = ns.kube.core.list_namespaced_secret(ns.name, label_selector="team in (data,web)")
    assert sorted(s.metadata.name for s in selected.items) == ["a", "b"]


def test_emulator_restart_keeps_objects(kube_target: KubeTarget, ns: Namespace) -> None:
    if kube_target.emulator is None:
        pytest.skip("restarts the API server: only possible with the emulator")
    created = ns.create_connection("c", _spec())
    kube_target.emulator.restart()
    again = ns.get_connection("c")
    assert again["metadata"]["uid"] == created["metadata"]["uid"]
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    later = ns.annotate("c", "example.com/a", "1")
    assert int(later["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_schema_defaults_and_pruning(ns: Namespace) -> None:
    created = ns.create_connection("c", _spec(unknownField="dropped"))
    spec = created["spec"]
    assert "unknownField" not in spec
    assert spec["postgres"]["sslMode"] == "prefer"
    assert spec["testTimeout"] == "10s"
    assert spec["suspend"] is False


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (_spec(postgres=None), "postgres"),  # CEL: spec.postgres is required for postgres
        (_spec(postgres={"host": "db", "port": 70000, "database": "x"}), "65535"),
        (_spec(testInterval="5 minutes"), "testInterval"),
        (_spec(provider="oracle"), "provider"),
    ],
)
def test_invalid_specs_are_rejected(ns: Namespace, spec: dict[str, Any], fragment: str) -> None:
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(ApiException) as info:
        ns.create_connection("c", spec)
    assert info.value.status == 422
    assert fragment in str(info.value.body)
    assert not ns.connection_exists("c")


def test_invalid_updates_are_rejected_status_included(ns: Namespace) -> None:
    ns.create_connection("c", _spec())
    with pytest.raises(ApiException) as info:
        ns.patch_spec("c", {"postgres": {"port": 0}})
    assert info.value.status == 422
    with pytest.raises(ApiException) as info:
        _patch_status(ns, "c", {"status": {"phase": "Unknown"}})
    assert info.value.status == 422
    assert ns.get_connection("c")["metadata"]["generation"] == 1
