"""The callers a replica keeps waiting: proposals until applied (or provably lost), reads until servable.

This module owns the bookkeeping between a caller's task and a replica's turns (``borough.node.turns``):
``Proposals`` queues commands until a turn proposes them, remembers each by log index and term, and settles
them from a Ready's plan; ``Reads`` batches linearizable reads into one ReadIndex round per turn and serves a
batch once the applied index reaches its read index. Every queue here is bounded by the replica (``room``). It
never touches a Raft core: the turn passes in what the core said.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import trio

from borough.errors import BoroughError
from borough.raft.readonly import ReadState
from borough.raft.ready_plan import ReadyPlan
from borough.raft.records import Entry

__all__ = ["Proposals", "Reads", "Waiter"]


class Waiter:
    """A caller waiting for its proposal to be applied, its read to become servable or its command to run: a task
    (``await wait()``) or a callback (``then``, the wire's quick path, which makes no event at all)."""

    __slots__ = ("_event", "_then", "abandoned", "error", "result", "settled", "term")

    def __init__(self) -> None:
        self.term = 0
        self.settled = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False  # the caller stopped waiting before it was settled
        self._then: Callable[[Waiter], None] | None = None
        self._event: trio.Event | None = None  # made by the first ``wait``

    def succeed(self, result: Any = None) -> None:
        if not self.settled:
            self.result = result
            self._settled()

    def fail(self, error: BaseException) -> None:
        if not self.settled:
            self.error = error
            self._settled()

    def then(self, callback: Callable[[Waiter], None]) -> None:
        """Call ``callback(self)`` once settled (now, if it is), instead of a task waiting. It runs where the
        waiter is settled (a replica's turn): it must be quick and must not raise."""
        if self.settled:
            callback(self)
        else:
            self._then = callback

    def _settled(self) -> None:
        self.settled = True
        if self._event is not None:
            self._event.set()
        callback, self._then = self._then, None
        if callback is not None:
            callback(self)

    async def wait(self) -> Any:
        if not self.settled:
            if self._event is None:
                self._event = trio.Event()
            try:
                await self._event.wait()
            finally:
                if not self.settled:
                    self.abandoned = True
        else:
            await trio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        return self.result


def fail_all(waiters: Iterable[Waiter], error: BaseException) -> None:
    for waiter in waiters:
        waiter.fail(error)


class Proposals:
    """Commands queued for the core, then proposals by log index until their entry is applied or lost."""

    def __init__(self) -> None:
        self.queued: list[tuple[Any, Waiter]] = []
        self.by_index: dict[int, Waiter] = {}

    def __len__(self) -> int:
        return len(self.queued)

    def queue(self, data: Any) -> Waiter:
        waiter = Waiter()
        self.queued.append((data, waiter))
        return waiter

    def take(self) -> list[tuple[Any, Waiter]]:
        """The queued commands whose callers still wait, for the next turn to propose."""
        queued, self.queued = self.queued, []
        return [(data, w) for data, w in queued if not w.abandoned]

    def proposed(self, index: int, term: int, waiter: Waiter) -> None:
        waiter.term = term
        self.by_index[index] = waiter

    def propose_queued(self, propose: Callable[[Any], int], term: Callable[[], int]) -> None:
        """Hand the queued commands to ``propose`` (the driver's core; it returns the log index), remembering
        each by index and ``term()``; a refusal fails that caller. A caller that gave up before its command was
        proposed is skipped: it never will be."""
        for data, waiter in self.take():
            try:
                index = propose(data)
            except BoroughError as exc:
                waiter.fail(exc)
            else:
                self.proposed(index, term(), waiter)

    def settle(
        self,
        plan: ReadyPlan,
        results: dict[int, Any],
        lost: Callable[[], BaseException],
        unknown: Callable[[], BaseException],
    ) -> None:
        """Resolve the proposals ``plan`` decides. Log terms never decrease along the log, which decides most:

        - an applied entry with the proposal's index and term: it succeeds with its result;
        - at an index the plan applies, another entry: provably lost (``lost()``, safe to retry);
        - beyond the last applied entry, an older term than it: provably lost;
        - at or below an installed snapshot's index: lost when its term is newer than the snapshot's (or it sat
          at the snapshot's index with another term); otherwise the snapshot may or may not hold it and no
          entry will ever say which (``unknown()``, not safe to retry blindly)."""
        proposals = self.by_index
        if not proposals:
            return
        if plan.install is not None:
            index, term = plan.install.index, plan.install.term
            for i in [i for i in proposals if i <= index]:
                t = proposals[i].term
                gone = t > term or (i == index and t != term)
                proposals.pop(i).fail(lost() if gone else unknown())
            for i in [i for i, w in proposals.items() if w.term < term]:
                proposals.pop(i).fail(lost())
        if plan.apply:
            self.settle_applied(plan.apply, results)
            last = plan.apply[-1]
            for i in [i for i, w in proposals.items() if i <= last.index or w.term < last.term]:
                proposals.pop(i).fail(lost())

    def settle_applied(self, applied: Sequence[Entry], results: dict[int, Any]) -> None:
        """Succeed the proposals whose entries ``applied`` holds (same index and term) with their results, ahead
        of ``settle``, which decides the rest of the same plan."""
        proposals = self.by_index
        for entry in applied:
            waiter = proposals.get(entry.index)
            if waiter is not None and waiter.term == entry.term:
                del proposals[entry.index]
                waiter.succeed(results.get(entry.index))

    def fail_all(self, error: BaseException) -> None:
        fail_all([w for _, w in self.queued], error)
        fail_all(self.by_index.values(), error)
        self.queued.clear()
        self.by_index.clear()


@attrs.define
class _Batch:
    """Reads that share one ReadIndex round."""

    waiters: list[Waiter]
    index: int | None = None


class Reads:
    """Linearizable reads: queued, then one ReadIndex round at a time, then served once applied.

    While a round is in flight, the reads that arrive wait for it to end and then share the next one: under load
    a round serves every read of a round trip rather than those of one turn, so a read costs the leader (and
    its followers, which answer each round) less. ``wake`` asks for the turn that starts the next round."""

    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self.queued: list[Waiter] = []
        self._in_flight: dict[bytes, _Batch] = {}
        self._ready: list[_Batch] = []
        self._seq = 0
        self._wake = wake

    def __len__(self) -> int:
        return len(self.queued)

    def queue(self) -> Waiter:
        waiter = Waiter()
        self.queued.append(waiter)
        return waiter

    def start_round(self, read_index: Callable[[bytes], None]) -> None:
        """Ask the core for one ReadIndex round covering every queued read (``read_index(context)``), unless one
        is in flight (they wait for it to end); if the core refuses at once, those reads fail with its error."""
        if not self.queued or self._in_flight:
            return
        waiters, self.queued = self.queued, []
        self._seq += 1
        context = self._seq.to_bytes(8, "big")
        try:
            read_index(context)
        except BoroughError as exc:
            fail_all(waiters, exc)
        else:
            self._in_flight[context] = _Batch(waiters)

    def confirmed(self, read_states: Iterable[ReadState], failed: Iterable[bytes], error: BaseException) -> None:
        """The core's answers: confirmed rounds wait for the apply to reach their index; failed ones fail."""
        for read in read_states:
            batch = self._in_flight.pop(read.context, None)
            if batch is not None:
                batch.index = read.index
                self._ready.append(batch)
        for context in failed:
            batch = self._in_flight.pop(context, None)
            if batch is not None:
                fail_all(batch.waiters, error)
        if self.queued and not self._in_flight:
            self._wake()  # the reads that waited for that round start theirs

    def serve(self, applied: int) -> None:
        """Release the confirmed reads whose read index the applied index has reached."""
        if not self._ready:
            return
        still: list[_Batch] = []
        for batch in self._ready:
            assert batch.index is not None
            if batch.index <= applied:
                for waiter in batch.waiters:
                    waiter.succeed()
            else:
                still.append(batch)
        self._ready = still

    def fail_all(self, error: BaseException) -> None:
        waiters = list(self.queued)
        for batch in (*self._in_flight.values(), *self._ready):
            waiters += batch.waiters
        fail_all(waiters, error)
        self.queued = []
        self._in_flight.clear()
        self._ready = []
