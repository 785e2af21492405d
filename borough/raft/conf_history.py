"""Which configuration is in effect at each log index of one replica.

This module owns the rule "a configuration takes effect when its entry is appended, and reverts when the entry
is truncated away" (Ongaro's thesis §4.1): it keeps the configuration of the snapshot (the base) and one
(index, configuration) pair per conf-change entry in the log after it. It knows indexes and ``ConfState`` only;
the core tells it what was appended, truncated and compacted.
"""

from __future__ import annotations

from borough.raft.records import ConfState

__all__ = ["ConfHistory"]


class ConfHistory:
    __slots__ = ("_changes", "base", "base_index")

    def __init__(self, base_index: int, base: ConfState) -> None:
        self.base_index = base_index
        self.base = base
        self._changes: list[tuple[int, ConfState]] = []

    @property
    def current(self) -> ConfState:
        return self._changes[-1][1] if self._changes else self.base

    @property
    def last_change_index(self) -> int:
        """The index of the last conf-change entry in the log (the base index if there is none)."""
        return self._changes[-1][0] if self._changes else self.base_index

    def at(self, index: int) -> ConfState:
        """The configuration in effect once the log up to ``index`` is applied (``index >= base_index``)."""
        if index < self.base_index:
            raise ValueError(f"index {index} lies before the snapshot at {self.base_index}")
        cs = self.base
        for i, c in self._changes:
            if i > index:
                break
            cs = c
        return cs

    def append(self, index: int, cs: ConfState) -> None:
        if self._changes and index <= self._changes[-1][0]:
            raise AssertionError(f"conf change at {index} appended out of order")
        self._changes.append((index, cs))

    def truncate_from(self, index: int) -> bool:
        """Forget conf changes at ``index`` and after (their entries were replaced). Returns whether any was."""
        n = len(self._changes)
        while self._changes and self._changes[-1][0] >= index:
            self._changes.pop()
        return len(self._changes) != n

    def compact_to(self, index: int) -> None:
        """The log up to ``index`` was folded into a snapshot: fold its conf changes into the base."""
        if index <= self.base_index:
            return
        self.base = self.at(index)
        self.base_index = index
        self._changes = [(i, c) for i, c in self._changes if i > index]

    def reset(self, index: int, cs: ConfState) -> None:
        """A snapshot replaced the whole log."""
        self.base_index = index
        self.base = cs
        self._changes = []
