"""How GitOps tools read a WarehouseConnection's status.

- Argo CD: deploy/argocd/health.lua, run in Lua 5.1 (Argo CD's gopher-lua speaks 5.1) on status
  objects made by the operator's own status computation.
- Flux (and `kubectl`'s kstatus users): kstatus's documented rules for custom resources,
  implemented below, read the same objects.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
import yaml
from lupa import lua51

from tests.deploy.conftest import NOW, ROOT
from warehouse_operator.models import GROUP, KIND, VERSION, Check, CheckResult, ProbeResult, Reason
from warehouse_operator.status import compute_status, pending_status, rfc3339

HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"
ARGOCD_CM = ROOT / "deploy" / "argocd" / "argocd-cm.yaml"


# --- status objects, as the operator writes them ------------------------------------------------


def result(reason: Reason, message: str) -> ProbeResult:
    ok = reason is Reason.CONNECTED
    checks = (
        Check(name="credentials", result=CheckResult.PASSED, duration_ms=0),
        Check(
            name="connect",
            result=CheckResult.PASSED if ok else CheckResult.FAILED,
            message="" if ok else message,
            duration_ms=7,
        ),
    )
    return ProbeResult(
        reason=reason,
        message=message,
        latency_ms=7 if ok else None,
        server_version="PostgreSQL 15.18" if ok else None,
        checks=checks,
    )


def connection(
    status: Mapping[str, Any] | None, *, generation: int = 1, suspend: bool = False
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "analytics", "namespace": "team-a", "generation": generation},
        "spec": {
            "provider": "postgres",
            "credentialsSecretRef": {"name": "analytics-db"},
            "postgres": {"host": "db.team-a.svc", "database": "analytics"},
        },
    }
    if suspend:
        obj["spec"]["suspend"] = True
    if status is not None:
        obj["status"] = dict(status)
    return obj


def after_test(
    reason: Reason, message: str, old: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    status, _ = compute_status(
        old, result(reason, message), generation=1, now=NOW, test_request=None
    )
    return status


CONNECTED = after_test(Reason.CONNECTED, "Connected to PostgreSQL 15.18 in 7 ms.")
UNREACHABLE = after_test(Reason.UNREACHABLE, "Connection refused by db.team-a.svc:5432.")
SECRET_MISSING = after_test(Reason.SECRET_NOT_FOUND, "Secret team-a/analytics-db does not exist.")
BAD_KEY = after_test(Reason.INVALID_CREDENTIALS, "The private key is not valid PEM.")

# What the operator writes for a new connection before its first test ends.
PENDING = pending_status(None, generation=1, now=NOW)

# name: (object, Argo CD health, kstatus status)
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "connected": (connection(CONNECTED), "Healthy", "Current"),
    "no status yet": (connection(None), "Progressing", "Current"),
    "test pending": (connection(PENDING), "Progressing", "InProgress"),
    "spec changed, not yet tested": (
        connection(CONNECTED, generation=2),
        "Progressing",
        "InProgress",
    ),
    "unreachable (retried)": (connection(UNREACHABLE), "Degraded", "Current"),
    "Secret missing (stalled)": (connection(SECRET_MISSING), "Degraded", "Failed"),
    "bad key (stalled)": (connection(BAD_KEY), "Degraded", "Failed"),
    "suspended": (connection(CONNECTED, suspend=True), "Suspended", "Current"),
    "reconnected after failures": (
        connection(after_test(Reason.CONNECTED, "Connected again.", old=UNREACHABLE)),
        "Healthy",
        "Current",
    ),
}


def test_status_objects_are_the_operators() -> None:
    # Guard the fixtures: they carry the conditions the tools key on.
    types = {c["type"]: c["status"] for c in CONNECTED["conditions"]}
    assert types == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert {c["type"]: c["status"] for c in SECRET_MISSING["conditions"]}["Stalled"] == "True"
    assert {c["type"]: c["status"] for c in UNREACHABLE["conditions"]}["Stalled"] == "False"
    assert CONNECTED["observedGeneration"] == 1


# --- Argo CD ------------------------------------------------------------------------------------


def _without_nulls(value: Any) -> Any:
    """JSON null reaches Argo CD's Lua as an absent field."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def argocd_health(obj: Mapping[str, Any], script: str | None = None) -> dict[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)
    # Only the base, string and table libraries, as in Argo CD's sandbox.
    lua.execute("os = nil; io = nil; require = nil; dofile = nil; loadfile = nil; debug = nil")
    lua.globals().obj = lua.table_from(_without_nulls(obj), recursive=True)
    hs = lua.execute(script if script is not None else HEALTH_LUA.read_text())
    return {"status": hs["status"], "message": hs["message"]}


@pytest.mark.parametrize("case", list(CASES))
def test_argocd_health(case: str) -> None:
    obj, expected, _ = CASES[case]
    health = argocd_health(obj)
    assert health["status"] == expected
    assert health["message"]


def test_argocd_messages_are_the_operators() -> None:
    assert argocd_health(connection(SECRET_MISSING))["message"] == SECRET_MISSING["message"]
    assert argocd_health(connection(UNREACHABLE))["message"] == UNREACHABLE["message"]
    assert "generation 2" in argocd_health(connection(CONNECTED, generation=2))["message"]


def test_argocd_health_without_conditions_reads_the_phase() -> None:
    for phase, expected in (
        ("Connected", "Healthy"),
        ("Failed", "Degraded"),
        ("Pending", "Progressing"),
    ):
        status = {"phase": phase, "message": "m", "observedGeneration": 1}
        assert argocd_health(connection(status))["status"] == expected


def test_argocd_cm_carries_the_health_check_verbatim() -> None:
    config = yaml.safe_load(ARGOCD_CM.read_text())
    assert (config["kind"], config["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    key = f"resource.customizations.health.{GROUP}_{KIND}"
    assert config["data"][key] == HEALTH_LUA.read_text()
    ignore = yaml.safe_load(
        config["data"][
            "resource.customizations.ignoreDifferences."
            "admissionregistration.k8s.io_ValidatingWebhookConfiguration"
        ]
    )
    assert ignore == {"jqPathExpressions": [".webhooks[]?.clientConfig.caBundle"]}
    # The embedded copy is what runs: it gives the same answers.
    obj, expected, _ = CASES["Secret missing (stalled)"]
    assert argocd_health(obj, config["data"][key])["status"] == expected


# --- kstatus (Flux) -----------------------------------------------------------------------------


def kstatus(obj: Mapping[str, Any]) -> str:
    """kstatus's rules for a kind it has no special rules for (cli-utils, pkg/kstatus/status).

    1. metadata.deletionTimestamp set: Terminating.
    2. status.observedGeneration present and different from metadata.generation: InProgress.
    3. the first condition that is Reconciling=True (InProgress) or Stalled=True (Failed).
    4. otherwise: Current.
    """
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Reconciling" and cond.get("status") == "True":
            return "InProgress"
        if cond.get("type") == "Stalled" and cond.get("status") == "True":
            return "Failed"
    return "Current"


@pytest.mark.parametrize("case", list(CASES))
def test_kstatus(case: str) -> None:
    obj, _, expected = CASES[case]
    assert kstatus(obj) == expected


def test_kstatus_terminating() -> None:
    obj = copy.deepcopy(connection(CONNECTED))
    obj["metadata"]["deletionTimestamp"] = rfc3339(NOW + timedelta(minutes=1))
    assert kstatus(obj) == "Terminating"


def test_kubectl_wait_for_ready() -> None:
    # `kubectl wait --for=condition=Ready` waits for a Ready condition with status True.
    def ready(obj: Mapping[str, Any]) -> bool:
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    assert [name for name, (obj, _, _) in CASES.items() if ready(obj)] == [
        "connected",
        "spec changed, not yet tested",
        "suspended",
        "reconnected after failures",
    ]
