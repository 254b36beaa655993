"""What an end-to-end test does to a Kubernetes API, through the official ``kubernetes`` client.

The same calls work against the emulator (``tests.support.kubeapi``) and a real cluster.
``Namespace`` is one test's namespace: it creates Secrets and WarehouseConnections, patches
and annotates them, polls their status, lists their events, and remembers every value it put
into a Secret so that a test can prove none of them ever shows up anywhere else.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.encoding import b64

GROUP = "warehouse-operator.io"
VERSION = "v1alpha1"
PLURAL = "warehouseconnections"
KIND = "WarehouseConnection"
TEST_REQUESTED_ANNOTATION = f"{GROUP}/test-requested-at"


@dataclass
class Kube:
    api_client: Any
    core: Any
    custom: Any
    apiext: Any

    @classmethod
    def connect(cls, kubeconfig: Path) -> Kube:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        return cls(
            api_client=api_client,
            core=client.CoreV1Api(api_client),
            custom=client.CustomObjectsApi(api_client),
            apiext=client.ApiextensionsV1Api(api_client),
        )

    def close(self) -> None:
        self.api_client.close()


def ensure_crd(kube: Kube, crd: Mapping[str, Any], timeout: float = 60.0) -> bool:
    """Create the CRD unless it exists; wait until it is Established. True when created here."""
    name = crd["metadata"]["name"]
    created = False
    try:
        kube.apiext.read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
        kube.apiext.create_custom_resource_definition(dict(crd))
        created = True
    deadline = time.monotonic() + timeout
    while True:
        raw = kube.api_client.sanitize_for_serialization(
            kube.apiext.read_custom_resource_definition(name)
        )
        conditions = (raw.get("status") or {}).get("conditions")
        if conditions is None:
            return created  # the emulator keeps no status for CRDs: nothing to wait for
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return created
        if time.monotonic() > deadline:
            raise AssertionError(
                f"CRD {name} is not Established after {timeout:.0f}s: {conditions}"
            )
        time.sleep(0.5)


def new_namespace(kube: Kube, prefix: str = "whc-e2e") -> str:
    name = f"{prefix}-{secrets.token_hex(4)}"
    kube.core.create_namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/part-of": "warehouse-operator-e2e"},
            },
        }
    )
    return name


def delete_namespace(kube: Kube, name: str) -> None:
    try:
        kube.core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Namespace:
    kube: Kube
    name: str
    # every value ever stored in a Secret here (decoded), for leak checks
    secret_values: set[str] = field(default_factory=set)

    # -- Secrets ------------------------------------------------------------------------------------

    def _remember(self, data: Mapping[str, str]) -> dict[str, str]:
        encoded = {}
        for key, value in data.items():
            self.secret_values.add(value)
            encoded[key] = b64(value)
        return encoded

    def create_secret(
        self, name: str, data: Mapping[str, str], labels: Mapping[str, str] | None = None
    ) -> None:
        """A Secret with ``data`` given in clear text (it is base64-encoded here)."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": dict(labels or {})},
            "type": "Opaque",
            "data": self._remember(data),
        }
        self.kube.core.create_namespaced_secret(self.name, body)

    def update_secret(self, name: str, data: Mapping[str, str]) -> None:
        """Merge ``data`` (clear text) into the Secret's data."""
        self.kube.core.patch_namespaced_secret(name, self.name, {"data": self._remember(data)})

    def delete_secret(self, name: str) -> None:
        self.kube.core.delete_namespaced_secret(name, self.name)

    # -- WarehouseConnections ---------------------------------------------------------------

    def create_connection(
        self, name: str, spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name},
            "spec": dict(spec),
        }
        if annotations:
            body["metadata"]["annotations"] = dict(annotations)
        created: dict[str, Any] = self.kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.name, PLURAL, body
        )
        return created

    def get_connection(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.kube.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.name, PLURAL, name
        )
        return obj

    def connection_exists(self, name: str) -> bool:
        try:
            self.get_connection(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get_connection(name).get("status") or {})

    def patch_connection(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the object (``spec``, ``metadata``)."""
        obj: dict[str, Any] = self.kube.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.name, PLURAL, name, dict(patch)
        )
        return obj

    def patch_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self.patch_connection(name, {"spec": dict(spec)})

    def annotate(self, name: str, key: str, value: str | None) -> dict[str, Any]:
        return self.patch_connection(name, {"metadata": {"annotations": {key: value}}})

    def request_test(self, name: str) -> str:
        """What ``kubectl annotate whc NAME warehouse-operator.io/test-requested-at=...`` does."""
        value = now_rfc3339()
        self.annotate(name, TEST_REQUESTED_ANNOTATION, value)
        return value

    def delete_connection(self, name: str) -> None:
        self.kube.custom.delete_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL, name)

    def list_connections(self) -> list[dict[str, Any]]:
        listed = self.kube.custom.list_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL)
        return list(listed.get("items") or [])

    # -- events -----------------------------------------------------------------------------

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Core v1 events in the namespace (about connection ``name`` if given), oldest first."""
        listed = self.kube.core.list_namespaced_event(self.name)
        found = []
        for item in listed.items:
            raw = self.kube.api_client.sanitize_for_serialization(item)
            involved = raw.get("involvedObject") or {}
            if name is not None and (involved.get("kind") != KIND or involved.get("name") != name):
                continue
            found.append(raw)
        found.sort(key=_event_order)
        return found

    def event_reasons(self, name: str) -> list[tuple[str, str]]:
        """(type, reason) of each event about ``name``; a repeated event counts ``count`` times."""
        pairs: list[tuple[str, str]] = []
        for event in self.events(name):
            pairs += [(event.get("type", ""), event.get("reason", ""))] * int(
                event.get("count") or 1
            )
        return pairs

    # -- waiting ----------------------------------------------------------------------------

    def wait_for(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 20.0,
        interval: float = 0.1,
        what: str = "the expected status",
        diagnostics: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Poll GET until ``predicate(status)`` holds; return the whole object."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while True:
            try:
                last = self.get_connection(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                last = {}
            if last and predicate(dict(last.get("status") or {})):
                return last
            if time.monotonic() > deadline:
                extra = f"\n{diagnostics()}" if diagnostics is not None else ""
                raise AssertionError(
                    f"{self.name}/{name}: {what} not reached within {timeout:.0f}s; "
                    f"last status: {last.get('status')!r}{extra}"
                )
            time.sleep(interval)

    def wait_for_phase(
        self, name: str, phase: str, reason: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        def reached(status: dict[str, Any]) -> bool:
            return status.get("phase") == phase and (
                reason is None or status.get("reason") == reason
            )

        what = f"phase {phase}" + (f" with reason {reason}" if reason else "")
        return self.wait_for(name, reached, what=what, **kwargs)


def _event_order(event: Mapping[str, Any]) -> tuple[str, int]:
    """Oldest first: timestamps have one-second resolution, resourceVersions break the ties."""
    when = event.get("firstTimestamp") or event.get("eventTime") or ""
    version = str((event.get("metadata") or {}).get("resourceVersion") or "")
    return str(when), int(version) if version.isdigit() else 0


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for item in status.get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def leaks(values: Iterable[str], texts: Mapping[str, str]) -> list[str]:
    """Which of ``texts`` (by label) contain one of ``values``, in clear or base64 form."""
    found = []
    for value in values:
        if len(value) < 8:
            continue  # too short to tell from ordinary text (user names like "app")
        forms = {value, b64(value)}
        for label, text in texts.items():
            if any(form in text for form in forms):
                found.append(label)
    return sorted(set(found))


def assert_condition(
    status: Mapping[str, Any], kind: str, value: str, reason: str | None = None
) -> dict[str, Any]:
    """The condition ``kind`` is there with status ``value`` (and ``reason``); returns it."""
    found = condition(status, kind)
    assert found is not None, f"no {kind} condition in {status.get('conditions')!r}"
    assert found["status"] == value, f"{kind} is {found['status']}, not {value}: {found!r}"
    if reason is not None:
        assert found["reason"] == reason, f"{kind} reason is {found['reason']}, not {reason}"
    assert found.get("lastTransitionTime"), f"{kind} has no lastTransitionTime"
    return found
