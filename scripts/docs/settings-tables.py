"""Write the settings tables of README.md and docs/INSTALL.md from the declarations in
``warehouse_operator.settings`` (``make docs``; tests/unit/test_settings.py fails while they differ).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from warehouse_operator.settings import markdown_env_table, markdown_flags_table

ROOT = Path(__file__).resolve().parents[2]
SECTION = re.compile(r"(<!-- settings: begin.*?-->\n)(.*?)(<!-- settings: end -->)", re.DOTALL)


def main() -> int:
    for path, table in (
        (ROOT / "README.md", markdown_flags_table()),
        (ROOT / "docs" / "INSTALL.md", markdown_env_table()),
    ):
        text = path.read_text()
        found = SECTION.search(text)
        if found is None:
            print(f"{path}: no settings section", file=sys.stderr)
            return 1
        updated = text[: found.start(2)] + table + text[found.end(2) :]
        if updated != text:
            path.write_text(updated)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
