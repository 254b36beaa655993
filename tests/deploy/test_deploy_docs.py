"""docs/INSTALL.md keeps up with what it documents."""

from __future__ import annotations

import re

import yaml

from tests.deploy.conftest import CHART, ROOT
from warehouse_operator import settings as settings_mod

GUIDE = ROOT / "docs" / "INSTALL.md"


def test_every_setting_is_in_the_guide() -> None:
    guide = GUIDE.read_text()
    missing = [o.env for o in settings_mod.OPTIONS if f"`{o.env}`" not in guide]
    assert missing == []


def test_helm_values_named_in_the_guide_exist() -> None:
    # Every `a.b` value path the configuration table names is a value of the chart.
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    table = GUIDE.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[3] for line in table.splitlines() if line.startswith("| `WHC_")]
    paths = {p for row in rows for p in re.findall(r"`([a-zA-Z]+(?:\.[a-zA-Z]+)*)`", row)}
    assert paths
    for path in paths:
        node = defaults
        for part in path.split("."):
            assert isinstance(node, dict), path
            assert part in node, f"the guide names {path}, which the chart does not have"
            node = node[part]


def test_guide_yaml_examples_parse() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4
    for block in blocks:
        docs = list(yaml.safe_load_all(block))
        assert docs
