"""The Raft log of one replica: what stable storage holds plus the unstable tail not yet persisted.

This module owns index and term bookkeeping: the commit and apply cursors, appending and truncating (§5.3),
the up-to-date comparison of §5.4.1, the conflict search that lets a leader skip a diverging term per round trip,
and which entries a Ready hands out for persisting and applying. It reads persisted entries through
``LogStorage`` and never writes storage: the driver persists what a Ready carries and ``stable_to`` /
``stable_snapshot_to`` record that it did. It knows nothing of roles, messages or configurations.

Entries are shared, never copied: slices of the unstable list or of the storage's answers are handed on as is.

Persisted entries that are not yet applied stay in memory too (the *cache*, bounded in bytes), so that the hot
path (apply what just committed; resend to a follower one round behind) never reads storage back.
"""

from __future__ import annotations

from collections.abc import Sequence

from borough.errors import StorageError
from borough.raft.records import Entry, SnapshotMeta
from borough.raft.storage import LogCompacted, LogStorage, LogUnavailable

__all__ = ["RaftLog", "limit_size", "total_size"]


def total_size(entries: Sequence[Entry]) -> int:
    """The sum of ``Entry.size()`` over ``entries``, in one pass without a call per entry."""
    return sum([len(e.data) for e in entries]) + 24 * len(entries)


def limit_size(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix of ``entries`` whose total ``Entry.size()`` is at most ``max_bytes`` (at least one)."""
    # The common case (everything fits) in one pass without branches; the careful loop only when it does not.
    if len(entries) <= 1 or total_size(entries) <= max_bytes:  # (one entry always goes)
        return entries
    total = 0
    for i, e in enumerate(entries):
        total += len(e.data) + 24
        if total > max_bytes and i > 0:
            return entries[:i]
    return entries


class RaftLog:
    """Stable storage + unstable tail. Indexes are absolute; ``offset`` is the index of ``unstable[0]``.

    Invariants: with no unstable snapshot, storage holds every index below ``offset`` that is not compacted
    (it may still hold a shadowed suffix at ``offset`` and beyond until the driver overwrites it); with an
    unstable snapshot, ``offset == snapshot.index + 1`` and storage is not consulted at all. ``handed`` is the
    first unstable index not yet handed to the driver in a Ready.

    ``cache`` holds persisted entries ``[offset - len(cache), offset)``, all above ``applied``: a copy of what
    storage holds there, dropped from the front once applied or when it outgrows ``cache_limit`` bytes.
    """

    __slots__ = (
        "applied",
        "applying",
        "cache",
        "cache_bytes",
        "cache_limit",
        "committed",
        "handed",
        "last",
        "offset",
        "snapshot",
        "snapshot_handed",
        "storage",
        "unstable",
    )

    def __init__(self, storage: LogStorage, cache_limit: int = 1 << 20) -> None:
        self.storage = storage
        self.cache: list[Entry] = []
        self.cache_bytes = 0
        self.cache_limit = cache_limit
        first = storage.first_index()
        last = storage.last_index()
        if last < first - 1:
            raise StorageError(f"the Raft log storage is inconsistent: last index {last} < first index {first} - 1")
        self.offset = last + 1
        # The last index, kept up to date by every change (it is read on every hot path): the unstable tail's
        # end if there is one, else the pending snapshot's index, else the storage's last index.
        self.last = last
        self.unstable: list[Entry] = []
        self.snapshot: SnapshotMeta | None = None
        self.snapshot_handed = False
        self.handed = self.offset
        # Everything up to the snapshot is committed and applied (the snapshot *is* the applied state).
        self.committed = first - 1
        self.applying = first - 1
        self.applied = first - 1

    # --- reading ------------------------------------------------------------------------------------------

    def first_index(self) -> int:
        if self.snapshot is not None:
            return self.snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        return self.last

    def term(self, index: int) -> int:
        """The term at ``index``; raises ``LogCompacted`` / ``LogUnavailable`` outside the known log."""
        off = self.offset
        if index >= off:
            k = index - off
            if k < len(self.unstable):
                return self.unstable[k].term
            raise LogUnavailable(index)
        snap = self.snapshot
        if snap is not None:
            if index == snap.index:
                return snap.term
            raise LogCompacted(index)
        k = index - off + len(self.cache)
        if k >= 0:
            return self.cache[k].term
        return self.storage.term(index)

    def term_or_none(self, index: int) -> int | None:
        try:
            return self.term(index)
        except (LogCompacted, LogUnavailable):
            return None

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (LogCompacted, LogUnavailable):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log is at least as up to date as ours if its last term is higher, or equal with an
        index at least as large."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)`` limited to ``max_bytes`` (at least one). Raises ``LogCompacted`` if ``lo`` is
        compacted, ``LogUnavailable`` if ``hi - 1`` is beyond the last index."""
        if lo >= hi:
            return []
        if hi > self.last + 1:
            raise LogUnavailable(hi - 1)
        off = self.offset
        if lo >= off:
            # The hot path on a leader: the entries proposed since the last Ready.
            return limit_size(self.unstable[lo - off : hi - off], max_bytes)
        if self.snapshot is not None:
            raise LogCompacted(lo)
        cache = self.cache
        k = lo - off + len(cache)
        if k >= 0:
            # Persisted but not applied yet: from memory.
            end = hi - off + len(cache)
            if hi <= off:
                return limit_size(cache[k:end], max_bytes)
            return limit_size(cache[k:] + self.unstable[: hi - off], max_bytes)
        stored = self.storage.entries(lo, min(hi, off), max_bytes)  # raises LogCompacted below its first index
        if hi <= off or len(stored) < off - lo:
            return stored
        remaining = max_bytes - total_size(stored)
        out = list(stored)
        for e in self.unstable[: hi - off]:
            size = len(e.data) + 24
            if size > remaining:
                break
            out.append(e)
            remaining -= size
        return out

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first entry of ``entries`` that is not already in the log (0 if all are).

        An entry "is in the log" when the log has the same term at its index (by Log Matching, §5.3, that is
        the same entry). The common case, entries just past our last index, costs one comparison.
        """
        last = self.last
        for e in entries:
            if e.index > last:
                return e.index
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index at or below ``index`` whose term is at most ``term``, and that term.

        Used both by a follower rejecting an append (to hint where the logs may match) and by the leader
        reading the hint (to skip every entry of a term the follower does not have).
        """
        index = min(index, self.last_index())
        while index > 0:
            t = self.term_or_none(index)
            if t is None:
                # Compacted: everything at or below the snapshot is committed, so it matches any leader's log.
                break
            if t <= term:
                return index, t
            index -= 1
        return index, self.term_or_none(index) or 0

    # --- writing ------------------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> int:
        """Append ``entries`` (their first index may rewrite a suffix). Returns the new last index."""
        if not entries:
            return self.last
        after = entries[0].index
        if after <= self.committed:
            raise AssertionError(f"Raft safety violation: asked to overwrite committed entry {after}")
        off = self.offset
        n = len(self.unstable)
        if after == off + n:
            self.unstable.extend(entries)
        elif after <= off:
            # Replaces everything from ``after``: the driver overwrites the stored suffix with the next Ready.
            # An unstable snapshot stays only if the new entries follow it directly.
            self._cut_cache(after)
            self.offset = after
            self.unstable = list(entries)
            if self.snapshot is not None and after != self.snapshot.index + 1:
                raise AssertionError(f"append at {after} does not follow the pending snapshot")
        else:
            del self.unstable[after - off :]
            self.unstable.extend(entries)
        if self.handed > after:
            self.handed = after
        self.last = entries[-1].index
        return self.last

    def maybe_append(self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]) -> int | None:
        """A follower's AppendEntries (§5.3): None if our log does not contain ``prev_index``/``prev_term``;
        otherwise append what is new, commit up to what the leader says is committed and we know matches,
        and return the last index now known to match the leader."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise AssertionError(f"Raft safety violation: entry {conflict} conflicts with the log but is committed")
            self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        """Advance the commit index (it never moves back). Returns whether it moved."""
        if index > self.committed:
            if index > self.last:
                raise AssertionError(f"commit index {index} is beyond the last index {self.last_index()}")
            self.committed = index
            return True
        return False

    def restore(self, snapshot: SnapshotMeta) -> None:
        """Replace the whole log with ``snapshot`` (the driver installs it with the next Ready)."""
        self.snapshot = snapshot
        self.snapshot_handed = False
        self.cache.clear()
        self.cache_bytes = 0
        self.unstable = []
        self.offset = snapshot.index + 1
        self.handed = self.offset
        self.last = snapshot.index
        self.committed = snapshot.index

    # --- Ready bookkeeping --------------------------------------------------------------------------------

    def has_unhanded(self) -> bool:
        return self.handed <= self.last or (self.snapshot is not None and not self.snapshot_handed)

    def hand_out(self) -> tuple[list[Entry], SnapshotMeta | None]:
        """Entries and snapshot for a Ready; they are not handed out again unless rewritten."""
        entries: list[Entry] = []
        if self.handed <= self.last:
            # A copy: the unstable list grows while the Ready is out.
            entries = self.unstable[self.handed - self.offset :]
            self.handed = self.last + 1
        snap = None
        if self.snapshot is not None and not self.snapshot_handed:
            snap = self.snapshot
            self.snapshot_handed = True
        return entries, snap

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries up to ``index`` (last entry term ``term``)."""
        k = index + 1 - self.offset
        if k <= 0 or k > len(self.unstable) or self.unstable[k - 1].term != term:
            # Rewritten since it was handed out (a newer leader's entries replaced it): the rewrite is
            # still unstable and goes out with the next Ready.
            return
        if self.snapshot is not None:
            # Entries after a pending snapshot cannot be persisted before it is.
            return
        stable = self.unstable[:k]
        self.unstable = self.unstable[k:]
        self.offset = index + 1
        if self.handed < self.offset:
            self.handed = self.offset
        if self.cache_limit:
            self.cache.extend(stable)
            self.cache_bytes += total_size(stable)
            self.trim_cache()

    def trim_cache(self) -> None:
        """Drop cached entries that are applied, then the oldest ones while the cache is over its limit."""
        cache = self.cache
        if not cache:
            return
        drop = self.applied - cache[0].index + 1
        if drop <= 0:
            if self.cache_bytes <= self.cache_limit:
                return  # (the common case on a leader: nothing applied yet, nothing over the limit)
            drop = 0
        elif drop > len(cache):
            drop = len(cache)
        size = self.cache_bytes - total_size(cache[:drop]) if drop else self.cache_bytes
        while size > self.cache_limit and drop < len(cache):
            size -= len(cache[drop].data) + 24
            drop += 1
        if drop:
            del cache[:drop]
            self.cache_bytes = size

    def _cut_cache(self, index: int) -> None:
        """Forget cached entries from ``index`` on (they are being rewritten or replaced by a snapshot)."""
        cache = self.cache
        if not cache:
            return
        k = index - cache[0].index
        if k <= 0:
            cache.clear()
            self.cache_bytes = 0
        elif k < len(cache):
            self.cache_bytes -= total_size(cache[k:])
            del cache[k:]

    def stable_snapshot_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.index == index:
            self.snapshot = None
            self.snapshot_handed = False

    def has_pending_snapshot(self) -> bool:
        return self.snapshot is not None

    def next_committed(self, max_bytes: int) -> list[Entry]:
        """Committed entries not yet handed out for applying (none while a snapshot is being installed)."""
        if self.snapshot is not None or self.committed <= self.applying:
            return []
        return self.slice(self.applying + 1, self.committed + 1, max_bytes)

    def has_next_committed(self) -> bool:
        return self.snapshot is None and self.committed > self.applying
