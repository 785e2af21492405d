"""Byte encodings of the store: user keys and values, Raft records, and the key layout of the node's database.

This module owns every byte the store puts on disk: which key space a key belongs to, how a partition's keys
are kept apart from every other partition's, and how keys, values, log entries and Raft records are encoded.
It knows nothing of LevelDB, of memory, of batches or of trio; both store implementations share it, so they
lay out their bytes identically.

Key layout (all integers 8-byte big-endian, so bytewise order is numeric order):

    META  + name                    node meta (format version, node/cluster id, id counter)
    DIR   + utf-8(partition name)   -> partition id          the name -> id directory
    PART  + pid + field             -> one Raft record of the partition (hard state, snapshot meta, ...)
    LOG   + pid + index             -> log entry (term, kind, data)
    DATA  + gen + user key          -> stored value          a partition's key/value data, one generation
    TRASH + space + id              -> b""                   a LOG pid or DATA gen whose keys are garbage
    RECS  + gen + record key        -> record bytes          a partition's internal records (client sessions)

A stored value is the CBOR encoding of the value when the key was written as ``str``, and ``BYTES_KEY`` +
the CBOR when it was written as ``bytes`` (0xFF is CBOR's "break" code, which never starts a data item), so the
common case stores the caller's encoded bytes as they are.

Partition names appear only as whole DIR keys; every other key space is addressed by a fixed-width numeric id
that is never reused, so no partition's keys can fall inside another's, whatever the names are.

A partition's internal records (``borough.node.session_table``: which client writes it applied) live beside
its data under the same generation id, in a key space no user key can reach: they are written in the same batch
as the data they describe, streamed with it in a snapshot, switched with it by an install and collected with it
as garbage (a DATA trash marker stands for both spaces of its generation).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, TypeVar

import cbor2

from borough.errors import StorageError
from borough.kv import decode_value, encode_key, encode_value
from borough.raft.records import Entry, HardState, SnapshotMeta, Tombstone

_R = TypeVar("_R")

__all__ = [
    "FORMAT_VERSION",
    "decode_value",
    "encode_key",
    "encode_value",
]

FORMAT_VERSION: Final = 1

META: Final = b"\x01"
DIR: Final = b"\x02"
PART: Final = b"\x03"
LOG: Final = b"\x04"
DATA: Final = b"\x05"
TRASH: Final = b"\x06"
TOMB: Final = b"\x07"  # + partition name: the Tombstone of a deleted replica
RECS: Final = b"\x08"  # + gen + record key: a partition's internal records, beside DATA + gen
#: The key spaces of one data generation, in key order (a snapshot streams them in this order).
GEN_SPACES: Final = (DATA, RECS)

META_FORMAT: Final = META + b"format"
META_NODE: Final = META + b"node"
META_NEXT_ID: Final = META + b"next_id"

# Fields of a partition's PART records.
F_NAME: Final = b"n"
F_GEN: Final = b"g"
F_HARD: Final = b"h"
F_SNAP: Final = b"s"
F_APPLIED: Final = b"a"
PART_FIELDS: Final = (F_NAME, F_GEN, F_HARD, F_SNAP, F_APPLIED)

# Marks a stored value whose key was written as bytes, so keys come back in the type they were written.
BYTES_KEY: Final = b"\xff"
BYTES_KEY_BYTE: Final = 0xFF

PREFIX_LEN: Final = 9  # one space byte + an 8-byte id

_U64 = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">QB")
pack_u64 = _U64.pack
unpack_u64 = _U64.unpack


def u64(n: int) -> bytes:
    return _U64.pack(n)


def read_u64(b: bytes) -> int:
    if len(b) != 8:
        raise StorageError(f"a stored 8-byte integer has {len(b)} bytes: the data dir is corrupt; restore it")
    return int(_U64.unpack(b)[0])


# ---------------------------------------------------------------------------------------------- user keys


def stored_value(key: str | bytes, encoded: bytes) -> bytes:
    """What is stored for ``key`` -> ``encoded`` (see the module docstring)."""
    return encoded if isinstance(key, str) else BYTES_KEY + encoded


def encoded_of(stored: bytes) -> bytes:
    """The CBOR part of a stored value."""
    return stored[1:] if stored[0] == BYTES_KEY_BYTE else stored


# ---------------------------------------------------------------------------------------------- user values


# ---------------------------------------------------------------------------------------------- partitions


def partition_name_bytes(name: str) -> bytes:
    """Directory key suffix for a partition name. Any non-empty ``str`` is a valid name (lone surrogates too:
    they round-trip through ``surrogatepass``)."""
    if not isinstance(name, str):
        raise TypeError(f"a partition name must be str, not {type(name).__name__}: {name!r:.60}")
    if not name:
        raise ValueError("a partition name must not be empty")
    return name.encode("utf-8", "surrogatepass")


def partition_name_from(b: bytes) -> str:
    return b.decode("utf-8", "surrogatepass")


def dir_key(name: str) -> bytes:
    return DIR + partition_name_bytes(name)


def part_prefix(pid: int) -> bytes:
    return PART + pack_u64(pid)


def log_prefix(pid: int) -> bytes:
    return LOG + pack_u64(pid)


def data_prefix(gen: int) -> bytes:
    return DATA + pack_u64(gen)


def records_prefix(gen: int) -> bytes:
    return RECS + pack_u64(gen)


def in_gen(space_and_key: bytes, gen: int) -> bytes:
    """The store key of a generation-relative key (one space byte, then the key) in generation ``gen``."""
    return space_and_key[:1] + pack_u64(gen) + space_and_key[1:]


def trash_key(space: bytes, ident: int) -> bytes:
    return TRASH + space + pack_u64(ident)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix`` (an 9-byte space + id prefix)."""
    return prefix[:1] + pack_u64(unpack_u64(prefix[1:9])[0] + 1)


# ---------------------------------------------------------------------------------------------- Raft records


def encode_entry(entry: Entry) -> bytes:
    return _ENTRY_HEAD.pack(entry.term, entry.kind) + entry.data


def decode_entry(index: int, b: bytes) -> Entry:
    try:
        term, kind = _ENTRY_HEAD.unpack_from(b)
    except struct.error:
        raise StorageError(f"log entry {index} is truncated ({len(b)} bytes): the data dir is corrupt") from None
    return Entry(term=term, index=index, kind=kind, data=b[9:])


def entry_term(index: int, b: bytes) -> int:
    if len(b) < 9:
        raise StorageError(f"log entry {index} is truncated ({len(b)} bytes): the data dir is corrupt")
    return int(_U64.unpack_from(b)[0])


def tomb_key(name: str) -> bytes:
    return TOMB + partition_name_bytes(name)


def _decode_record(b: bytes, from_list: Callable[[Any], _R], what: str) -> _R:
    try:
        return from_list(cbor2.loads(b))
    except Exception as exc:
        raise StorageError(f"{what} is corrupt ({exc})") from exc


def encode_tombstone(tomb: Tombstone) -> bytes:
    return cbor2.dumps(tomb.to_list())


def decode_tombstone(b: bytes) -> Tombstone:
    return _decode_record(b, Tombstone.from_list, "a stored replica tombstone")


def encode_hard_state(hs: HardState) -> bytes:
    return cbor2.dumps(hs.to_list())


def decode_hard_state(b: bytes) -> HardState:
    return _decode_record(b, HardState.from_list, "the stored Raft hard state")


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    return cbor2.dumps(meta.to_list())


def decode_snapshot_meta(b: bytes) -> SnapshotMeta:
    try:
        return SnapshotMeta.from_list(cbor2.loads(b))
    except Exception as exc:
        raise StorageError(f"the stored snapshot meta is corrupt ({exc})") from exc
