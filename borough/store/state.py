"""The in-memory state of a store: per-partition records, the published view, and the engine interface.

This module owns what the store remembers about each partition between writes (so reads of first/last index,
terms and applied index need no disk access) and the two small protocols an engine implements. It knows the
key layout only through ``encoding``; it must not know batches, engines or trio.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import attrs

from borough.errors import LocalProtocolError
from borough.raft.records import HardState, SnapshotMeta
from borough.store import encoding as enc

__all__ = ["InvalidLogOperation", "PartMap", "PartitionState", "RawBatch", "Reader", "View", "MISSING"]


class InvalidLogOperation(LocalProtocolError, ValueError):
    """A write asked for a change the partition's current state does not allow (an append that leaves a gap,
    a truncation into the snapshot, a compaction past it, an index going backwards, the switch of a snapshot
    install that was aborted). This is a bug in the caller (the Raft driver); nothing of the batch was written,
    and the group committer fails only that batch."""


class Reader(Protocol):
    """A consistent read view of the engine (engine interface)."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(
        self, start: bytes, stop: bytes, *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``start <= key < stop`` in key order (or reverse), as of when this is called."""
        ...

    def scan_keys(self, start: bytes, stop: bytes, *, limit: int) -> Iterator[bytes]:
        """Like ``scan`` (forward), keys only: the values are never read (deleting big ones must not copy them)."""
        ...


class RawBatch(Protocol):
    """Raw puts and deletes that the engine writes atomically (engine interface)."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class PartitionState:
    """What the store keeps in memory about one partition. Published states are never mutated: a write
    copies the states it changes and publishes the copies."""

    __slots__ = (
        "applied",
        "applied_key",
        "dp",
        "gen",
        "hard",
        "last_term",
        "log_hi",
        "log_lo",
        "lp",
        "name",
        "pid",
        "pp",
        "snap",
    )

    def __init__(self, name: str, pid: int, gen: int) -> None:
        self.name = name
        self.pid = pid
        self.pp = enc.part_prefix(pid)
        self.lp = enc.log_prefix(pid)
        self.applied_key = self.pp + enc.F_APPLIED
        self.gen = gen
        self.dp = enc.data_prefix(gen)
        self.hard = HardState()
        self.snap = SnapshotMeta()
        self.applied = 0
        # Stored log entries are exactly [log_lo, log_hi]; empty when log_hi < log_lo. When not empty,
        # log_lo <= snap.index + 1 <= log_hi + 1 (entries at or below the snapshot await compaction).
        self.log_lo = 1
        self.log_hi = 0
        self.last_term = -1  # term of entry log_hi, or -1 when not known without a read

    def copy(self) -> PartitionState:
        # Every slot, spelled out (a loop over __slots__ with getattr/setattr costs three times as much);
        # tests/store/test_partmap.py checks that no slot is missed.
        new = _new_state(PartitionState)
        new.applied = self.applied
        new.applied_key = self.applied_key
        new.dp = self.dp
        new.gen = self.gen
        new.hard = self.hard
        new.last_term = self.last_term
        new.log_hi = self.log_hi
        new.log_lo = self.log_lo
        new.lp = self.lp
        new.name = self.name
        new.pid = self.pid
        new.pp = self.pp
        new.snap = self.snap
        return new

    def set_gen(self, gen: int) -> None:
        self.gen = gen
        self.dp = enc.data_prefix(gen)

    def last_index(self) -> int:
        return self.log_hi if self.log_hi >= self.log_lo else self.snap.index


_new_state = object.__new__


class PartMap:
    """Partition name -> state, immutable. ``updated`` makes a new map that shares every bucket the change does
    not touch, so publishing a write costs in proportion to the partitions it touched, not to the partitions
    the store holds (a node with 10,000 replicas writes as cheaply as one with ten). Iteration order is
    arbitrary (by bucket): callers that need an order sort."""

    __slots__ = ("_buckets", "_len")

    #: Buckets (a power of two): a change copies the list of buckets and each bucket it touches.
    BUCKETS = 256

    def __init__(self, items: dict[str, PartitionState] | None = None) -> None:
        mask = self.BUCKETS - 1
        buckets: list[dict[str, PartitionState]] = [{} for _ in range(self.BUCKETS)]
        for name, st in (items or {}).items():
            buckets[hash(name) & mask][name] = st
        self._buckets = buckets
        self._len = sum(len(b) for b in buckets)

    def get(self, name: str) -> PartitionState | None:
        return self._buckets[hash(name) & (self.BUCKETS - 1)].get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._buckets[hash(name) & (self.BUCKETS - 1)]

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        for bucket in self._buckets:
            yield from bucket

    def updated(self, changes: dict[str, PartitionState | None]) -> PartMap:
        """A new map with ``changes`` made (None removes the partition); this one is left as it is."""
        if not changes:
            return self
        mask = self.BUCKETS - 1
        old = self._buckets
        buckets = old.copy()
        length = self._len
        for name, st in changes.items():
            i = hash(name) & mask
            bucket = buckets[i]
            if bucket is old[i]:  # not copied yet
                bucket = buckets[i] = bucket.copy()
            had = name in bucket
            if st is None:
                if had:
                    del bucket[name]
                    length -= 1
            else:
                bucket[name] = st
                length += not had
        new = PartMap.__new__(PartMap)
        new._buckets = buckets
        new._len = length
        return new


@attrs.frozen
class View:
    """What reads go through: every partition's state and an engine reader that agrees with them."""

    parts: PartMap
    reader: Reader


#: The state of every partition that has none here (pid 0 is never allocated, so no key of it exists).
#: Shared by all reads of missing partitions: reads never mutate a state.
MISSING = PartitionState("", 0, 0)
