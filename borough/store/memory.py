"""``MemoryStore``: the store over an in-memory ordered byte map that loses unsynced writes in a crash.

This module owns the in-memory engine and its crash model, which follows LevelDB's write-ahead log: a write
is visible as soon as it returns; a synced write makes itself and every earlier write durable; ``crash()``
puts the visible state back to the durable one, as a power cut would. Everything else (layout, semantics,
validation) is ``base.Store``'s, shared with ``LevelDBStore``. The simulator keeps one ``MemoryStore`` per
node as its "disk" and reuses it across a simulated restart. It must not know trio or plyvel.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from borough.errors import StorageError
from borough.store.base import RawBatch, Reader, Store

__all__ = ["MemoryStore"]

# Past this many key insertions or removals in one write, re-sorting the key list once beats bisecting each.
_RESORT_AFTER = 64


class _MemoryBatch:
    __slots__ = ("ops", "sync")

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))


class _MemoryEngine:
    """A dict plus a lazily sorted key list, and an undo log of the writes since the last sync."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._sorted = True
        self.undo: list[tuple[bytes, bytes | None]] = []

    def keys(self) -> list[bytes]:
        if not self._sorted:
            self._keys = sorted(self.data)
            self._sorted = True
        return self._keys

    def apply(self, ops: list[tuple[bytes, bytes | None]], sync: bool) -> None:
        data = self.data
        undo = self.undo
        changed: list[tuple[bytes, bool]] = []  # (key, inserted) for keys that entered or left the map
        if sync:  # this write makes everything durable: no undo to keep
            undo.clear()
            for key, value in ops:
                if value is None:
                    if data.pop(key, None) is not None:
                        changed.append((key, False))
                else:
                    old = data.get(key)
                    data[key] = value
                    if old is None:
                        changed.append((key, True))
            self._reindex(changed)
            return
        for key, value in ops:
            old = data.get(key)
            undo.append((key, old))
            if value is None:
                if old is not None:
                    del data[key]
                    changed.append((key, False))
            else:
                data[key] = value
                if old is None:
                    changed.append((key, True))
        self._reindex(changed)

    def _reindex(self, changed: list[tuple[bytes, bool]]) -> None:
        if not self._sorted or not changed:
            return
        if len(changed) > _RESORT_AFTER:
            self._sorted = False
            return
        keys = self._keys
        for key, inserted in changed:
            i = bisect.bisect_left(keys, key)
            if inserted:
                if i == len(keys) or keys[i] != key:
                    keys.insert(i, key)
            elif i < len(keys) and keys[i] == key:
                del keys[i]

    def crash(self) -> None:
        data = self.data
        for key, old in reversed(self.undo):
            if old is None:
                data.pop(key, None)
            else:
                data[key] = old
        self.undo.clear()
        self._sorted = False

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def scan(
        self, start: bytes, stop: bytes, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        # Materialised now, so later writes do not show through (LevelDB iterators see a snapshot too).
        keys = self.keys()
        lo = bisect.bisect_left(keys, start)
        hi = bisect.bisect_left(keys, stop, lo)
        if reverse:
            if limit is not None:
                lo = max(lo, hi - limit)
            selected = keys[lo:hi]
            selected.reverse()
        else:
            if limit is not None:
                hi = min(hi, lo + limit)
            selected = keys[lo:hi]
        data = self.data
        return iter([(k, data[k]) for k in selected])

    def scan_keys(self, start: bytes, stop: bytes, *, limit: int) -> Iterator[bytes]:
        return (k for k, _ in self.scan(start, stop, limit=limit))


class MemoryStore(Store):
    """The in-memory store. ``crash()`` loses every write that was not synced and reopens the store."""

    blocking_writes = False

    def __init__(self) -> None:
        super().__init__()
        self._engine = _MemoryEngine()
        self._fail_writes: BaseException | None = None
        self._load()

    def describe(self) -> str:
        return f"memory store {id(self):#x}"

    def _engine_reader(self) -> Reader:
        return self._engine

    def _engine_batch(self, sync: bool) -> RawBatch:
        return _MemoryBatch(sync)

    def _engine_commit(self, raw: RawBatch) -> None:
        assert isinstance(raw, _MemoryBatch)
        if self._fail_writes is not None:
            raise StorageError(f"{self.describe()}: injected write failure") from self._fail_writes
        self._engine.apply(raw.ops, raw.sync)

    def _engine_close(self) -> None:
        pass

    # ------------------------------------------------------------------------------------ simulation

    def crash(self) -> None:
        """Lose every unsynced write, as a power cut would, and leave the store open on what survived (as a
        restarted node would find it). Snapshot installs begun before the crash are void."""
        with self._lock:
            self._engine.crash()
            self._epoch += 1
            self._failed = None
            self._load()
        while self.collect_garbage(1 << 30):
            pass

    def reopen(self) -> MemoryStore:
        """Open the store again after ``close()`` (a clean restart: nothing is lost)."""
        with self._lock:
            if self._view is None:
                self._failed = None
                self._load()
        return self

    def fail_writes(self, error: BaseException | None) -> None:
        """Make every later write fail with ``StorageError`` (caused by ``error``), or stop doing so (None),
        to simulate a broken disk."""
        self._fail_writes = error

    @property
    def unsynced_writes(self) -> int:
        """How many raw key writes a crash would lose right now."""
        return len(self._engine.undo)
