"""A partition's outbox: the effects on other partitions that its committed transactions still owe.

This module owns the outbox records of one ordinary partition (issue 18). A handler's writes to *other*
partitions (``request.other_partition(...)``) are not sent while it runs: they travel in its transaction's
entry, and applying that entry puts each target's ops in the outbox with the next *effect seq*. Whoever leads
the partition then sends each one as a session write (``borough.node.session_table``) under the partition's own
effects session: the outbox's session id and the effect's seq, so the target applies it once however often it
is sent, by this leader or the next. Once an effect is acknowledged, the leader's next entry lists its seq as
``done`` and applying that removes it. An aborted or re-run handler's effects never enter the outbox.

The ``low`` sent with an effect is the lowest seq the outbox still holds for the same target, so the target
keeps the result of every effect that may still be sent again (and forgets the rest).

Records (in the partition's record space, next to the session table's ``c`` and ``s`` records): ``b"n"`` the
outbox's ``[session id, next seq]``; ``b"o" + seq`` (8-byte big-endian) ``[target, ops]``. Pure data: no trio,
no store writes (the state machine takes ``changes()`` into its batch).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Any, Final

import attrs
import cbor2

from borough.node.session_table import SESSION_ID_BYTES, SessionRef

__all__ = ["Effect", "Outbox"]

_HEADER: Final = b"n"
_EFFECT: Final = b"o"
_U64 = struct.Struct(">Q")


@attrs.frozen(slots=True)
class Effect:
    """One effect owed: ``ops`` (``["put", key, encoded]`` / ``["del", key]`` lists) for ``target``."""

    seq: int
    target: str
    ops: tuple[list[Any], ...]


class Outbox:
    def __init__(self) -> None:
        self.session: bytes | None = None
        self.next_seq = 1
        self._effects: dict[int, Effect] = {}
        self._changes: dict[bytes, bytes | None] = {}

    def __len__(self) -> int:
        return len(self._effects)

    def pending(self) -> list[Effect]:
        """The effects owed, oldest first."""
        return [self._effects[s] for s in sorted(self._effects)]

    def ref(self, effect: Effect) -> SessionRef:
        """The session write ``effect`` is sent as."""
        assert self.session is not None
        low = min(s for s, e in self._effects.items() if e.target == effect.target) if effect.seq in self else 1
        return SessionRef(self.session, effect.seq, min(low, effect.seq))

    def __contains__(self, seq: object) -> bool:
        return seq in self._effects

    def add(
        self, partition: str, index: int, stamp: float, effects: Iterable[tuple[str, tuple[list[Any], ...]]]
    ) -> list[int]:
        """Owe ``effects`` (applied at log ``index``); returns their seqs. The session id is drawn from the first
        entry that owes anything (the same on every replica: it depends only on the log), so a partition deleted
        and made again under the same name starts a new session."""
        seqs: list[int] = []
        for target, ops in effects:
            if not ops:
                continue
            if self.session is None:
                seed = cbor2.dumps([partition, index, stamp])
                self.session = hashlib.blake2b(seed, digest_size=SESSION_ID_BYTES).digest()
            seq = self.next_seq
            self.next_seq += 1
            self._effects[seq] = Effect(seq, target, tuple(ops))
            self._changes[_EFFECT + _U64.pack(seq)] = cbor2.dumps([target, list(ops)])
            seqs.append(seq)
        if seqs:
            self._changes[_HEADER] = cbor2.dumps([self.session, self.next_seq])
        return seqs

    def done(self, seqs: Iterable[int]) -> None:
        """The effects ``seqs`` were applied by their targets: forget them (unknown seqs are ignored)."""
        for seq in seqs:
            if self._effects.pop(seq, None) is not None:
                self._changes[_EFFECT + _U64.pack(seq)] = None

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        changes, self._changes = self._changes, {}
        return list(changes.items())

    @classmethod
    def load(cls, records: Iterable[tuple[bytes, bytes]]) -> Outbox:
        outbox = cls()
        for key, value in records:
            if key == _HEADER:
                session, next_seq = cbor2.loads(value)
                outbox.session, outbox.next_seq = bytes(session), int(next_seq)
            elif key[:1] == _EFFECT and len(key) == 9:
                seq = _U64.unpack(key[1:])[0]
                target, ops = cbor2.loads(value)
                outbox._effects[seq] = Effect(seq, target, tuple(ops))
        return outbox
