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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import trio

__all__ = ["Clock", "Clocks", "Visits"]

#: One replica's tick: what the ticker calls (``Inbox.tick``).
Clock = Callable[[], None]


class Clocks:
    def __init__(self) -> None:
        self._running: dict[str, Clock] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._watchers: list[set[str]] = []
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

    def tick(self) -> int:
        """Tick every running clock once; returns how many ticked."""
        clocks = list(self._running.values())
        for clock in clocks:
            clock()
        return len(clocks)

    async def tick_forever(self, interval: float, on_tick: Callable[[int], None] | None = None) -> None:
        """The ticker: every ``interval`` seconds, tick the running clocks (``on_tick`` is told how many). While
        none runs it has no timer at all (every replica here is quiesced)."""
        while True:
            await self.wait_running()
            await trio.sleep(interval)
            ticked = self.tick()  # only replicas that are awake: a quiesced one costs nothing
            if on_tick is not None:
                on_tick(ticked)


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
