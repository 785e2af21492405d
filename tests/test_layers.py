"""Layers: data flows down, never back up (DESIGN.md). Checked on *transitive* imports, read from the source.

Each module of ``borough`` has a layer; a module may import, directly or through others, only modules of its own
layer or lower ones, and the two storage-level layers (wire, store) never import each other:

    vocabulary  errors, ids, kv (the key/value codec), cbor_safe and cbor_budget (bounded decoding), config,
                runnable (how many tasks trio has ready to run), files (durable file system changes), and the
                log's records (raft.records, raft.storage)
    wire, store the wire protocol and transports; storage (LevelDB and its in-memory twin)
    raft        the sans-IO Raft core
    ring        hash ring, failure detection, placement
    node        borough/node/*: the services that run a node (everything but ``node.node``)
    face        borough/__init__, client, partition, request, cli, certs, interpreter, and node.node (``Node``:
                wiring + public API)
    testing     the simulator; production code never imports it

An import of ``a.b.c`` also runs the ``__init__`` of ``a.b``, so package inits count as imports, except the
root ``borough/__init__``: it is the public face, whose job is to import everything. Imports inside functions
and under ``TYPE_CHECKING`` count too: a dependency is a dependency.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "borough"
LAYERS = ["vocabulary", "wire", "store", "raft", "ring", "node", "face", "testing"]
RANK = {"vocabulary": 0, "wire": 1, "store": 1, "raft": 2, "ring": 3, "node": 4, "face": 5, "testing": 6}
VOCABULARY = {
    "borough.errors",
    "borough.ids",
    "borough.kv",
    "borough.cbor_budget",
    "borough.cbor_safe",
    "borough.config",
    "borough.runnable",  # (trio's run queue, read for the hot paths of the wire, the store and the rounds)
    "borough.files",  # (durable creations and renames: the store's log files, certificates, backups)
    "borough.raft",  # its __init__ imports nothing
    "borough.raft.records",
    "borough.raft.storage",
}
FACE = {
    "borough",
    "borough.__main__",
    "borough.client",
    "borough.partition",
    "borough.request",
    "borough.cli",
    "borough.cli_client",
    "borough.cli_settings",
    "borough.backup",
    "borough.certs",
    "borough.interpreter",  # (what ``borough serve`` says at start about the Python it runs on)
    "borough.node.node",
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> str:
    if module in VOCABULARY:
        return "vocabulary"
    if module in FACE:
        return "face"
    for package in ("wire", "store", "raft", "ring", "node", "testing"):
        if module == f"borough.{package}" or module.startswith(f"borough.{package}."):
            return package
    raise AssertionError(f"{module} has no layer: add it to tests/test_layers.py")


def _with_parents(module: str) -> set[str]:
    out = {module}
    parts = module.split(".")
    for i in range(2, len(parts)):  # not the root package: see the module docstring
        out.add(".".join(parts[:i]))
    return out


@functools.cache
def direct_imports(module: str) -> frozenset[str]:
    """Borough modules ``module`` imports (with the package inits those imports run)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            names += [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in MODULES]
        for name in names:
            if name == "borough" or name.startswith("borough."):
                while name not in MODULES:
                    name = name.rpartition(".")[0]
                found |= _with_parents(name)
    found.discard(module)
    found.discard("borough")
    return frozenset(found)


@functools.cache
def closure(module: str) -> frozenset[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for dep in direct_imports(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    seen.discard(module)
    return frozenset(seen)


def test_every_module_has_a_layer() -> None:
    assert {layer(m) for m in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_flow_down(module: str) -> None:
    mine = layer(module)
    bad = []
    for dep in sorted(closure(module)):
        theirs = layer(dep)
        if RANK[theirs] > RANK[mine] or (RANK[theirs] == RANK[mine] and theirs != mine):
            bad.append(f"{dep} ({theirs})")
    assert not bad, f"{module} ({mine} layer) imports, directly or not, {', '.join(bad)}"


def test_only_the_public_face_and_the_simulator_import_node() -> None:
    importers = {m for m in MODULES if "borough.node.node" in direct_imports(m)}
    assert importers <= {"borough"} | {m for m in MODULES if layer(m) == "testing"}, importers


def test_the_ring_and_the_store_do_not_load_the_raft_core() -> None:
    core = {m for m in MODULES if layer(m) == "raft"}
    for module in MODULES:
        if layer(module) in ("ring", "store", "wire"):
            assert not closure(module) & core, f"{module} loads {sorted(closure(module) & core)}"


def test_a_client_does_not_depend_on_the_raft_core_or_a_replica() -> None:
    # (LevelDB: the store loads it only when asked for it; test_borough_and_open_client_import_without_plyvel.)
    loaded = closure("borough.client")
    assert not {m for m in loaded if layer(m) == "raft"}
    assert "borough.node.replica" not in loaded


def test_plyvel_is_imported_by_the_leveldb_store_alone() -> None:
    importers = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name.split(".")[0] == "plyvel" for name in names):
                importers.add(module)
    assert importers == {"borough.store.leveldb"}


def test_borough_and_open_client_import_without_plyvel() -> None:
    # The issue's own check, in a fresh interpreter: a machine without LevelDB can still use a client.
    code = "import sys; sys.modules['plyvel'] = None; import borough; borough.open_client; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_layer_check_can_fail() -> None:
    # Guard against a check that passes vacuously: the node layer does reach the Raft core and the store.
    assert "borough.raft.rawnode" in closure("borough.node.replica")
    assert layer("borough.raft.rawnode") == "raft" and RANK["raft"] > RANK["store"]
    assert "borough.store.base" in closure("borough.node.session")
