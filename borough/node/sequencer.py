"""A caller's side of exactly-once writes: its session id, the numbering of its writes, and what it awaits.

This module owns what a client or node (its routed ``Session``) puts on each write: a ``SessionRef`` of its
session id (``SESSION_ID_BYTES`` random bytes drawn once from the process's random source: a new process, or a
restarted node, is a new session), the write's seq (1, 2, 3, ...) and ``low``, the lowest seq still in flight
to the same partition when the write was numbered. A partition keeps only the results at or above ``low`` (see
``borough.node.session_table``), so what it remembers of this session is bounded by how many writes the
caller has in flight there. A write is in flight from numbering until its caller stops waiting (a result, an
error or a cancellation): one given up on is never sent again, and once later writes raise ``low`` past it a
late copy is refused by the partition. Pure bookkeeping: no trio, no routing.
"""

from __future__ import annotations

import random

from borough.node.session_table import SESSION_ID_BYTES, SessionRef

__all__ = ["InFlight", "Sequencer"]


class Sequencer:
    """The writes of one session, numbered; ``write(partition)`` holds one in flight."""

    def __init__(self, rng: random.Random) -> None:
        self.session = rng.getrandbits(8 * SESSION_ID_BYTES).to_bytes(SESSION_ID_BYTES, "big")
        self._next = 1
        # By partition, the seqs in flight in the order they were numbered (a dict as an ordered set): the lowest
        # is the first key, found without scanning all of them (64 writes in flight to one partition are common).
        self._in_flight: dict[str, dict[int, None]] = {}

    def in_flight(self, partition: str) -> int:
        return len(self._in_flight.get(partition, ()))

    def write(self, partition: str) -> InFlight:
        """``with sequencer.write(partition) as ref``: number a write to ``partition``; it stays in flight
        (holding ``low`` down) until the block ends."""
        return InFlight(self, partition)


class InFlight:
    """One write numbered by ``Sequencer.write``, in flight while its ``with`` block runs. (A class rather than a
    generator: it is on every write's path, and a generator-based context manager costs it several times more.)"""

    __slots__ = ("_flying", "_partition", "_seq", "_sequencer")

    def __init__(self, sequencer: Sequencer, partition: str) -> None:
        self._sequencer = sequencer
        self._partition = partition

    def __enter__(self) -> SessionRef:
        sequencer = self._sequencer
        seq = self._seq = sequencer._next
        sequencer._next = seq + 1
        flying = sequencer._in_flight.get(self._partition)
        if flying is None:
            flying = sequencer._in_flight[self._partition] = {}
        flying[seq] = None
        self._flying = flying
        # (the seqs are ours and in range: the checks ``SessionRef`` makes on what arrives need not run)
        return SessionRef.checked(sequencer.session, seq, next(iter(flying)))

    def __exit__(self, *exc_info: object) -> None:
        flying = self._flying
        del flying[self._seq]
        if not flying:
            del self._sequencer._in_flight[self._partition]
