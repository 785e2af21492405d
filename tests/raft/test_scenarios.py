"""Golden scenario files (``testdata/*.txt``), in the style of etcd-io/raft's datadriven interaction tests.

Each file drives a deterministic cluster of cores with commands and records what they print. A mismatch fails
with a diff; ``BOROUGH_REWRITE=1`` rewrites the recordings instead (review the diff before committing it).
"""

from __future__ import annotations

import difflib
import os
import pathlib

import pytest

from .scenario import run_file

TESTDATA = pathlib.Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))
REWRITE = os.environ.get("BOROUGH_REWRITE") == "1"


def test_there_are_enough_scenarios() -> None:
    assert len(FILES) >= 25, f"only {len(FILES)} scenario files in {TESTDATA}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_scenario(path: pathlib.Path) -> None:
    expected = path.read_text()
    actual = run_file(path)
    if REWRITE:
        if actual != expected:
            path.write_text(actual)
        return
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True), actual.splitlines(keepends=True), "recorded", "actual", n=2
            )
        )
        pytest.fail(f"{path.name} does not match its recording (BOROUGH_REWRITE=1 rewrites it):\n{diff}")


def test_runner_is_deterministic() -> None:
    # Two runs of the same scenario print the same thing, or the recordings could not be compared at all.
    path = TESTDATA / "campaign.txt"
    assert run_file(path) == run_file(path)
