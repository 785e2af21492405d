"""The store's module rules: one plyvel importer, trio only in the group committer, the public names."""

from __future__ import annotations

import ast
import pathlib

import borough.store

BOROUGH = pathlib.Path(__file__).resolve().parents[2] / "borough"


def imports(path: pathlib.Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_leveldb_module_is_the_only_plyvel_importer() -> None:
    importers = {str(p.relative_to(BOROUGH)) for p in BOROUGH.rglob("*.py") if "plyvel" in imports(p)}
    assert importers == {"store/leveldb.py"}


def test_only_the_group_committer_knows_trio() -> None:
    trio_users = {p.name for p in (BOROUGH / "store").glob("*.py") if "trio" in imports(p)}
    assert trio_users == {"group_commit.py"}


def test_public_names() -> None:
    assert set(borough.store.__all__) == {
        "FORMAT_VERSION",
        "GroupCommit",
        "InvalidLogOperation",
        "LevelDBStore",
        "MemoryStore",
        "NodeMeta",
        "PartitionLog",
        "SnapshotInstall",
        "SnapshotReader",
        "Store",
        "WriteBatch",
        "decode_value",
        "encode_key",
        "encode_value",
        "open_group_commit",
    }
    for name in borough.store.__all__:
        assert getattr(borough.store, name) is not None
