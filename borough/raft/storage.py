"""What the Raft core reads from stable storage: the contract between the core and the store.

The core keeps entries that are not yet persisted in memory (its "unstable" log) and reads everything it has
already handed to the driver for persistence through this protocol. The store (``borough.store``) implements it
per partition over LevelDB or memory; tests use ``MemoryLogStorage``. Reads are synchronous and cheap.

Index conventions (as in etcd-io/raft): the snapshot covers every index up to ``snapshot_meta().index``;
``first_index()`` is ``snapshot_meta().index + 1``; ``term(snapshot_meta().index)`` is the snapshot's term;
``last_index()`` is the index of the last persisted entry, or the snapshot index when there are none.
"""

from __future__ import annotations

from typing import Protocol

from borough.raft.records import ConfState, Entry, HardState, SnapshotMeta

__all__ = ["LogCompacted", "LogStorage", "LogUnavailable"]


class LogCompacted(Exception):
    """The requested index lies before the first index: it was compacted into the snapshot."""


class LogUnavailable(Exception):
    """The requested index lies beyond the last persisted index."""


class LogStorage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the snapshot's configuration. The core re-derives later configurations
        from the conf-change entries in the log after the snapshot (a configuration takes effect when appended).
        A new group is bootstrapped by persisting a snapshot meta at index 0 whose configuration holds the
        initial voters; a replica created to receive a snapshot starts with an empty configuration."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int:
        """The term of the entry at ``index``; raises ``LogCompacted`` below the snapshot index and
        ``LogUnavailable`` beyond the last index."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)``, stopping once their total ``Entry.size()`` would exceed ``max_bytes`` but always
        returning at least one entry when ``lo < hi``. Raises like ``term`` for out-of-range bounds."""
        ...

    def snapshot_meta(self) -> SnapshotMeta: ...
