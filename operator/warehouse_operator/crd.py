"""The WarehouseConnection CustomResourceDefinition, as packaged with the operator.

``data/crd.yaml`` is a copy of ``crds/warehouseconnections.warehouse-operator.io.yaml`` (the
source; ``make crd`` copies it, tests check the copies), so ``warehouse-operator crd`` prints
exactly what ``kubectl apply -f crds/`` applies.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import yaml

CRD_RESOURCE = "data/crd.yaml"


def crd_text() -> str:
    """The CRD manifest, byte for byte as shipped."""
    return files("warehouse_operator").joinpath(CRD_RESOURCE).read_text(encoding="utf-8")


def crd_object() -> dict[str, Any]:
    """The CRD manifest parsed into a dictionary."""
    loaded = yaml.safe_load(crd_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{CRD_RESOURCE} does not hold a YAML mapping")
    return loaded
