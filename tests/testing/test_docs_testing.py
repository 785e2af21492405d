"""docs/testing.md shows the inventory example's code; it must be the code CI runs."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_worked_example_in_the_docs_is_the_tested_code() -> None:
    doc = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    example = doc[doc.index("## Worked example") :]
    blocks = re.findall(r"```python\n(.*?)```", example, flags=re.S)
    assert len(blocks) >= 2
    source = (ROOT / "tests" / "testing" / "test_inventory_example.py").read_text(encoding="utf-8")
    for block in blocks:
        assert block in source, f"docs/testing.md shows code the inventory test lacks:\n{block}"


def test_the_schedule_test_quoted_in_the_docs_is_the_one_ci_runs() -> None:
    doc = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Scenarios and Hypothesis") : doc.index("## Worked example")]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert block in (ROOT / "tests" / "testing" / "test_sim_schedules.py").read_text(encoding="utf-8")
