"""Which replicas' Raft clocks run: the ticker ticks those and no others, so an idle partition costs nothing.

This module owns the node's set of running clocks. A replica's clock runs from its creation until its Raft core
quiesces (``RaftConfig.quiesce_ticks``: its group is idle, every member holds the whole log), and again from the
round in which anything wakes it (a proposal, a read, a peer's message, the failure detector). A turn reports the
core's state each time the replica goes back to waiting for input (``Inbox.settle``), so a quiesced replica asks
for no turn: no timer, no wake-up, no message, and the ticker's work per tick is proportional to the replicas
that are awake, not to those hosted. It also tells the services that look over the node's groups now and then
(``watch``) which replicas started (were created, or woke) since they last looked, so those too can visit the
groups that may have changed rather than every group (``Visits``). It knows nothing of Raft or of what a tick
does.

Ticks follow elapsed time: one is due every ``interval`` seconds from when the first clock started, and
``catch_up`` (the ticker, and each round before it feeds any core: ``borough.node.rounds``) delivers the ticks due
by now. A node that stalled (SIGSTOP, a long GC, an event loop held) delivers them at once when it runs again,
before anything that arrived meanwhile reaches a core: each running clock is ticked once, told how many more
ticks were due (``late``, at most ``most_late``), and decides what to do with them (``Inbox.tick``: a Raft leader
counts them, so its lease runs out). Time during which no clock ran (every replica quiesced) is no tick at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import trio

__all__ = ["Clock", "Clocks", "Visits"]


class Clock(Protocol):
    """One replica's tick: what the ticker calls (``Inbox.tick``); ``late`` more ticks were due that the node could
    not deliver in time (it stalled)."""

    def __call__(self, late: int = 0) -> None: ...


class Clocks:
    """``interval``: seconds per tick; ``most_late``: the most late ticks one catch-up reports (a bound on the burst
    after a long stall: one election timeout of ticks is enough to expire any lease and run one check-quorum)."""

    def __init__(self, interval: float = 0.1, most_late: int = 10) -> None:
        self._running: dict[str, Clock] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._watchers: list[set[str]] = []
        self._interval = interval
        self._most_late = most_late
        #: When the next tick is due (while some clock runs).
        self.due = 0.0
        #: Times a replica's clock stopped (it quiesced) and started again (it woke), for metrics and tests.
        self.stops = 0
        self.starts = 0

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, name: object) -> bool:
        return name in self._running

    def watch(self) -> set[str]:
        """A set to which the name of every replica whose clock starts from now on is added (created, or woken);
        the caller empties it as it goes. It holds each name once, so it never holds more than the replicas."""
        started: set[str] = set()
        self._watchers.append(started)
        return started

    def run(self, name: str, clock: Clock) -> None:
        """Tick ``name`` from now on (a replica created, or woken)."""
        if self._running.get(name) != clock:
            if not self._running:  # the ticker was parked: its idle time is no tick, a new period starts now
                self.due = trio.current_time() + self._interval
            self._running[name] = clock
            self.starts += 1
            for started in self._watchers:
                started.add(name)
            self._lot.unpark_all()

    def stop(self, name: str, clock: Clock) -> None:
        """Stop ticking ``name`` (its core quiesced, or the replica stopped); a no-op when ``clock`` is not the one
        running under that name (a newer replica of the partition took its place)."""
        if self._running.get(name) == clock:
            del self._running[name]
            self.stops += 1

    async def wait_running(self) -> None:
        """Return once some clock runs (at once if one does): a node whose groups are all quiet has no timer."""
        while not self._running:
            await self._lot.park()

    def catch_up(self, on_tick: Callable[[int], None] | None = None) -> int:
        """Tick the running clocks if a tick is due by now, with the ticks missed since as ``late`` (bounded);
        returns how many ticked (0 when no tick was due), and tells ``on_tick`` if any did."""
        if not self._running:
            return 0
        now = trio.current_time()
        if now < self.due:
            return 0
        missed = int((now - self.due) // self._interval)
        self.due += (missed + 1) * self._interval
        ticked = self.tick(min(missed, self._most_late))  # only replicas that are awake: a quiesced one costs nothing
        if ticked and on_tick is not None:
            on_tick(ticked)
        return ticked

    def tick(self, late: int = 0) -> int:
        """Tick every running clock once (telling it ``late`` more were due); returns how many ticked."""
        clocks = list(self._running.values())
        for clock in clocks:
            clock(late)
        return len(clocks)

    async def tick_forever(self, on_tick: Callable[[int], None] | None = None) -> None:
        """The ticker: deliver the ticks due (``catch_up``) when the next one is; while no clock runs it has no
        timer at all (every replica here is quiesced)."""
        while True:
            await self.wait_running()
            await trio.sleep_until(self.due)
            self.catch_up(on_tick)


#: What a first pass was made for: nothing yet, so the first pass visits every group.
_NEVER = object()


class Visits:
    """Which groups one periodic pass over a node's replicas visits: every hosted one when what the pass depends
    on (``made_for``) changed since the last pass (and on the first pass), else the ones the last pass left to look
    at again (``again``: the caller adds those not found settled) and the ones whose clock started meanwhile; in
    name order, so a simulated run replays the same. A quiet replica changes only after it wakes, so a pass over
    an idle node visits nothing."""

    def __init__(self, clocks: Clocks) -> None:
        self._woke = clocks.watch()
        self._made_for: object = _NEVER
        self.again: set[str] = set()

    def take(self, hosted: Iterable[str], made_for: object = None) -> list[str]:
        if made_for != self._made_for:
            self._made_for = made_for
            names = sorted(hosted)
        else:
            names = sorted(self.again | self._woke)
        self._woke.clear()
        self.again = set()
        return names
