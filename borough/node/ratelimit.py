"""Rates per caller: how often one peer may do something costly, as a token bucket per peer.

This module owns the arithmetic of "at most ``rate`` a second, in bursts of up to ``burst``" for many keys at
once, with the number of keys it remembers bounded (a flood of made-up callers cannot grow it: past
``max_keys`` the bucket idle longest is forgotten, which only ever errs towards allowing). Time comes from trio.
It knows nothing of what is being limited.
"""

from __future__ import annotations

import trio

__all__ = ["PerCallerRate"]


class PerCallerRate:
    def __init__(self, rate: float, burst: float, *, max_keys: int = 4096) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate must be positive and a burst at least 1")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at time); oldest first
        #: Events refused because their caller was over its rate.
        self.refused = 0

    def take(self, key: str) -> bool:
        """Spend one token of ``key``'s bucket: True if there was one, False if ``key`` is over its rate."""
        now = trio.current_time()
        tokens, at = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        else:
            self.refused += 1
        if len(self._buckets) >= self._max_keys:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = (tokens, now)  # re-inserted: the dict stays ordered by last use
        return allowed
