"""The write batch builder: every change to a store is collected here first, validated, then written at once.

This module owns the *what* of a write: it validates the caller's input (keys, encoded values, log entries,
Raft records) and records each change as a compact op, encoding what can be encoded without knowing the
store's current state. It must not know how ops become keys on disk for a given state (``base.Store.write``
does that, under the store's lock) nor anything of LevelDB or trio. A method that raises adds nothing, so a
batch holding an invalid op can never exist and a bad input writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from borough.raft.records import Entry, HardState, SnapshotMeta, Tombstone
from borough.store import encoding as enc

if TYPE_CHECKING:
    from borough.store.base import Store
    from borough.store.snapshot import SnapshotInstall

__all__ = ["WriteBatch"]

# Op codes: every op is a tuple whose first item is one of these and whose second is the partition name.
OP_HARD: Final = 0  # (OP_HARD, name, hard_state, encoded)
OP_APPEND: Final = 1  # (OP_APPEND, name, first, last, last_term, [(index_bytes, encoded_entry), ...])
OP_TRUNCATE: Final = 2  # (OP_TRUNCATE, name, from_index)
OP_COMPACT: Final = 3  # (OP_COMPACT, name, upto_index)
OP_SNAPSHOT_META: Final = 4  # (OP_SNAPSHOT_META, name, meta, encoded)
OP_APPLY: Final = 5  # (OP_APPLY, name, gen, [data_key, ...], [stored_value | None, ...], has_deletes, applied)
OP_DESTROY: Final = 6  # (OP_DESTROY, name, encoded_tombstone | None)
OP_INSTALL: Final = 7  # (OP_INSTALL, name, install, meta, encoded_meta)

_PUT: Final = "put"
_DEL: Final = "del"
_BYTES_KEY: Final = enc.BYTES_KEY
_BYTES_KEY_BYTE: Final = enc.BYTES_KEY_BYTE


def _index(value: object, what: str) -> int:
    if type(value) is not int or value < 0:  # bool is excluded on purpose
        raise TypeError(f"{what} must be a non-negative int, not {value!r:.60}")
    return value


def _prepare_op(op: Any, prefix: bytes) -> tuple[bytes, bytes | None]:
    """One apply op as a (data key, stored value or None for a delete) pair; raises a clear error."""
    shape = "an op must be ('put', key, encoded_value) or ('del', key)"
    try:
        kind = op[0]
        key = op[1]
        n = len(op)
    except (TypeError, IndexError, KeyError):
        raise ValueError(f"{shape}, not {op!r:.80}") from None
    kb = enc.encode_key(key)  # TypeError / ValueError for a bad key
    if kind == _PUT and n == 3:
        value = op[2]
        if type(value) is not bytes:
            raise TypeError(
                f"the value of put {key!r:.60} must be bytes from encode_value(), not {type(value).__name__}"
            )
        if not value or value[0] == _BYTES_KEY_BYTE:
            raise ValueError(f"the value of put {key!r:.60} is not CBOR from encode_value(): {value!r:.40}")
        return prefix + kb, enc.stored_value(key, value)
    if kind == _DEL and n == 2:
        return prefix + kb, None
    raise ValueError(f"{shape}, not {op!r:.80}")


class WriteBatch:
    """Changes to any number of partitions, written together by ``Store.write`` (atomically, in order).

    Make one with ``store.write_batch()``. Ops on one partition take effect in the order they were added.
    Nothing is visible to reads until the batch is written.
    """

    __slots__ = ("_ops", "_store", "nbytes")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ops: list[tuple[Any, ...]] = []
        #: Approximate bytes this batch will write (for backpressure in the group committer).
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._ops)

    def __repr__(self) -> str:
        return f"<WriteBatch {len(self._ops)} ops, ~{self.nbytes} bytes>"

    def set_hard_state(self, partition: str, hard_state: HardState) -> None:
        """Persist the partition's Raft hard state (term, vote, commit)."""
        if type(partition) is not str or not partition:  # (the hot path skips the call; the same check)
            enc.partition_name_bytes(partition)
        if not isinstance(hard_state, HardState):
            raise TypeError(f"hard_state must be a HardState, not {type(hard_state).__name__}")
        encoded = enc.encode_hard_state(hard_state)
        self._ops.append((OP_HARD, partition, hard_state, encoded))
        self.nbytes += len(encoded) + 16

    def append(self, partition: str, entries: Sequence[Entry]) -> None:
        """Append consecutive log entries. Stored entries at ``entries[0].index`` and beyond are replaced (and
        any stored after the last new one dropped): Raft's conflict truncation (§5.3). ``entries[0].index``
        must lie in ``[first_index, last_index + 1]`` when the batch is written."""
        if type(partition) is not str or not partition:
            enc.partition_name_bytes(partition)
        if not entries:
            return
        items: list[tuple[bytes, bytes]] = []
        pack = enc.pack_u64
        head = enc._ENTRY_HEAD.pack
        prev = -1
        size = 0
        for e in entries:
            if type(e) is not Entry:
                raise TypeError(f"log entries must be Entry records, not {type(e).__name__}")
            i = e.index
            if prev >= 0 and i != prev + 1:
                raise ValueError(f"log entries must have consecutive indexes: {i} follows {prev}")
            if type(i) is not int or i < 1:
                raise ValueError(f"a log entry index must be an int >= 1, not {i!r}")
            if type(e.term) is not int or e.term < 0 or not 0 <= e.kind <= 255 or type(e.data) is not bytes:
                raise ValueError(f"malformed log entry {e!r:.120}: term must be an int >= 0, kind 0..255, data bytes")
            prev = i
            value = head(e.term, e.kind) + e.data
            size += len(value)
            items.append((pack(i), value))
        first = entries[0]
        last = entries[-1]
        self._ops.append((OP_APPEND, partition, first.index, last.index, last.term, items))
        self.nbytes += size + 17 * len(items)

    def truncate_suffix(self, partition: str, from_index: int) -> None:
        """Drop the log entries at ``from_index`` and after. ``from_index`` must be above the snapshot index."""
        enc.partition_name_bytes(partition)
        self._ops.append((OP_TRUNCATE, partition, _index(from_index, "from_index")))
        self.nbytes += 16

    def compact(self, partition: str, upto_index: int) -> None:
        """Drop the log entries at ``upto_index`` and before; they must be covered by the snapshot meta (set it
        first, in this batch or an earlier one)."""
        enc.partition_name_bytes(partition)
        self._ops.append((OP_COMPACT, partition, _index(upto_index, "upto_index")))
        self.nbytes += 16

    def set_snapshot_meta(self, partition: str, meta: SnapshotMeta) -> None:
        """Record the snapshot the log now starts after. Its index may not go backwards; when it lies beyond
        the last stored entry, the whole stored log is dropped (it is all covered by the snapshot)."""
        enc.partition_name_bytes(partition)
        if not isinstance(meta, SnapshotMeta):
            raise TypeError(f"meta must be a SnapshotMeta, not {type(meta).__name__}")
        _index(meta.index, "the snapshot index")
        _index(meta.term, "the snapshot term")
        encoded = enc.encode_snapshot_meta(meta)
        self._ops.append((OP_SNAPSHOT_META, partition, meta, encoded))
        self.nbytes += len(encoded) + 16

    def apply(
        self,
        partition: str,
        ops: Iterable[Sequence[Any]],
        applied_index: int,
        records: Iterable[tuple[bytes, bytes | None]] = (),
    ) -> None:
        """Apply key/value changes and record ``applied_index``, atomically with the rest of the batch.

        ``ops`` are ``("put", key, encoded_value)`` (the value encoded with ``encode_value``) and
        ``("del", key)``. Keys are ``str`` or ``bytes``; ``str`` ``"a"`` and ``bytes`` ``b"a"`` are the same
        key and the last write decides which type reads return. The applied index may not go backwards.
        ``records`` are ``(key, value or None to delete)`` changes to the partition's internal records (see
        ``Store.records``), which no user read or write can reach: non-empty ``bytes`` keys and ``bytes`` values.
        """
        if type(partition) is not str or not partition:
            enc.partition_name_bytes(partition)
        if type(applied_index) is not int or applied_index < 0:
            _index(applied_index, "applied_index")
        gen = self._store._data_gen(partition)
        prefix = enc.data_prefix(gen)
        keys: list[bytes] = []
        values: list[bytes | None] = []
        add_key = keys.append
        add_value = values.append
        deletes = False
        # The hot path (a put of a plain str or bytes key, as a 3-tuple or 3-list) uses only locals and no calls, and
        # stores a str key's encoded value as it is; anything else goes through _prepare_op, which also makes
        # every error message.
        put_ = _PUT
        bytes_key = _BYTES_KEY
        marker = _BYTES_KEY_BYTE
        for op in ops:
            t = type(op)
            if (t is tuple or t is list) and len(op) == 3:  # (a decoded command's ops are lists)
                kind, key, value = op
                if kind == put_ and type(value) is bytes and key and value and value[0] != marker:
                    t = type(key)
                    if t is str:
                        try:
                            add_key(prefix + key.encode())
                        except UnicodeEncodeError:
                            enc.encode_key(key)  # raises the clear ValueError
                        add_value(value)
                        continue
                    if t is bytes:
                        add_key(prefix + key)
                        add_value(bytes_key + value)
                        continue
            data_key, stored = _prepare_op(op, prefix)
            add_key(data_key)
            add_value(stored)
            if stored is None:
                deletes = True
        rprefix = enc.records_prefix(gen)
        for rkey, rvalue in records:
            if type(rkey) is not bytes or not rkey or not (rvalue is None or type(rvalue) is bytes):
                raise TypeError(f"a record is (non-empty bytes key, bytes value or None), not {(rkey, rvalue)!r:.80}")
            add_key(rprefix + rkey)
            add_value(rvalue)
            if rvalue is None:
                deletes = True
        size = sum(map(len, keys)) + sum(map(len, filter(None, values)))
        self._ops.append((OP_APPLY, partition, gen, keys, values, deletes, applied_index))
        self.nbytes += size + 16

    def destroy(self, partition: str, tombstone: Tombstone | None = None) -> None:
        """Delete every trace of the replica (Raft state, log, data) but ``tombstone``, which is kept for
        ``Store.tombstone`` (replacing an earlier one). Later ops in this batch on the same partition start it
        afresh. The data's keys are removed by ``Store.collect_garbage`` afterwards."""
        enc.partition_name_bytes(partition)
        encoded = None if tombstone is None else enc.encode_tombstone(tombstone)
        self._ops.append((OP_DESTROY, partition, encoded))
        self.nbytes += 16 + (len(encoded) if encoded else 0)

    def _install(self, partition: str, install: SnapshotInstall, meta: SnapshotMeta) -> None:
        encoded = enc.encode_snapshot_meta(meta)
        self._ops.append((OP_INSTALL, partition, install, meta, encoded))
        self.nbytes += len(encoded) + 32

    def extend(self, other: WriteBatch) -> None:
        """Add ``other``'s ops after this batch's own (the group committer merges builders this way)."""
        if other._store is not self._store:
            raise ValueError("cannot merge write batches of two different stores")
        self._ops.extend(other._ops)
        self.nbytes += other.nbytes
