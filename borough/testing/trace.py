"""A simulated run's trace: every delivery, timer round, leader change, fault and client result, hashed.

Owns the ``Trace`` recorder: each event is one line of text (kind, virtual time, details) fed into a running
BLAKE2b digest, so two runs of one scenario can be compared by one hex string however long they are; the last
``keep`` lines (or all of them) are kept to show where two runs parted (``first_difference``). Byte payloads are
reduced to their length and CRC-32. Must not know the cluster, the network or trio beyond reading the clock.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import deque
from collections.abc import Sequence

import trio

__all__ = ["Trace", "first_difference"]


class Trace:
    """Records a run's events. ``keep``: how many recent event lines to keep for reports (None: all)."""

    def __init__(self, *, keep: int | None = 200) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.count = 0
        self.keep = keep
        self._lines: deque[str] = deque(maxlen=keep)

    def __repr__(self) -> str:
        return f"<Trace of {self.count} events, digest {self.digest()}>"

    def record(self, kind: str, *details: object) -> None:
        """One event at the current virtual time (0 outside a trio run)."""
        try:
            now = trio.current_time()
        except RuntimeError:
            now = 0.0
        line = f"{now!r} {kind} {' '.join(map(str, details))}"
        self._hash.update(line.encode("utf-8", "backslashreplace"))
        self._hash.update(b"\n")
        self.count += 1
        if self.keep != 0:
            self._lines.append(line)

    def record_bytes(self, kind: str, src: str, dst: str, chunk: bytes | None) -> None:
        """A network event; the payload counts by its length and CRC-32 (None: end of stream)."""
        if chunk is None:
            self.record(kind, src, dst, "eof")
        else:
            self.record(kind, src, dst, len(chunk), zlib.crc32(chunk))

    def digest(self) -> str:
        """The hex digest of every event so far (the same scenario and seed always give the same digest)."""
        return self._hash.hexdigest()

    @property
    def lines(self) -> list[str]:
        """The kept event lines, oldest first."""
        return list(self._lines)


def first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    """Where two kept traces part, for a failure message (empty if the kept lines are equal)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            before = "\n".join(f"    {line}" for line in a[max(0, i - 5) : i])
            return f"event {i} differs:\n{before}\n  - {x}\n  + {y}"
    if len(a) != len(b):
        return f"one trace has {len(a)} kept events, the other {len(b)}"
    return ""
