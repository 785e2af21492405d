"""How long a suspected member has to refute before it is declared dead (Lifeguard's dynamic suspicion).

This module owns one suspicion's timer arithmetic and nothing else: no messages, no clock reads (``now`` comes
in as an argument). A suspicion starts at ``max_timeout`` and shrinks towards ``min_timeout`` as independent
members confirm it, logarithmically in the number of confirmations, reaching the minimum at ``k`` of them.
A lone accuser, likely on a lossy link itself, waits long and gives the suspect time to refute; a suspicion
that several members reached on their own (a real crash) ends quickly. The timeouts themselves scale with
log10 of the cluster size (as memberlist does) because gossip needs O(log n) rounds to reach everyone.
"""

from __future__ import annotations

import math

import attrs

from borough.ids import NodeId

__all__ = ["Suspicion", "suspicion_timeouts"]


def suspicion_timeouts(
    *, cluster_size: int, probe_interval: float, mult: float, max_mult: float
) -> tuple[float, float]:
    """(min, max) suspicion timeouts: ``mult * max(1, log10(n)) * probe_interval`` and ``max_mult`` times it."""
    scale = max(1.0, math.log10(max(1, cluster_size)))
    low = mult * scale * probe_interval
    return low, low * max_mult


def expected_confirmations(*, cluster_size: int, mult: int) -> int:
    """How many independent confirmations bring the timeout down to the minimum: ``mult - 2``, but never more
    than the members that could confirm (everyone but us and the suspect)."""
    return max(0, min(mult - 2, cluster_size - 2))


@attrs.define
class Suspicion:
    """One member's open suspicion. ``accusers`` holds every member that independently suspected it; the first
    accuser does not count as a confirmation."""

    started: float
    min_timeout: float
    max_timeout: float
    k: int
    accusers: set[NodeId]

    def confirm(self, accuser: NodeId) -> bool:
        """Record an accuser; True if it is a new, independent one (then the deadline moved earlier)."""
        if accuser in self.accusers:
            return False
        self.accusers.add(accuser)
        return True

    @property
    def confirmations(self) -> int:
        return len(self.accusers) - 1

    def timeout(self) -> float:
        if self.k < 1:
            return self.min_timeout
        c = min(self.confirmations, self.k)
        fraction = math.log(c + 1) / math.log(self.k + 1)
        return max(self.min_timeout, self.max_timeout - fraction * (self.max_timeout - self.min_timeout))

    def deadline(self) -> float:
        return self.started + self.timeout()
