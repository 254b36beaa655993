"""One end-to-end test's world: a namespace, the operator watching it, a database, leak checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.kube_cluster import Namespace, assert_condition, leaks
from tests.support.kube_operator import OperatorProcess
from tests.support.kubeapi import KubeAPIServer
from tests.support.pgserver import PostgresServer

# the operator's start (~2 s here) plus a connection's first test
CONNECT_TIMEOUT = 30.0


@dataclass
class KubeTarget:
    """Where the tests' Kubernetes API is: the emulator (``emulator`` set) or a real cluster."""

    kubeconfig: Path
    emulator: KubeAPIServer | None

    @property
    def is_emulator(self) -> bool:
        return self.emulator is not None


@dataclass
class E2E:
    """One test's world: its namespace, its operator, the database, and leak checks."""

    ns: Namespace
    operator: OperatorProcess
    pg: PostgresServer
    target: KubeTarget
    extra_secret_values: set[str] = field(default_factory=set)

    def postgres_spec(self, secret: str, **overrides: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "provider": "postgres",
            "credentialsSecretRef": {"name": secret},
            "postgres": self.pg.postgres_spec(),
            "testInterval": "1h",
            "testTimeout": "10s",
        }
        spec.update(overrides)
        return spec

    # -- waiting, with this world's diagnostics in the failure ---------------------------------

    def wait_for(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = CONNECT_TIMEOUT,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``Namespace.wait_for``: the whole object once ``predicate(status)`` holds."""
        return self.ns.wait_for(
            name, predicate, timeout=timeout, diagnostics=self.diagnostics, **kwargs
        )

    def wait_for_phase(
        self,
        name: str,
        phase: str,
        reason: str | None = None,
        *,
        timeout: float = CONNECT_TIMEOUT,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``Namespace.wait_for_phase``: the whole object once it is in ``phase``."""
        return self.ns.wait_for_phase(
            name, phase, reason, timeout=timeout, diagnostics=self.diagnostics, **kwargs
        )

    def wait_for_authentication_failure(self, name: str) -> dict[str, Any]:
        """The status once the first test of ``name`` failed to authenticate: checked to be one
        failure so far, and Ready False for that reason."""
        obj = self.wait_for_phase(name, "Failed", "AuthenticationFailed")
        status: dict[str, Any] = obj["status"]
        assert status["consecutiveFailures"] == 1
        assert_condition(status, "Ready", "False", reason="AuthenticationFailed")
        return status

    def create_pg_secret(self, name: str, password: str | None = None, **extra: str) -> None:
        data = {
            "username": self.pg.user,
            "password": self.pg.password if password is None else password,
        }
        data.update(extra)
        self.ns.create_secret(name, data)

    # -- leak checks ------------------------------------------------------------------------

    def secret_values(self) -> set[str]:
        return (
            self.ns.secret_values
            | self.extra_secret_values
            | {self.pg.password, self.pg.superuser_password}
        )

    def observable_texts(self) -> dict[str, str]:
        """Everything the operator wrote that a person can read: its log, events, statuses."""
        texts = {"operator log": self.operator.log_text()}
        texts["events"] = json.dumps(self.ns.events(), default=str)
        texts["statuses"] = json.dumps([c.get("status") for c in self.ns.list_connections()])
        return texts

    def assert_no_secret_leaks(self) -> None:
        leaked = leaks(self.secret_values(), self.observable_texts())
        assert not leaked, f"a Secret value appears in: {', '.join(leaked)}"

    def redact(self, text: str) -> str:
        for value in self.secret_values():
            if len(value) >= 8:
                text = text.replace(value, "[SECRET]")
        return text

    def diagnostics(self) -> str:
        return self.redact(f"--- operator log (end):\n{self.operator.log_tail()}")
