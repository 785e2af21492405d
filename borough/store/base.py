"""The store: one node's Raft state and key/value data for every replica it hosts, over an ordered byte map.

This module owns the semantics every store has: node meta, the partition directory, per-partition Raft
records and log, key/value reads and iteration, turning a ``WriteBatch`` into raw puts and deletes under the
store's lock (``translate``), and publishing what a write changed. It reads and writes through a tiny engine
interface (``state.Reader`` and ``state.RawBatch`` plus a few abstract methods) that ``LevelDBStore`` and
``MemoryStore`` implement; it must not know which engine it runs on, nor anything of trio.

Reads never take the lock: they go through the current *view*, an immutable pair of the per-partition states
and an engine reader taken right after the write that produced them (a LevelDB snapshot), published by one
attribute assignment. So a read running while a write is in flight (the group committer runs writes in a
thread) sees the state before that write or after it, never a mix.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Self

import attrs

from borough.errors import ConfigError, NotFound, StorageError
from borough.kv import encode_bound
from borough.raft.records import ConfState, Entry, HardState, SnapshotMeta, Tombstone
from borough.raft.storage import LogCompacted, LogUnavailable
from borough.store import encoding as enc
from borough.store.batch import WriteBatch
from borough.store.state import MISSING, InvalidLogOperation, PartitionState, PartMap, RawBatch, Reader, View
from borough.store.translate import Translation

if TYPE_CHECKING:
    from borough.store.snapshot import SnapshotInstall, SnapshotReader

__all__ = ["InvalidLogOperation", "NodeMeta", "PartitionLog", "RawBatch", "Reader", "Store"]

logger = logging.getLogger(__name__)

_EVERYTHING_END: Final = b"\xff" * 16
_DIR_END: Final = enc.DIR[:-1] + bytes([enc.DIR[0] + 1])
_TRASH_END: Final = bytes([enc.TRASH[0] + 1])
_TOMB_END: Final = bytes([enc.TOMB[0] + 1])


@attrs.frozen(kw_only=True)
class NodeMeta:
    """Who this data dir belongs to: its node, and its cluster (None while the node has not joined one yet)."""

    node_id: str
    cluster_id: str | None
    format_version: int


class Store(abc.ABC):
    """One node's storage. Reads are synchronous and cheap; every change goes through ``write_batch()`` and
    ``write()``. Thread-safety: ``write`` (and the other writers) may run in a worker thread while the trio
    thread reads; two writers are serialised by a lock."""

    #: Whether ``write`` blocks on I/O, so the group committer should run it in a thread.
    blocking_writes: bool = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view: View | None = None
        self._next_id = 1
        self._node_meta: NodeMeta | None = None
        self._failed: BaseException | None = None
        self._active_staging: set[int] = set()
        self._garbage = False
        self._epoch = 0  # bumped by MemoryStore.crash(): installs begun before it are void
        #: The partitions that have a tombstone (one is never removed, only replaced), so that making a replica,
        #: which asks for its partition's tombstone several times, reads the engine only when there is one.
        self._tombstoned: set[str] = set()

    # ------------------------------------------------------------------------------------ engine interface

    @abc.abstractmethod
    def _engine_reader(self) -> Reader:
        """A reader that sees every write made so far (and, for LevelDB, no later ones)."""

    @abc.abstractmethod
    def _engine_batch(self, sync: bool) -> RawBatch: ...

    @abc.abstractmethod
    def _engine_commit(self, raw: RawBatch) -> None:
        """Write ``raw`` atomically (durably if it was made with ``sync=True``); raise ``StorageError``."""

    @abc.abstractmethod
    def _engine_close(self) -> None: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """What this store is, for messages: ``data dir /var/lib/borough`` or ``memory store``."""

    # ------------------------------------------------------------------------------------ open / close

    def _load(self) -> None:
        """Read node meta and every partition's state from the engine (at open, and after a crash)."""
        reader = self._engine_reader()
        fmt = reader.get(enc.META_FORMAT)
        if fmt is None:
            if any(True for _ in reader.scan(b"", _EVERYTHING_END, limit=1)):
                raise ConfigError(
                    f"{self.describe()} holds data but no Borough format version: it is not a Borough data dir; "
                    "point --data at another directory"
                )
            raw = self._engine_batch(True)
            raw.put(enc.META_FORMAT, enc.u64(enc.FORMAT_VERSION))
            self._engine_commit(raw)
            version = enc.FORMAT_VERSION
        else:
            version = enc.read_u64(fmt)
            if version > enc.FORMAT_VERSION:
                raise ConfigError(
                    f"{self.describe()} has data format version {version}, newer than this Borough reads "
                    f"({enc.FORMAT_VERSION}): run a newer Borough on it, or point --data at another directory"
                )
        self._node_meta = None
        node = reader.get(enc.META_NODE)
        if node is not None:
            node_id, cluster_id = enc.decode_value(node)
            self._node_meta = NodeMeta(node_id=node_id, cluster_id=cluster_id, format_version=version)
        self._garbage = False
        counter = reader.get(enc.META_NEXT_ID)
        next_id = enc.read_u64(counter) if counter is not None else 1
        parts: dict[str, PartitionState] = {}
        for key, value in reader.scan(enc.DIR, _DIR_END):
            st = self._load_partition(reader, enc.partition_name_from(key[1:]), enc.read_u64(value))
            parts[st.name] = st
            next_id = max(next_id, st.pid + 1, st.gen + 1)
        for key, _ in reader.scan(enc.TRASH, _TRASH_END):
            next_id = max(next_id, enc.read_u64(key[2:10]) + 1)
            self._garbage = True
        self._tombstoned = {enc.partition_name_from(key[1:]) for key, _ in reader.scan(enc.TOMB, _TOMB_END)}
        self._next_id = next_id
        self._active_staging.clear()
        self._view = View(PartMap(parts), self._engine_reader())
        logger.debug("%s: opened with %d replicas", self.describe(), len(parts))

    def _load_partition(self, reader: Reader, name: str, pid: int) -> PartitionState:
        pp = enc.part_prefix(pid)
        gen = reader.get(pp + enc.F_GEN)
        if gen is None:
            raise StorageError(f"partition {name!r} has no data generation record: {self.describe()} is corrupt")
        st = PartitionState(name, pid, enc.read_u64(gen))
        if (hard := reader.get(pp + enc.F_HARD)) is not None:
            st.hard = enc.decode_hard_state(hard)
        if (snap := reader.get(pp + enc.F_SNAP)) is not None:
            st.snap = enc.decode_snapshot_meta(snap)
        if (applied := reader.get(pp + enc.F_APPLIED)) is not None:
            st.applied = enc.read_u64(applied)
        end = enc.prefix_end(st.lp)
        for key, _ in reader.scan(st.lp, end, limit=1):
            st.log_lo = enc.read_u64(key[9:])
        for key, value in reader.scan(st.lp, end, reverse=True, limit=1):
            st.log_hi = enc.read_u64(key[9:])
            st.last_term = enc.entry_term(st.log_hi, value)
        return st

    def close(self) -> None:
        """Close the store. Unsynced writes are not made durable by closing. Idempotent."""
        with self._lock:
            if self._view is None:
                return
            self._view = None
            self._engine_close()

    @property
    def closed(self) -> bool:
        return self._view is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _v(self) -> View:
        view = self._view
        if view is None:
            raise StorageError(f"{self.describe()} is closed: open it again before using it")
        return view

    def _writable(self) -> View:
        view = self._v()
        if self._failed is not None:
            raise StorageError(
                f"{self.describe()} refuses writes after an earlier write failed ({self._failed}); "
                "restart the node once the disk is fixed"
            ) from self._failed
        return view

    # ------------------------------------------------------------------------------------ node meta

    def node_meta(self) -> NodeMeta | None:
        """The node and cluster this data dir belongs to, or None if it was never initialised."""
        self._v()
        return self._node_meta

    def init_node_meta(self, node_id: str, cluster_id: str | None) -> None:
        """Record (durably) which node and cluster this data dir belongs to. Once: calling it again with the
        same ids does nothing, with other ids raises ``ConfigError``. A node that asks to join a cluster first
        records its id alone (``cluster_id`` None), then its cluster once it has joined: if it stops in between
        (its join committed, the answer lost), it joins again under the same id, and the member table gains no
        member that never answers."""
        cluster_ok = cluster_id is None or (isinstance(cluster_id, str) and cluster_id)
        if not (isinstance(node_id, str) and node_id and cluster_ok):
            raise ValueError("node_id must be a non-empty string, cluster_id a non-empty string or None")
        with self._lock:
            self._writable()
            meta = self._node_meta
            if meta is not None:
                if (meta.node_id, meta.cluster_id) == (node_id, cluster_id):
                    return
                if meta.node_id != node_id or meta.cluster_id is not None:  # (only a claim may gain its cluster)
                    raise ConfigError(
                        f"{self.describe()} already belongs to node {meta.node_id!r} of cluster {meta.cluster_id!r}"
                        f", not node {node_id!r} of cluster {cluster_id!r}: point --data at another directory"
                    )
            raw = self._engine_batch(True)
            raw.put(enc.META_NODE, enc.encode_value([node_id, cluster_id]))
            self._commit(raw)
            self._node_meta = NodeMeta(node_id=node_id, cluster_id=cluster_id, format_version=enc.FORMAT_VERSION)

    def check_cluster(self, cluster_id: str) -> None:
        """Raise ``ConfigError`` if this data dir belongs to a cluster other than ``cluster_id``."""
        meta = self.node_meta()
        if meta is not None and meta.cluster_id is not None and meta.cluster_id != cluster_id:
            raise ConfigError(
                f"{self.describe()} belongs to cluster {meta.cluster_id!r}, but this node was asked to run in "
                f"cluster {cluster_id!r}: point --data at another directory, or remove this one to start afresh"
            )

    # ------------------------------------------------------------------------------------ reads

    def replicas(self) -> list[str]:
        """Names of the partitions that have state here, sorted (so a restart resumes every replica)."""
        return sorted(self._v().parts)

    def has_replica(self, partition: str) -> bool:
        """Whether ``partition`` has state here (``partition in replicas()``, without listing them all)."""
        return partition in self._v().parts

    def _state(self, partition: str) -> tuple[View, PartitionState]:
        view = self._v()
        st = view.parts.get(partition)
        if st is None:
            enc.partition_name_bytes(partition)  # a clear error for a bad name
            st = MISSING
        return view, st

    def hard_state(self, partition: str) -> HardState:
        return self._state(partition)[1].hard

    def snapshot_meta(self, partition: str) -> SnapshotMeta:
        return self._state(partition)[1].snap

    def applied_index(self, partition: str) -> int:
        return self._state(partition)[1].applied

    def first_index(self, partition: str) -> int:
        return self._state(partition)[1].snap.index + 1

    def last_index(self, partition: str) -> int:
        return self._state(partition)[1].last_index()

    def term(self, partition: str, index: int) -> int:
        """The term of the entry at ``index`` (see ``borough.raft.storage.LogStorage.term``)."""
        view, st = self._state(partition)
        snap = st.snap
        if index < snap.index:
            raise LogCompacted(f"index {index} of partition {partition!r} is compacted (snapshot at {snap.index})")
        if index == snap.index:
            return snap.term
        if index > st.last_index():
            raise LogUnavailable(f"index {index} of partition {partition!r} is beyond its last index {st.last_index()}")
        if index == st.log_hi and st.last_term >= 0:
            return st.last_term
        value = view.reader.get(st.lp + enc.pack_u64(index))
        if value is None:
            raise StorageError(f"log entry {index} of partition {partition!r} is missing: {self.describe()} is corrupt")
        return enc.entry_term(index, value)

    def entries(self, partition: str, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)``, at least one when ``lo < hi``, stopping before ``max_bytes`` would be
        exceeded (see ``borough.raft.storage.LogStorage.entries``)."""
        view, st = self._state(partition)
        if lo > hi:
            raise ValueError(f"entries: lo {lo} is greater than hi {hi}")
        if lo <= st.snap.index:
            raise LogCompacted(f"index {lo} of partition {partition!r} is compacted (snapshot at {st.snap.index})")
        if hi > st.last_index() + 1:
            raise LogUnavailable(
                f"index {hi - 1} of partition {partition!r} is beyond its last index {st.last_index()}"
            )
        out: list[Entry] = []
        if lo == hi:
            return out
        lp = st.lp
        total = 0
        expect = lo
        for key, value in view.reader.scan(lp + enc.pack_u64(lo), lp + enc.pack_u64(hi)):
            index = enc.read_u64(key[9:])
            if index != expect:
                break
            entry = enc.decode_entry(index, value)
            total += len(entry.data) + 24
            if out and total > max_bytes:
                return out
            out.append(entry)
            expect += 1
        if expect != hi:
            raise StorageError(
                f"log entry {expect} of partition {partition!r} is missing: {self.describe()} is corrupt"
            )
        return out

    def tombstone(self, partition: str) -> Tombstone | None:
        """What a deleted replica of ``partition`` left behind (see ``WriteBatch.destroy``), if any."""
        view = self._v()
        if partition not in self._tombstoned:
            enc.partition_name_bytes(partition)  # (a name no partition may have is refused, as the read would)
            return None
        value = view.reader.get(enc.tomb_key(partition))
        return None if value is None else enc.decode_tombstone(value)

    def log_storage(self, partition: str) -> PartitionLog:
        """The partition's log as the Raft core reads it (``borough.raft.storage.LogStorage``)."""
        enc.partition_name_bytes(partition)
        return PartitionLog(self, partition)

    def get_encoded(self, partition: str, key: str | bytes) -> bytes:
        """The value of ``key`` as ``encode_value`` encoded it. Raises ``NotFound``."""
        view, st = self._state(partition)
        kb = enc.encode_key(key)
        stored = view.reader.get(st.dp + kb) if st.pid else None
        if stored is None:
            raise NotFound(key, partition=partition)
        return enc.encoded_of(stored)

    def get(self, partition: str, key: str | bytes) -> Any:
        """The value of ``key`` in ``partition``. Raises ``borough.errors.NotFound``."""
        return enc.decode_value(self.get_encoded(partition, key))

    def export(self, partition: str) -> tuple[int, Iterator[tuple[str | bytes, bytes]]]:
        """The partition's applied index and every ``(key, encoded value)`` at exactly that index, from one view
        (a consistent export, whatever is written while it is read). Iterating may be slow for a big partition:
        run it in a thread in production."""
        view, st = self._state(partition)
        if st.pid == 0:
            return st.applied, iter(())
        dp = st.dp
        return st.applied, _items(view.reader.scan(dp, enc.prefix_end(dp), reverse=False, limit=None), True, True, True)

    def iterate(
        self,
        partition: str,
        *,
        gt: str | bytes | None = None,
        gte: str | bytes | None = None,
        lt: str | bytes | None = None,
        lte: str | bytes | None = None,
        reverse: bool = False,
        limit: int | None = None,
        keys: bool = True,
        values: bool = True,
        encoded: bool = False,
    ) -> Iterator[Any]:
        """The partition's items in bytewise key order (descending with ``reverse``) within the bounds, at most
        ``limit`` of them: ``(key, value)`` pairs, or keys only (``values=False``), or values only
        (``keys=False``); with ``encoded`` values come as ``encode_value`` bytes, undecoded (what ``get_encoded``
        gives). The items are those at the time of the call, whatever is written while iterating."""
        if gt is not None and gte is not None:
            raise ValueError("give at most one lower bound: gt or gte")
        if lt is not None and lte is not None:
            raise ValueError("give at most one upper bound: lt or lte")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"limit must be None or an int >= 0, not {limit!r}")
        if not keys and not values:
            raise ValueError("keys=False and values=False leaves nothing to iterate: ask for keys, values or both")
        view, st = self._state(partition)
        dp = st.dp
        start = dp
        stop = enc.prefix_end(dp)
        if gte is not None:
            start = dp + encode_bound(gte)
        elif gt is not None:
            start = dp + encode_bound(gt) + b"\x00"  # the least key greater than gt
        if lt is not None:
            stop = dp + encode_bound(lt)
        elif lte is not None:
            stop = dp + encode_bound(lte) + b"\x00"
        if st.pid == 0 or limit == 0 or start >= stop:
            return iter(())
        return _items(view.reader.scan(start, stop, reverse=bool(reverse), limit=limit), keys, values, encoded)

    # ------------------------------------------------------------------------------------ writes

    def write_batch(self) -> WriteBatch:
        return WriteBatch(self)

    def _data_gen(self, partition: str) -> int:
        view = self._view
        st = view.parts.get(partition) if view is not None else None
        return st.gen if st is not None else 0

    def _alloc_id(self) -> int:
        ident = self._next_id
        self._next_id += 1
        return ident

    def _commit(self, raw: RawBatch) -> None:
        try:
            self._engine_commit(raw)
        except BaseException as exc:
            # Fail-stop: after a failed write we cannot know what is on disk, so we stop writing.
            self._failed = exc
            raise

    def sync(self) -> None:
        """Make every write so far durable."""
        with self._lock:
            self._writable()
            self._commit(self._engine_batch(True))

    def write(self, batch: WriteBatch, *, sync: bool = True) -> None:
        """Write ``batch`` atomically; with ``sync=True`` it (and every earlier write) is durable on return.

        Raises ``InvalidLogOperation`` (nothing written) if a log op does not fit the partition's state, and
        ``StorageError`` if the engine failed (after which the store refuses further writes).
        """
        if batch._store is not self:
            raise ValueError("this write batch belongs to another store")
        with self._lock:
            view = self._writable()
            raw = self._engine_batch(sync)
            first_id = self._next_id
            done = Translation(view.parts, raw, self._alloc_id, self).run(batch._ops)
            if self._next_id != first_id:
                raw.put(enc.META_NEXT_ID, enc.pack_u64(self._next_id))
            self._commit(raw)
            # Publish: one new view (states and a reader taken now), swapped in by one assignment.
            self._view = View(view.parts.updated(done.changes), self._engine_reader())
            self._tombstoned.update(done.tombstoned)
            self._garbage = self._garbage or done.garbage
            for install in done.installs:
                self._active_staging.discard(install._gen)
                install._state = "installed"

    # ------------------------------------------------------------------------------------ snapshots

    def snapshot_chunks(self, partition: str, *, max_chunk_bytes: int = 1 << 20) -> SnapshotReader:
        """The partition's data, internal records and applied index as of this call, as self-describing chunks of about
        ``max_chunk_bytes`` (an iterator of ``bytes`` with an ``applied_index`` attribute; close it when done).
        Iterating may be slow for big partitions: run ``next()`` in a thread in production."""
        from borough.store.snapshot import SnapshotReader

        view, st = self._state(partition)
        return SnapshotReader(view.reader, st.gen if st.pid else None, st.applied, max_chunk_bytes)

    def records(self, partition: str) -> Iterator[tuple[bytes, bytes]]:
        """The partition's internal records (written by ``WriteBatch.apply``'s ``records``), in key order, as of
        this call."""
        view, st = self._state(partition)
        if st.pid == 0:
            return iter(())
        prefix = enc.records_prefix(st.gen)
        n = enc.PREFIX_LEN
        return ((k[n:], v) for k, v in view.reader.scan(prefix, enc.prefix_end(prefix)))

    def begin_snapshot_install(self, partition: str) -> SnapshotInstall:
        """Start receiving a snapshot of ``partition``'s data: add the chunks, then ``finish`` into a batch."""
        from borough.store.snapshot import SnapshotInstall

        enc.partition_name_bytes(partition)
        with self._lock:
            self._writable()
            gen = self._alloc_id()
            # The staging generation is garbage until the install's switch is written; the marker makes sure a
            # crash before then leaves nothing behind.
            raw = self._engine_batch(False)
            raw.put(enc.trash_key(enc.DATA, gen), b"")
            raw.put(enc.META_NEXT_ID, enc.pack_u64(self._next_id))
            self._commit(raw)
            self._active_staging.add(gen)
            return SnapshotInstall(self, partition, gen, self._epoch)

    def _write_staging(self, gen: int, epoch: int, items: list[tuple[bytes, bytes]]) -> None:
        with self._lock:
            self._writable()
            if epoch != self._epoch or gen not in self._active_staging:
                raise StorageError("this snapshot install was interrupted (crash or abort): begin a new one")
            raw = self._engine_batch(False)
            in_gen = enc.in_gen
            for k, v in items:
                raw.put(in_gen(k, gen), v)
            self._commit(raw)

    def _abort_staging(self, gen: int) -> None:
        with self._lock:
            self._active_staging.discard(gen)
            self._garbage = True

    # ------------------------------------------------------------------------------------ garbage

    @property
    def has_garbage(self) -> bool:
        """Whether destroyed replicas or replaced data generations still have keys to delete."""
        return self._garbage

    def collect_garbage(self, max_keys: int = 4096) -> int:
        """Delete up to ``max_keys`` keys of destroyed replicas and replaced data (unsynced: losing the deletes
        in a crash only means doing them again). Returns how many were deleted; 0 means nothing is left."""
        with self._lock:
            self._writable()
            reader = self._engine_reader()
            raw = self._engine_batch(False)
            budget = max_keys
            done = True
            for marker, _ in reader.scan(enc.TRASH, _TRASH_END):
                space = marker[1:2]
                if space == enc.DATA and enc.read_u64(marker[2:10]) in self._active_staging:
                    continue
                # A DATA generation's marker stands for its internal records too (see ``encoding``).
                spaces = enc.GEN_SPACES if space == enc.DATA else (space,)
                for prefix in [s + marker[2:10] for s in spaces]:
                    n = 0
                    for key in reader.scan_keys(prefix, enc.prefix_end(prefix), limit=budget + 1):
                        if n == budget:
                            break
                        raw.delete(key)
                        n += 1
                    budget -= n
                    if budget == 0:
                        done = False
                        break
                if not done:
                    break
                raw.delete(marker)  # after its keys, in the same batch: a crash can't lose one without the other
            self._commit(raw)
            if done:
                self._garbage = False
            return max_keys - budget


def _identity(b: bytes) -> bytes:
    return b


def _items(it: Iterator[tuple[bytes, bytes]], keys: bool, values: bool, encoded: bool = False) -> Iterator[Any]:
    loads = _identity if encoded else enc.decode_value
    marker = enc.BYTES_KEY_BYTE
    n = enc.PREFIX_LEN
    try:
        if keys and values:
            for k, v in it:
                if v[0] == marker:
                    yield k[n:], loads(v[1:])
                else:
                    yield k[n:].decode(), loads(v)
        elif keys:
            for k, v in it:
                yield k[n:] if v[0] == marker else k[n:].decode()
        else:
            for _, v in it:
                yield loads(v[1:] if v[0] == marker else v)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class PartitionLog:
    """One partition's log and Raft records as the Raft core reads them: ``borough.raft.storage.LogStorage``.
    Reads always reflect the store's latest published state."""

    __slots__ = ("partition", "store")

    def __init__(self, store: Store, partition: str) -> None:
        self.store = store
        self.partition = partition

    def initial_state(self) -> tuple[HardState, ConfState]:
        _, st = self.store._state(self.partition)
        return st.hard, st.snap.conf_state

    def first_index(self) -> int:
        return self.store.first_index(self.partition)

    def last_index(self) -> int:
        return self.store.last_index(self.partition)

    def term(self, index: int) -> int:
        return self.store.term(self.partition, index)

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        return self.store.entries(self.partition, lo, hi, max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self.store.snapshot_meta(self.partition)
