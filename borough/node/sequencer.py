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
from collections.abc import Iterator
from contextlib import contextmanager

from borough.node.session_table import SESSION_ID_BYTES, SessionRef

__all__ = ["Sequencer"]


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

    @contextmanager
    def write(self, partition: str) -> Iterator[SessionRef]:
        """Number a write to ``partition``; it stays in flight (holding ``low`` down) until the block ends."""
        seq = self._next
        self._next += 1
        flying = self._in_flight.setdefault(partition, {})
        flying[seq] = None
        try:
            yield SessionRef(self.session, seq, next(iter(flying)))
        finally:
            del flying[seq]
            if not flying:
                del self._in_flight[partition]
