"""Every ring module except the trio driver is sans-IO (tests/test_sans_io.py names three of them; this
covers the rest of the package as it grows)."""

from __future__ import annotations

import pathlib

import pytest

from tests.test_sans_io import FORBIDDEN, imported_roots

RING = pathlib.Path(__file__).resolve().parents[2] / "borough" / "ring"
CORES = [p for p in sorted(RING.glob("*.py")) if "driver" not in p.name]


def test_the_package_has_the_expected_cores() -> None:
    names = {p.name for p in CORES}
    assert {"hashring.py", "membership.py", "placement.py", "messages.py", "members.py"} <= names


@pytest.mark.parametrize("path", CORES, ids=lambda p: p.name)
def test_ring_core_module_is_sans_io(path: pathlib.Path) -> None:
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"ring/{path.name} imports {sorted(bad)}: cores take time and I/O from drivers"
