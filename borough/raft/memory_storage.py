"""MemoryLogStorage: a pure in-memory ``LogStorage`` for tests, benchmarks and simulation.

This module owns an in-memory copy of what a replica persists (hard state, snapshot meta, log entries) and
the one helper every in-memory driver needs, ``persist(ready)``, which writes what a Ready asks in the order
the driver contract gives. It has no notion of durability: a simulator that models lost unsynced writes keeps
a ``clone()`` taken at each sync and restores it on crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from borough.raft.log import limit_size
from borough.raft.records import ConfState, Entry, HardState, SnapshotMeta
from borough.raft.storage import LogCompacted, LogUnavailable

if TYPE_CHECKING:
    from borough.raft.rawnode import Ready

__all__ = ["MemoryLogStorage"]


class MemoryLogStorage:
    """Entries ``ents[i]`` has index ``snap.index + 1 + i``."""

    __slots__ = ("ents", "hard_state", "snap")

    def __init__(self, conf_state: ConfState | None = None, *, snapshot: SnapshotMeta | None = None) -> None:
        """A new replica's storage: bootstrapped with ``conf_state`` at index 0 (an empty one for a replica
        that waits for a snapshot), or starting from ``snapshot``."""
        self.hard_state = HardState()
        self.snap = snapshot if snapshot is not None else SnapshotMeta(conf_state=conf_state or ConfState())
        self.ents: list[Entry] = []

    # --- LogStorage ---------------------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self.snap.conf_state

    def first_index(self) -> int:
        return self.snap.index + 1

    def last_index(self) -> int:
        return self.snap.index + len(self.ents)

    def term(self, index: int) -> int:
        base = self.snap.index
        if index <= base:
            if index == base:
                return self.snap.term
            raise LogCompacted(index)
        k = index - base - 1
        if k >= len(self.ents):
            raise LogUnavailable(index)
        return self.ents[k].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        base = self.snap.index
        if lo <= base:
            raise LogCompacted(lo)
        if hi > base + len(self.ents) + 1:
            raise LogUnavailable(hi - 1)
        if lo >= hi:
            return []
        return limit_size(self.ents[lo - base - 1 : hi - base - 1], max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self.snap

    # --- writing ------------------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, replacing any stored entry at or after the first new index."""
        if not entries:
            return
        base = self.snap.index
        first = entries[0].index
        if first <= base:
            # Already covered by the snapshot.
            entries = entries[base + 1 - first :]
            if not entries:
                return
            first = entries[0].index
        k = first - base - 1
        if k > len(self.ents):
            raise AssertionError(f"log gap: appending {first} after last index {self.last_index()}")
        if k < len(self.ents):
            del self.ents[k:]
        self.ents.extend(entries)

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Install a received snapshot: the whole log is replaced by it."""
        self.snap = meta
        self.ents = []

    def compact(self, meta: SnapshotMeta) -> None:
        """Fold the log up to ``meta.index`` into the snapshot meta (the data is the applied state)."""
        base = self.snap.index
        if meta.index <= base:
            return
        if meta.index > self.last_index():
            raise AssertionError(f"cannot compact to {meta.index} beyond the last index {self.last_index()}")
        del self.ents[: meta.index - base]
        self.snap = meta

    def persist(self, rd: Ready) -> None:
        """Write what ``rd`` asks to persist, in the contract's order."""
        if rd.snapshot is not None:
            self.apply_snapshot(rd.snapshot)
        if rd.entries:
            self.append(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.compaction is not None:
            self.compact(rd.compaction)

    def clone(self) -> MemoryLogStorage:
        c = MemoryLogStorage(snapshot=self.snap)
        c.hard_state = self.hard_state
        c.ents = list(self.ents)
        return c
