"""Local health awareness (Lifeguard): how much this node should distrust its own view of others.

This module owns one bounded score and nothing else. A node whose probes keep failing, whose indirect probes
get no nacks back, or that keeps having to refute suspicions about itself is probably the slow or lossy one;
it stretches its probe interval and timeout by ``score + 1`` so it accuses others less eagerly. Successful
probes bring the score back down. No clocks, no I/O.
"""

from __future__ import annotations

import attrs

__all__ = ["Awareness"]


@attrs.define
class Awareness:
    """A score in ``[0, max_multiplier - 1]``; ``scale(x)`` stretches a timeout by ``score + 1``."""

    max_multiplier: int = 8
    score: int = 0

    def apply(self, delta: int) -> None:
        self.score = min(self.max_multiplier - 1, max(0, self.score + delta))

    def scale(self, value: float) -> float:
        return value * (self.score + 1)
