"""A handler's transaction as a Raft entry, and how every replica decides whether it commits.

This module owns the transaction command of an ordinary partition (issue 18) and its validation. A handler's
run on the leader produces one command: the writes it buffered, what it read (each key with a digest of the
value it saw, or None for a missing key; each iterated range with a digest of its items), the effects it left
for other partitions, its reply and the request's ``SessionRef``. Applying it, every replica checks that each
read would give the same answer *now*, at the entry's place in the log (optimistic concurrency validated at
apply time, as FoundationDB's resolvers do, but by every replica on its own copy): if so the writes apply, the
reply is recorded under the session and the effects enter the partition's outbox, all in the one batch of the
entry; if not nothing applies and the leader runs the handler again.

Validation compares *values*, not versions: a transaction commits only if every value it read is the value
at its commit index, so it is equivalent to running alone at that index (serializable, in log order). That
needs no per-key version in the store, and a value changed and changed back (A, B, A) is no conflict, rightly:
the handler would have seen A either way. It is deterministic: it depends only on the partition's state at the
entry and the entry itself, so all replicas agree, whichever leader proposed it and however late (an old
leader's handler still running when a new leader commits others simply fails validation or is never committed).

Pure data and store reads: no trio, no Raft, no network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs
import cbor2

from borough.kv import encode_bound, encode_key
from borough.node.reads import read_value
from borough.node.records import ScanRange
from borough.node.session_table import SessionRef
from borough.store.base import Store

__all__ = [
    "TXN_V1",
    "Conflict",
    "Committed",
    "TxnCommand",
    "range_digest",
    "validate",
    "value_digest",
]

#: The version tag that opens a transaction command (a plain write's is 1).
TXN_V1: Final = 2
_DIGEST_BYTES: Final = 16


def value_digest(raw: bytes | None) -> bytes | None:
    """What a read records of the encoded value it saw (None: the key was missing)."""
    return None if raw is None else hashlib.blake2b(raw, digest_size=_DIGEST_BYTES).digest()


def range_digest(items: Iterable[tuple[str | bytes, bytes]]) -> bytes:
    """What a range read records of the items it saw, in ascending key order (key type counts: it is what
    reads return)."""
    h = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    for key, raw in items:
        kb = encode_key(key)
        h.update(b"b" if isinstance(key, bytes) else b"s")
        h.update(len(kb).to_bytes(4, "big"))
        h.update(kb)
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.digest()


@attrs.frozen(slots=True)
class TxnCommand:
    """One handler transaction (see the module docstring). ``effects`` are ``(partition, ops)`` in the order the
    handler made them; ``done`` are outbox seqs this leader saw applied (see ``borough.node.effects_table``)."""

    ops: tuple[list[Any], ...] = ()
    reads: tuple[tuple[str | bytes, bytes | None], ...] = ()
    ranges: tuple[tuple[ScanRange, bytes], ...] = ()
    effects: tuple[tuple[str, tuple[list[Any], ...]], ...] = ()
    reply: Any = None
    session: SessionRef | None = None
    done: tuple[int, ...] = ()

    def encode(self, *, stamp: float, expiry: float) -> bytes:
        return cbor2.dumps(
            [
                TXN_V1,
                stamp,
                expiry,
                None if self.session is None else self.session.to_list(),
                list(self.ops),
                [[k, d] for k, d in self.reads],
                [[r.to_list(), d] for r, d in self.ranges],
                [[p, list(ops)] for p, ops in self.effects],
                self.reply,
                list(self.done),
            ]
        )

    @classmethod
    def decode(cls, command: list[Any]) -> tuple[float, float, TxnCommand]:
        """``(stamp, expiry, command)`` of a decoded log entry that opens with ``TXN_V1``; raises on anything
        malformed (the state machine skips such an entry on every replica alike)."""
        _, stamp, expiry, ref, ops, reads, ranges, effects, reply, done = command
        for op in ops:
            if not isinstance(op, list) or op[0] not in ("put", "del"):
                raise ValueError("a transaction's ops are put/del lists")
        txn = cls(
            ops=tuple(ops),
            reads=tuple((k, d) for k, d in reads),
            ranges=tuple((ScanRange.from_list(r), bytes(d)) for r, d in ranges),
            effects=tuple((str(p), tuple(o)) for p, o in effects),
            reply=reply,
            session=None if ref is None else SessionRef.from_list(ref),
            done=tuple(int(s) for s in done),
        )
        return float(stamp), float(expiry), txn


@attrs.frozen(slots=True)
class Committed:
    """The transaction applied (or, ``duplicate``, an earlier copy of its request did): its reply, and the outbox
    seqs its effects were given."""

    reply: Any
    effect_seqs: tuple[int, ...] = ()
    duplicate: bool = False


@attrs.frozen(slots=True)
class Conflict:
    """The transaction did not apply: something it read changed before its entry (``reason`` says what)."""

    reason: str


def validate(store: Store, partition: str, pending: Mapping[bytes, Any], txn: TxnCommand) -> Conflict | None:
    """Whether ``txn``'s reads still hold on ``store`` plus ``pending`` (the ops of earlier entries of the same
    apply round, by encoded key: the op list, not yet in the store). None: they do."""
    for key, seen in txn.reads:
        kb = encode_key(key)
        op = pending.get(kb)
        raw = read_value(store, partition, key) if op is None else (op[2] if op[0] == "put" else None)
        if value_digest(raw) != seen:
            return Conflict(f"key {key!r:.60} changed after the handler read it")
    for scan, seen_range in txn.ranges:
        if _range_now(store, partition, pending, scan) != seen_range:
            return Conflict("a range the handler iterated changed after it read it")
    return None


def in_range(kb: bytes, scan: ScanRange) -> bool:
    """Whether encoded key ``kb`` lies within ``scan``'s bounds."""
    if scan.gt is not None and not kb > encode_bound(scan.gt):
        return False
    if scan.gte is not None and not kb >= encode_bound(scan.gte):
        return False
    if scan.lt is not None and not kb < encode_bound(scan.lt):
        return False
    return not (scan.lte is not None and not kb <= encode_bound(scan.lte))


def _range_now(store: Store, partition: str, pending: Mapping[bytes, Any], scan: ScanRange) -> bytes:
    items: dict[bytes, tuple[str | bytes, bytes]] = {}
    for key, raw in store.iterate(partition, encoded=True, gt=scan.gt, gte=scan.gte, lt=scan.lt, lte=scan.lte):
        items[encode_key(key)] = (key, raw)
    for kb, op in pending.items():
        if in_range(kb, scan):
            if op[0] == "put":
                items[kb] = (op[1], op[2])
            else:
                items.pop(kb, None)
    return range_digest(items[kb] for kb in sorted(items))
