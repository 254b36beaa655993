"""Fixtures of the packaging tests: the real tools, and the manifests they render.

The tools come from scripts/ci/install-deploy-tools.sh (a no-op once installed); the suite runs
it itself, so a fresh machine needs nothing else, and fails loudly when a tool cannot be had.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "warehouse-operator"
KUSTOMIZE_BASE = ROOT / "deploy" / "manifests"
CRD_FILE = "warehouseconnections.warehouse-operator.io.yaml"
TOOLBOX = Path(__file__).with_name("toolbox.py")

# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schemas known.
KUBE_VERSIONS = ["1.28.0", "1.37.0"]

RELEASE = "whc"
RELEASE_NAMESPACE = "warehouse-ops"

# The chart's variants the tests render: defaults; namespaced + HA + webhook (cert-manager);
# webhook with the certificate managed by the operator, failing open.
HELM_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced-ha-webhook": {
        "replicas": 2,
        "watchedNamespaces": ["team-a", "team-b"],
        "maxConcurrentTests": 20,
        "defaultTestInterval": "2m",
        "egress": {"allowedCIDRs": ["10.0.0.0/8"], "deniedCIDRs": ["169.254.0.0/16"]},
        "logging": {"format": "text", "level": "DEBUG"},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "webhook": {"enabled": True, "failurePolicy": "Fail"},
        "oneConnectionPerNamespace": True,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "webhook-self-managed": {
        "webhook": {"enabled": True, "failurePolicy": "Ignore", "certManager": {"enabled": False}},
    },
}


@dataclass(frozen=True)
class Tools:
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def kubectl(self) -> Path:
        return self.venv / "bin" / "kubectl"

    @property
    def hadolint(self) -> Path:
        return self.venv / "bin" / "hadolint"

    def toolbox(self, command: str, request: Mapping[str, Any]) -> Any:
        """Run one toolbox command in the tools' virtualenv; its JSON answer."""
        done = subprocess.run(
            [str(self.python), str(TOOLBOX), command],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise ToolError(done.stderr.strip().splitlines()[-1] if done.stderr else command)
        return json.loads(done.stdout)


class ToolError(Exception):
    """A tool refused its input (the message is its last line of errors)."""


@pytest.fixture(scope="session")
def tools() -> Tools:
    script = ROOT / "scripts" / "ci" / "install-deploy-tools.sh"
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{script.name} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return Tools(ROOT / ".cache" / "venvs" / "deploy-tools")


def load_documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


@pytest.fixture(scope="session")
def kustomize_docs(tools: Tools) -> list[dict[str, Any]]:
    """deploy/manifests rendered by the real kustomize (kubectl's)."""
    done = subprocess.run(
        [str(tools.kubectl), "kustomize", str(KUSTOMIZE_BASE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return load_documents(done.stdout)


@dataclass(frozen=True)
class HelmRender:
    files: dict[str, str]  # template path -> rendered text

    @property
    def documents(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for path, text in sorted(self.files.items()):
            if path.endswith(".yaml"):
                docs.extend(load_documents(text))
        return docs

    @property
    def notes(self) -> str:
        return next(t for p, t in self.files.items() if p.endswith("NOTES.txt"))


def helm_render(tools: Tools, values: Mapping[str, Any]) -> HelmRender:
    files = tools.toolbox(
        "helm-render",
        {"chart": str(CHART), "values": values, "name": RELEASE, "namespace": RELEASE_NAMESPACE},
    )
    return HelmRender(files)


@pytest.fixture(scope="session")
def helm_renders(tools: Tools) -> dict[str, HelmRender]:
    """Every variant in HELM_VARIANTS, rendered by Helm's own engine."""
    return {name: helm_render(tools, values) for name, values in HELM_VARIANTS.items()}


def of_kind(docs: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Mapping[str, Any] = containers[0]
    return result


def env_map(deployment: Mapping[str, Any], namespace: str) -> dict[str, str]:
    """The container's environment as the pod would see it (downward API namespace filled in)."""
    env: dict[str, str] = {}
    for item in container(deployment).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            assert field == "metadata.namespace", f"unexpected downward API field {field}"
            env[item["name"]] = namespace
    return env


def iter_rules(docs: Sequence[Mapping[str, Any]]) -> Iterator[tuple[Mapping[str, Any], Any]]:
    for doc in docs:
        if doc.get("kind") in ("Role", "ClusterRole"):
            for rule in doc.get("rules") or []:
                yield doc, rule


NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Rendered:
    """One way of installing: its manifests and the namespace the operator runs in."""

    name: str
    documents: list[dict[str, Any]]
    namespace: str


RENDERINGS = ["kustomize", *(f"helm:{variant}" for variant in HELM_VARIANTS)]


@pytest.fixture(scope="session")
def renderings(
    kustomize_docs: list[dict[str, Any]], helm_renders: dict[str, HelmRender]
) -> dict[str, Rendered]:
    found = {"kustomize": Rendered("kustomize", kustomize_docs, "warehouse-operator")}
    for variant, render in helm_renders.items():
        name = f"helm:{variant}"
        found[name] = Rendered(name, render.documents, RELEASE_NAMESPACE)
    return found


@pytest.fixture(params=RENDERINGS)
def rendered(request: pytest.FixtureRequest, renderings: dict[str, Rendered]) -> Rendered:
    return renderings[request.param]
