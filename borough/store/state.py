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

__all__ = ["InvalidLogOperation", "PartitionState", "RawBatch", "Reader", "View", "MISSING"]


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
        new = PartitionState.__new__(PartitionState)
        for slot in PartitionState.__slots__:
            setattr(new, slot, getattr(self, slot))
        return new

    def set_gen(self, gen: int) -> None:
        self.gen = gen
        self.dp = enc.data_prefix(gen)

    def last_index(self) -> int:
        return self.log_hi if self.log_hi >= self.log_lo else self.snap.index


@attrs.frozen
class View:
    """What reads go through: every partition's state and an engine reader that agrees with them."""

    parts: dict[str, PartitionState]
    reader: Reader


#: The state of every partition that has none here (pid 0 is never allocated, so no key of it exists).
#: Shared by all reads of missing partitions: reads never mutate a state.
MISSING = PartitionState("", 0, 0)
