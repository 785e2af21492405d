"""Every ring module except the trio driver is sans-IO. tests/test_sans_io.py names three of them; this
covers the whole package as it grows (same forbidden imports, checked on the syntax tree)."""

from __future__ import annotations

import ast
import pathlib

import pytest

RING = pathlib.Path(__file__).resolve().parents[2] / "borough" / "ring"
CORES = [p for p in sorted(RING.glob("*.py")) if "driver" not in p.name]
FORBIDDEN = {"trio", "socket", "plyvel", "asyncio", "time", "threading", "select", "selectors", "os"}


def imported_roots(path: pathlib.Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_package_has_the_expected_cores() -> None:
    names = {p.name for p in CORES}
    assert {"hashring.py", "membership.py", "placement.py", "messages.py", "members.py"} <= names


@pytest.mark.parametrize("path", CORES, ids=lambda p: p.name)
def test_ring_core_module_is_sans_io(path: pathlib.Path) -> None:
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"ring/{path.name} imports {sorted(bad)}: cores take time and I/O from drivers"
