"""Rounds: one scheduling pass carries out the Raft Readies of every replica of a node that has work.

This module owns *when* replicas' cores run. A replica with input (a peer's message, a tick, a proposal, a read,
a command) asks for a turn (``want``); the node's round task wakes once, lets every runnable task add its input
first, then takes every replica that asked (up to ``ROUND_LIMIT``) and, for each, feeds its core and prepares
its Ready (``Replica.prepare``: messages that may leave early are queued, the state machine applies, the write
batch is built). The batches of the round go to the group commit *together*: one submission for those that must
be durable (one fsync) and one for those that need not be, and the messages that wait for the write (``finish``)
leave in one outbox flush (one frame per peer). That is TiKV's batch system in trio terms: 64 partitions with one
write each cost one pass, one store write and one frame per peer, as one partition with 64 writes does, instead
of 64 task wake-ups, 64 commits and 64 waits. A round, or a write, of one turn (one client writing) does not
wait for the rest: its messages leave as soon as the turn queues them (``flush_if_lone``).

No task waits for a write: the group commit calls back when the write is done (``GroupCommit.submit``), at once
when it could write on the spot, else from the callback that lands the worker thread's fsync, and the turns are
finished there; the messages of each round and of each finished write are flushed to the outbox right away
(``after``). So a write costs no task switch of its own between the fsync and the messages it releases.

A round asked for while a connection's reader dispatches frames (``enter`` ... ``leave``, the wire's
``DispatchHooks``) runs in that reader's step once they are dispatched, instead of a pass later in the round
task: a client's call, a follower's append, a leader's acknowledgement, each costs no task switch between its
frame's arrival and what it sends (about 40 to 70 us a hop on a lone write's path). Only while requests come one
at a time: no other task runnable, the last round's turns appended and applied at most one entry each, and (the
caller's rule, ``borough.node.quick.LoneCallHooks``) at most one client's request in flight on the node. Under
load the round task's pass gathers the input of every runnable task into one round, and a round that ran
sooner would carry fewer entries at more CPU each (in the simulator, with 64 clients writing into one
partition, rounds run in the readers regardless made 0.43 turns a put against 0.31, at 15% more CPU a put).

Rounds overlap: while one round's write is in flight the next one prepares, and its batches join the group
commit's next cycle; a replica takes part in one round at a time (its core is not advanced until its write is
done), so it waits for the next round if it asks again meanwhile. Each replica's own task does no Raft work: it
waits for its replica to end (``Replica.run``) and keeps the node's one task per hosted partition. An idle
(quiesced) replica asks for nothing and costs nothing. It knows nothing of Raft itself: it calls the replica's
``prepare``/``finish`` and reports errors back to the replica they belong to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from borough.errors import StorageError
from borough.node.persist import Turn
from borough.runnable import tasks_runnable
from borough.store.group_commit import GroupCommit

__all__ = ["ROUND_LIMIT", "Rounds", "TurnTaker"]

logger = logging.getLogger(__name__)

#: Most replicas one round prepares before it lets other tasks run (the rest go in the next round): bounds the
#: time one pass holds the event loop when thousands of groups wake at once (a restart, a detector event).
ROUND_LIMIT = 512


class TurnTaker(Protocol):
    """What a round needs of a replica (``borough.node.replica.Replica``)."""

    name: str

    def prepare(self) -> Turn | None: ...

    def finish(self, turn: Turn) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class Rounds:
    """Made with the node's group committer; run ``run()`` in a node-owned nursery."""

    def __init__(
        self,
        committer: GroupCommit,
        *,
        limit: int = ROUND_LIMIT,
        before: Callable[[], object] | None = None,
        after: Callable[[], object] | None = None,
    ) -> None:
        self._committer = committer
        self._limit = limit
        self._before = before  # called at the start of each round, before any core is fed (the clocks' catch-up)
        # Called once a round's turns are prepared, and once the turns of a write are finished: the node flushes
        # its outbox there, so the messages of every turn leave in the same pass, one frame per peer.
        self._after = after
        self._wanted: dict[TurnTaker, None] = {}  # replicas that asked for a turn, in the order they asked
        self._busy: set[TurnTaker] = set()  # replicas whose turn's write is still in flight
        self._later: dict[TurnTaker, None] = {}  # busy replicas that asked again: they go once the write ends
        self._lot = trio.lowlevel.ParkingLot()
        self._parked = False  # the round task waits in ``_lot`` for a replica to ask
        # A connection's reader is dispatching frames (``enter``; ``leave``): a replica that asks meanwhile does
        # not wake the round task; ``leave`` runs the round, or wakes the task (``_deferred``), once they are all in.
        self._held = 0
        self._deferred = False
        # The last round carried a turn that appended or applied more than one entry: requests are arriving
        # faster than one at a time, and a round that waits for the round task's pass gathers more of them.
        self._batching = False
        self._lone = False  # the round being prepared, or the write being finished, has one turn
        self._fatal: BaseException | None = None  # a store failure met while finishing a turn: the node stops
        #: Rounds made, and the turns they carried (for metrics, benchmarks and tests).
        self.rounds = 0
        self.turns = 0
        #: Rounds run in a connection reader's step (``leave``), of those.
        self.inline_rounds = 0

    def want(self, replica: TurnTaker) -> None:
        """``replica`` has input for its core: give it a turn in the next round."""
        if replica in self._busy:
            self._later[replica] = None
            return
        wanted = self._wanted
        if not wanted:
            if self._held:
                self._deferred = True
            else:
                self._lot.unpark_all()
        wanted[replica] = None

    def enter(self) -> None:
        """A connection's reader starts dispatching a run of frames (``borough.wire.records.DispatchHooks``)."""
        self._held += 1

    def leave(self, *, inline: bool = True) -> None:
        """... and ends it. If any replica asked for a turn meanwhile, the round runs now, in the reader's own step,
        when nothing else could add to it (no other task runnable, the round task idle, room for the writes) and
        the caller allows it (``inline``); otherwise the round task is woken, to run the round once the tasks
        runnable have added their input. So a lone request's round, at each node on its path, costs no task
        switch between reading a frame and sending what it leads to. Never raises: what the round task would have
        raised, it raises (the node stops)."""
        self._held -= 1
        if self._held or not self._deferred:
            return
        self._deferred = False
        if (
            inline
            and not self._batching
            and self._parked
            and self._fatal is None
            and self._wanted
            and self._committer.has_room
            and not tasks_runnable()
        ):
            try:
                self._round()
            except BaseException as exc:  # (a bug: the round task raises it, as it would have from its own round)
                self._fatal = exc
            self.inline_rounds += 1
            if not self._wanted and self._fatal is None:
                return
        self._lot.unpark_all()

    @property
    def writes_at_once(self) -> bool:
        """Whether the unsynced batches of the round being prepared are written before the round ends, in the same
        step of the event loop (no synced write holds the store): a turn whose write needs no sync may then answer
        its callers as soon as it is prepared (``Turns.prepare``), since nothing can run, nor read the store,
        before its batch is written."""
        return self._committer.writes_at_once

    def flush_if_lone(self) -> None:
        """A turn queued messages: those that may leave before its write (a leader's appends, while the turn is
        prepared), or those that waited for it (a follower's acknowledgement, while it is finished). When the
        round, or the write, has this one turn, they leave now, before the rest of the turn is done (its batch
        built; its core advanced); otherwise with every other turn's, once all are prepared or finished (one
        frame per peer)."""
        if self._lone and self._after is not None:
            self._after()

    async def run(self) -> None:
        woken = False
        while True:
            if self._fatal is not None:
                raise self._fatal
            if not self._wanted:
                self._parked = True
                try:
                    await self._lot.park()
                finally:
                    self._parked = False
                woken = True
                continue
            await self._committer.room()  # (backpressure: the writes waiting for the disk are at their cap)
            # Let every task that can run now add its input first: that is what makes a round hold many turns.
            # Just woken with no other task runnable, there is nobody to wait for: the round starts a pass
            # sooner (a lone write's latency). Otherwise every round yields first, so rounds never hog the loop.
            if not woken or tasks_runnable():
                await trio.lowlevel.checkpoint()
            woken = False
            self._round()

    def _round(self) -> None:
        if self._before is not None:
            self._before()  # (the replicas it wakes join this round)
        wanted = self._wanted
        if len(wanted) <= self._limit:
            todo, self._wanted = list(wanted), {}
        else:  # the rest wait for the next round, after other tasks ran
            todo = list(wanted)[: self._limit]
            for replica in todo:
                del wanted[replica]
        synced: list[tuple[TurnTaker, Turn]] = []
        unsynced: list[tuple[TurnTaker, Turn]] = []
        self._lone = len(todo) == 1
        batching = False
        for replica in todo:
            try:
                turn = replica.prepare()
            except Exception as exc:
                replica.fail(exc)
                continue
            if turn is None:
                continue
            if not batching:
                plan = turn.plan
                batching = len(plan.entries) > 1 or len(plan.apply) > 1
            if turn.batch is None:
                self._finish(replica, turn)
            else:
                (synced if turn.sync else unsynced).append((replica, turn))
        self._lone = False
        self._batching = batching
        self.rounds += 1
        self.turns += len(todo)
        if self._after is not None:
            self._after()  # what may leave before the write (a leader's appends) leaves before it starts
        # The synced write starts first (its fsync is the longer wait), unless a turn answered its callers before
        # its unsynced batch was written: that batch must then be written now, before a synced write in a worker
        # thread could make it wait (see ``writes_at_once``).
        order = (
            ((unsynced, False), (synced, True))
            if any(t.answered for _, t in unsynced)
            else ((synced, True), (unsynced, False))
        )
        for group, sync in order:
            if group:
                self._busy.update(replica for replica, _ in group)
                self._submit(group, sync)

    def _submit(self, group: list[tuple[TurnTaker, Turn]], sync: bool) -> None:
        """Hand one round's batches to the group commit (one write); each turn is finished once it is done
        (``_written``: at once when the group commit writes on the spot, else when the write lands)."""
        batches = [turn.batch for _, turn in group if turn.batch is not None]
        try:
            self._committer.submit(batches, sync=sync, done=lambda errors: self._written(group, errors))
        except StorageError as exc:  # the committer stopped: no turn of this group may go on as if written
            self._written(group, [exc] * len(group))

    def _written(self, group: Sequence[tuple[TurnTaker, Turn]], errors: Sequence[BaseException | None]) -> None:
        """The write of ``group``'s batches is over: finish each turn whose batch was written, fail the others."""
        self._lone = len(group) == 1
        for (replica, turn), error in zip(group, errors, strict=True):
            self._busy.discard(replica)
            if error is None:
                self._finish(replica, turn)
            else:
                replica.fail(error)
            if replica in self._later:  # input arrived while the write was in flight
                del self._later[replica]
                self.want(replica)
        self._lone = False
        if self._after is not None:
            self._after()

    def _finish(self, replica: TurnTaker, turn: Turn) -> None:
        try:
            replica.finish(turn)
        except StorageError as exc:  # the store failed under a finished write: the node stops (``run`` raises)
            if self._fatal is None:
                self._fatal = exc
                self._lot.unpark_all()
        except Exception as exc:
            replica.fail(exc)
