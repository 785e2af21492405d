"""Turning a write batch's ops into raw puts and deletes, given the partitions' current states.

This module owns the meaning of every op on disk: which keys an append, a truncation, a compaction, a snapshot
meta, an apply, a destroy or a snapshot-install switch writes and deletes, what each does to the partition's
in-memory state, and which ops the current state does not allow (``InvalidLogOperation``). It works on copies
of the states, so a batch that raises leaves nothing behind; the caller (``Store.write``, under its lock)
writes the raw batch and then publishes the copies. It must not know engines, locks or trio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from borough.raft.records import SnapshotMeta
from borough.store import batch as B
from borough.store import encoding as enc
from borough.store.state import InvalidLogOperation, PartitionState, PartMap, RawBatch

if TYPE_CHECKING:
    from borough.store.base import Store
    from borough.store.snapshot import SnapshotInstall

__all__ = ["Translation"]

_consume = deque[None](maxlen=0).extend


class Translation:
    """One batch's translation. After ``run``: ``changes`` maps each touched partition to its new state (None
    when destroyed), ``installs`` lists the snapshot installs switched in, ``tombstoned`` the partitions given a
    tombstone, ``garbage`` says trash was marked."""

    def __init__(self, parts: PartMap, raw: RawBatch, alloc_id: Callable[[], int], store: Store) -> None:
        self._parts = parts
        self._put = raw.put
        self._delete = raw.delete
        self._alloc_id = alloc_id
        self._store = store
        self.changes: dict[str, PartitionState | None] = {}
        self.installs: list[SnapshotInstall] = []
        self.tombstoned: list[str] = []  # partitions given a tombstone
        self.garbage = False

    def run(self, ops: list[tuple[Any, ...]]) -> Translation:
        parts = self._parts
        changes = self.changes
        put = self._put
        delete = self._delete
        for op in ops:
            code = op[0]
            name = op[1]
            if name in changes:
                st = changes[name]
            else:
                cur = parts.get(name)
                st = cur.copy() if cur is not None else None
                changes[name] = st
            if code == B.OP_DESTROY:
                if op[2] is not None:
                    put(enc.tomb_key(name), op[2])
                    self.tombstoned.append(name)
                if st is not None:
                    self._destroy(st)
                    changes[name] = None
                continue
            if st is None:
                st = changes[name] = self._create(name)
            if code == B.OP_APPLY:  # the hot path, inline
                _, _, gen, keys, values, deletes, applied = op
                if applied < st.applied:
                    raise InvalidLogOperation(
                        f"partition {name!r}: applied index {applied} is below the stored {st.applied}"
                    )
                if gen != st.gen:  # built before a snapshot install switched generations: re-prefix
                    new = enc.pack_u64(st.gen)
                    keys = [k[:1] + new + k[enc.PREFIX_LEN :] for k in keys]  # keeping each key's space
                if deletes:
                    for k, v in zip(keys, values, strict=True):
                        if v is None:
                            delete(k)
                        else:
                            put(k, v)
                else:  # only puts: let map drive the engine's put without a Python-level loop
                    _consume(map(put, keys, values))
                put(st.applied_key, enc.pack_u64(applied))
                st.applied = applied
            elif code == B.OP_APPEND:
                self._append(st, op)
            elif code == B.OP_HARD:
                put(st.pp + enc.F_HARD, op[3])
                st.hard = op[2]
            elif code == B.OP_TRUNCATE:
                self._truncate(st, op[2])
            elif code == B.OP_COMPACT:
                self._compact(st, op[2])
            elif code == B.OP_SNAPSHOT_META:
                self._set_snapshot(st, op[2], op[3])
            elif code == B.OP_INSTALL:
                self._switch_install(st, op[2], op[3], op[4])
            else:  # pragma: no cover - WriteBatch makes only the codes above
                raise AssertionError(f"unknown op code {code}")
        return self

    def _create(self, name: str) -> PartitionState:
        st = PartitionState(name, self._alloc_id(), self._alloc_id())
        self._put(enc.dir_key(name), enc.pack_u64(st.pid))
        self._put(st.pp + enc.F_NAME, enc.partition_name_bytes(name))
        self._put(st.pp + enc.F_GEN, enc.pack_u64(st.gen))
        return st

    def _destroy(self, st: PartitionState) -> None:
        # The log and data keys may be many: mark them as trash for Store.collect_garbage instead.
        self._delete(enc.dir_key(st.name))
        for field in enc.PART_FIELDS:
            self._delete(st.pp + field)
        self._put(enc.trash_key(enc.LOG, st.pid), b"")
        self._put(enc.trash_key(enc.DATA, st.gen), b"")
        self.garbage = True

    def _delete_log(self, st: PartitionState, lo: int, hi: int) -> None:
        delete = self._delete
        lp = st.lp
        pack = enc.pack_u64
        for i in range(lo, hi + 1):
            delete(lp + pack(i))

    def _append(self, st: PartitionState, op: tuple[Any, ...]) -> None:
        _, name, first, last, last_term, items = op
        if first <= st.snap.index:
            raise InvalidLogOperation(
                f"partition {name!r}: cannot append at index {first}: the log starts at {st.snap.index + 1} "
                "(earlier entries are in the snapshot)"
            )
        last_index = st.last_index()
        if first > last_index + 1:
            raise InvalidLogOperation(
                f"partition {name!r}: cannot append at index {first}: the last index is {last_index}, "
                "so that would leave a gap"
            )
        if st.log_hi >= st.log_lo:
            if st.log_hi > last:  # §5.3: drop the conflicting tail beyond the new entries
                self._delete_log(st, last + 1, st.log_hi)
        else:
            st.log_lo = first
        put = self._put
        lp = st.lp
        for ib, value in items:
            put(lp + ib, value)
        st.log_hi = last
        st.last_term = last_term

    def _truncate(self, st: PartitionState, from_index: int) -> None:
        if from_index <= st.snap.index:
            raise InvalidLogOperation(
                f"partition {st.name!r}: cannot truncate the log from index {from_index}: entries up to "
                f"{st.snap.index} are in the snapshot"
            )
        if st.log_hi < st.log_lo or from_index > st.log_hi:
            return
        self._delete_log(st, max(from_index, st.log_lo), st.log_hi)
        st.log_hi = from_index - 1
        st.last_term = -1  # read from disk when asked

    def _compact(self, st: PartitionState, upto: int) -> None:
        if upto > st.snap.index:
            raise InvalidLogOperation(
                f"partition {st.name!r}: cannot compact the log up to {upto}: the snapshot only covers up to "
                f"{st.snap.index}; set the snapshot meta first"
            )
        if st.log_hi < st.log_lo or upto < st.log_lo:
            return
        end = min(upto, st.log_hi)
        self._delete_log(st, st.log_lo, end)
        st.log_lo = end + 1

    def _set_snapshot(self, st: PartitionState, meta: SnapshotMeta, encoded: bytes) -> None:
        if meta.index < st.snap.index:
            raise InvalidLogOperation(
                f"partition {st.name!r}: the snapshot index cannot go back from {st.snap.index} to {meta.index}"
            )
        if st.log_hi >= st.log_lo and meta.index > st.log_hi:
            # Every stored entry is covered by the snapshot: drop them so the log stays contiguous.
            self._delete_log(st, st.log_lo, st.log_hi)
            st.log_lo, st.log_hi = 1, 0
        st.snap = meta
        self._put(st.pp + enc.F_SNAP, encoded)

    def _switch_install(self, st: PartitionState, install: SnapshotInstall, meta: SnapshotMeta, encoded: bytes) -> None:
        install._check_switchable(self._store)
        gen = install._gen
        self._set_snapshot(st, meta, encoded)
        # The old data becomes trash; the staged data stops being trash: one small batch switches them.
        self._put(enc.trash_key(enc.DATA, st.gen), b"")
        self._delete(enc.trash_key(enc.DATA, gen))
        st.set_gen(gen)
        self._put(st.pp + enc.F_GEN, enc.pack_u64(gen))
        st.applied = install._applied_index
        self._put(st.applied_key, enc.pack_u64(st.applied))
        self.garbage = True
        self.installs.append(install)
