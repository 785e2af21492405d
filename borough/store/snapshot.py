"""Snapshots of a partition's key/value data: reading one out in chunks, and installing one from chunks.

This module owns the chunk format and its validation. A chunk is self-describing: a magic tag and a CRC32
guard a CBOR body ``[applied_index, seq, after, last, [key, stored_value, key, stored_value, ...]]`` where
``after`` is the last key of the previous chunk (None in the first), so an installer can check that chunks
join up in order whichever peer sent them. Keys are generation-relative: one space byte (``DATA`` for user
data, ``RECS`` for the partition's internal records, such as client sessions) then the key within it, so one
ordered stream carries both and the receiver ends with the same data *and* records; values are stored bytes
(see ``encoding``), copied as they are. Any malformed chunk raises ``RemoteProtocolError`` (it came from
a peer) and writes nothing. This module does not know the key layout beyond that, nor LevelDB, nor trio.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import cbor2

from borough.errors import RemoteProtocolError, StorageError
from borough.raft.records import SnapshotMeta
from borough.store import encoding as enc

if TYPE_CHECKING:
    from borough.store.base import Reader, Store
    from borough.store.batch import WriteBatch

__all__ = ["SnapshotInstall", "SnapshotReader"]

MAGIC: Final = b"BSN2"  # 2: keys carry their space byte (data or records)
_HEAD = len(MAGIC) + 4


def encode_chunk(applied: int, seq: int, after: bytes | None, last: bool, flat: list[bytes]) -> bytes:
    body = cbor2.dumps([applied, seq, after, last, flat])
    return MAGIC + zlib.crc32(body).to_bytes(4, "big") + body


def decode_chunk(chunk: bytes) -> tuple[int, int, bytes | None, bool, list[tuple[bytes, bytes]]]:
    """Validate a chunk and return ``(applied_index, seq, after, last, items)``; raise RemoteProtocolError."""
    if not isinstance(chunk, bytes | bytearray | memoryview):
        raise RemoteProtocolError(f"a snapshot chunk must be bytes, not {type(chunk).__name__}")
    chunk = bytes(chunk)
    if len(chunk) < _HEAD or chunk[: len(MAGIC)] != MAGIC:
        raise RemoteProtocolError("not a Borough snapshot chunk (bad magic): the peer sent something else")
    body = chunk[_HEAD:]
    if zlib.crc32(body) != int.from_bytes(chunk[len(MAGIC) : _HEAD], "big"):
        raise RemoteProtocolError("snapshot chunk checksum mismatch: the chunk was corrupted in transit")
    try:
        obj = cbor2.loads(body)
        applied, seq, after, last, flat = obj
    except Exception as exc:
        raise RemoteProtocolError(f"snapshot chunk body is malformed ({exc})") from exc
    if type(applied) is not int or applied < 0 or type(seq) is not int or seq < 0 or type(last) is not bool:
        raise RemoteProtocolError("snapshot chunk header is malformed (applied index, seq or last flag)")
    if after is not None and (type(after) is not bytes or not after):
        raise RemoteProtocolError("snapshot chunk 'after' key is malformed")
    if type(flat) is not list or len(flat) % 2:
        raise RemoteProtocolError("snapshot chunk items are malformed")
    items: list[tuple[bytes, bytes]] = []
    prev = after
    for i in range(0, len(flat), 2):
        key, value = flat[i], flat[i + 1]
        if type(key) is not bytes or len(key) < 2 or type(value) is not bytes or not value:
            raise RemoteProtocolError(f"snapshot chunk item {i // 2} is malformed")
        if key[:1] not in enc.GEN_SPACES:
            raise RemoteProtocolError(f"snapshot chunk item {i // 2} names no key space of a partition")
        if value == enc.BYTES_KEY and key[:1] == enc.DATA:
            raise RemoteProtocolError(f"snapshot chunk item {i // 2} has a type marker but no value")
        if prev is not None and key <= prev:
            raise RemoteProtocolError(f"snapshot chunk item {i // 2} is out of key order")
        prev = key
        items.append((key, value))
    return applied, seq, after, last, items


def _generation(reader: Reader, gen: int) -> Iterator[tuple[bytes, bytes]]:
    """Every key of generation ``gen``, space by space (``GEN_SPACES`` is in key order, so this is sorted)."""
    for space in enc.GEN_SPACES:
        prefix = space + enc.pack_u64(gen)
        it = reader.scan(prefix, enc.prefix_end(prefix))
        try:
            yield from it
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()


class SnapshotReader(Iterator[bytes]):
    """The chunks of one partition's data as of the moment it was made (``Store.snapshot_chunks``).

    Always yields at least one chunk (an empty partition gives one empty, last chunk)."""

    def __init__(self, reader: Reader, gen: int | None, applied_index: int, max_chunk_bytes: int) -> None:
        if type(max_chunk_bytes) is not int or max_chunk_bytes < 1:
            raise ValueError(f"max_chunk_bytes must be a positive int, not {max_chunk_bytes!r}")
        #: The applied index the data reflects; the snapshot's ``SnapshotMeta.index`` must equal it.
        self.applied_index = applied_index
        self._max = max_chunk_bytes
        self._seq = 0
        self._after: bytes | None = None
        self._pending: tuple[bytes, bytes] | None = None
        self._done = False
        self._it: Iterator[tuple[bytes, bytes]] = iter(()) if gen is None else _generation(reader, gen)

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        n = enc.PREFIX_LEN
        flat: list[bytes] = []
        size = 0
        it = self._it
        last = False
        item = self._pending
        self._pending = None
        while True:
            if item is None:
                item = next(it, None)
                if item is None:
                    last = True
                    break
            k, v = item
            if flat and size + len(k) + len(v) > self._max - n:
                self._pending = item
                break
            key = k[:1] + k[n:]  # the space byte, then the key: drop the generation id
            flat.append(key)
            flat.append(v)
            size += len(key) + len(v) + 8
            item = None
        chunk = encode_chunk(self.applied_index, self._seq, self._after, last, flat)
        self._seq += 1
        if flat:
            self._after = flat[-2]
        if last:
            self.close()
        return chunk

    def close(self) -> None:
        self._done = True
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SnapshotInstall:
    """Receives one snapshot of a partition's data (``Store.begin_snapshot_install``).

    Chunks go into a fresh data generation that nothing reads; ``finish`` adds the switch to a write batch,
    and once that batch is written the partition's data, applied index and snapshot meta are the snapshot's,
    all at once. A chunk already received (``seq < next_seq``) is ignored, so a transfer can resume."""

    def __init__(self, store: Store, partition: str, gen: int, epoch: int) -> None:
        self._store = store
        self.partition = partition
        self._gen = gen
        self._epoch = epoch
        self._applied_index = -1
        self._after: bytes | None = None
        self.next_seq = 0
        self.done = False
        self._state = "receiving"  # -> "finished" -> "installed", or "aborted"

    @property
    def applied_index(self) -> int | None:
        """The applied index the chunks carry (None before the first chunk)."""
        return None if self._applied_index < 0 else self._applied_index

    def add_chunk(self, chunk: Any) -> bool:
        """Validate and store one chunk. Returns False for a chunk already received. Raises
        ``RemoteProtocolError`` for a malformed or out-of-order chunk (nothing is written then)."""
        self._check_receiving()
        applied, seq, after, last, items = decode_chunk(chunk)
        if seq < self.next_seq:
            return False
        if seq > self.next_seq:
            raise RemoteProtocolError(f"snapshot chunk {seq} arrived before chunk {self.next_seq}")
        if self.done:
            raise RemoteProtocolError("a snapshot chunk arrived after the last one")
        if self._applied_index >= 0 and applied != self._applied_index:
            raise RemoteProtocolError(
                f"snapshot chunk {seq} is of applied index {applied}, earlier ones of {self._applied_index}"
            )
        if after != self._after:
            raise RemoteProtocolError(f"snapshot chunk {seq} does not continue where chunk {seq - 1} ended")
        if items:
            self._store._write_staging(self._gen, self._epoch, items)
            self._after = items[-1][0]
        self._applied_index = applied
        self.next_seq = seq + 1
        self.done = last
        return True

    def finish(self, batch: WriteBatch, meta: SnapshotMeta) -> None:
        """Add the switch to ``batch``: when it is written, the partition's data becomes the snapshot's, its
        applied index the snapshot's and its snapshot meta ``meta`` (whose index must be that applied index;
        the log is treated as by ``WriteBatch.set_snapshot_meta``)."""
        self._check_receiving()
        if not self.done:
            raise ValueError(f"the snapshot is incomplete: chunk {self.next_seq} and later are still missing")
        if not isinstance(meta, SnapshotMeta):
            raise TypeError(f"meta must be a SnapshotMeta, not {type(meta).__name__}")
        if meta.index != self._applied_index:
            raise ValueError(
                f"the snapshot meta index {meta.index} differs from the data's applied index {self._applied_index}"
            )
        if batch._store is not self._store:
            raise ValueError("this write batch belongs to another store")
        batch._install(self.partition, self, meta)
        self._state = "finished"

    def _check_receiving(self) -> None:
        if self._epoch != self._store._epoch:
            raise StorageError("this snapshot install was interrupted by a crash: begin a new one")
        if self._state != "receiving":
            raise StorageError(f"this snapshot install is {self._state}: begin a new one")

    def abort(self) -> None:
        """Give up: the staged data will be deleted by ``Store.collect_garbage``. Also call it when the batch
        ``finish`` went into was not written (until then the staged data is kept for it). Idempotent."""
        if self._state == "receiving" or self._state == "finished":
            self._state = "aborted"
            self._store._abort_staging(self._gen)

    def _check_switchable(self, store: Store) -> None:
        from borough.store.base import InvalidLogOperation

        # A caller's mistake, not a disk failure: raise what fails only this batch in the group committer.
        if store is not self._store or self._epoch != store._epoch or self._state != "finished":
            raise InvalidLogOperation(
                f"the snapshot install of partition {self.partition!r} was aborted or interrupted by a crash: "
                "begin a new one"
            )
        if self._gen not in store._active_staging:
            raise InvalidLogOperation(f"the snapshot install of partition {self.partition!r} was already written")

    def __repr__(self) -> str:
        return f"<SnapshotInstall {self.partition!r} {self._state} next_seq={self.next_seq} done={self.done}>"
