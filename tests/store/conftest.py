"""Fixtures for the store tests: every conformance test runs against both implementations."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator

import pytest

from borough.store import LevelDBStore, MemoryStore, Store

KINDS = ["memory", "leveldb"]


class Opener:
    """Opens a store of one kind and reopens it as a restarted node would (clean close, open again)."""

    def __init__(self, kind: str, path: pathlib.Path) -> None:
        self.kind = kind
        self.path = path / "data"
        self.opened: list[Store] = []

    def open(self) -> Store:
        store: Store = MemoryStore() if self.kind == "memory" else LevelDBStore.open(self.path)
        self.opened.append(store)
        return store

    def reopen(self, store: Store) -> Store:
        store.close()
        if isinstance(store, MemoryStore):
            return store.reopen()
        new = LevelDBStore.open(self.path)
        self.opened.append(new)
        return new

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=KINDS)
def opener(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Opener]:
    o = Opener(request.param, tmp_path)
    yield o
    o.close_all()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener.open()


StoreFactory = Callable[[], Store]
