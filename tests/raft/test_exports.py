"""``borough.raft``'s package ``__init__`` imports nothing, so the store and the ring can name the log's
records without loading the Raft core (the layer test in tests/test_layers.py checks the rest)."""

from __future__ import annotations

import ast
import pathlib

import borough.raft as raft


def test_package_init_imports_nothing() -> None:
    tree = ast.parse(pathlib.Path(raft.__file__).read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert raft.__doc__ and "sans-IO" in raft.__doc__
