"""The documentation builds with ``mkdocs build --strict``: a broken reference or a page missing from the nav
fails it, and the API reference is generated from the docstrings it names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("open_node") > 0


def test_the_benchmarks_page_covers_every_benchmark() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
    assert scripts and [s for s in scripts if f"bench/{s}" not in page] == []
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "benchmarks.md" in nav
