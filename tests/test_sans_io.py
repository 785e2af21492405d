"""The cores are sans-IO: the Raft core, the ring/membership/placement cores and the frame codec import no
trio, sockets, clocks, threads or plyvel. Drivers (modules named ``*driver*``) are exempt by design."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "borough"
FORBIDDEN = {"trio", "socket", "plyvel", "asyncio", "time", "threading", "select", "selectors", "os"}
CORE_DIRS = ["raft"]
CORE_FILES = ["ring/hashring.py", "ring/membership.py", "ring/placement.py", "wire/codec.py", "wire/events.py"]


def core_modules() -> list[pathlib.Path]:
    found: list[pathlib.Path] = []
    for d in CORE_DIRS:
        found += [p for p in sorted((ROOT / d).glob("*.py")) if "driver" not in p.name]
    found += [ROOT / f for f in CORE_FILES if (ROOT / f).exists()]
    return found


def imported_roots(path: pathlib.Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_is_sans_io(path: pathlib.Path) -> None:
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: cores take time and I/O from drivers"
