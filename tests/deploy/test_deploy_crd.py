"""The chart, the kustomize base and the package carry the very CRD in crds/ (the one source)."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy.conftest import CHART, CRD_FILE, KUSTOMIZE_BASE, ROOT, one


def test_copies_are_identical_to_crds() -> None:
    source = (ROOT / "crds" / CRD_FILE).read_bytes()
    assert (KUSTOMIZE_BASE / "crds" / CRD_FILE).read_bytes() == source
    assert (CHART / "crds" / CRD_FILE).read_bytes() == source
    assert (ROOT / "operator" / "warehouse_operator" / "data" / "crd.yaml").read_bytes() == source
    # Nothing else in the copies: a CRD removed from crds/ must go from them too.
    for folder in (KUSTOMIZE_BASE / "crds", CHART / "crds", ROOT / "crds"):
        assert sorted(p.name for p in folder.iterdir()) == [CRD_FILE]


def test_sync_script_agrees() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "sync-crds.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_sync_script_notices_a_stale_copy(tmp_path: Any) -> None:
    # A throwaway tree with the script and a changed copy: --check must fail, a sync must fix it.
    for rel in ("deploy/sync-crds.sh", f"crds/{CRD_FILE}"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((ROOT / rel).read_bytes())
    stale = tmp_path / "deploy/manifests/crds" / CRD_FILE
    stale.parent.mkdir(parents=True)
    stale.write_text("# an older CRD\n")
    script = str(tmp_path / "deploy/sync-crds.sh")
    check = subprocess.run(["bash", script, "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 1
    assert "differs" in check.stderr
    subprocess.run(["bash", script], check=True, timeout=60)
    assert stale.read_bytes() == (ROOT / "crds" / CRD_FILE).read_bytes()
    packaged = tmp_path / "operator/warehouse_operator/data/crd.yaml"
    assert packaged.read_bytes() == stale.read_bytes()
    again = subprocess.run(["bash", script, "--check"], capture_output=True, check=False)
    assert again.returncode == 0


def test_kustomize_renders_the_crd_unchanged(kustomize_docs: list[dict[str, Any]]) -> None:
    source = yaml.safe_load((ROOT / "crds" / CRD_FILE).read_text())
    assert one(kustomize_docs, "CustomResourceDefinition") == source


def test_helm_templates_do_not_duplicate_the_crd(helm_renders: Any) -> None:
    # Helm installs crds/ itself (before the templates, never on upgrade or delete).
    for render in helm_renders.values():
        kinds = [d["kind"] for d in render.documents]
        assert "CustomResourceDefinition" not in kinds
