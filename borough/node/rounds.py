"""Rounds: one scheduling pass carries out the Raft Readies of every replica of a node that has work.

This module owns *when* replicas' cores run. A replica with input (a peer's message, a tick, a proposal, a read,
a command) asks for a turn (``want``); the node's round task wakes once, lets every runnable task add its input
first, then takes every replica that asked (up to ``ROUND_LIMIT``) and, for each, feeds its core and prepares
its Ready (``Replica.prepare``: messages that may leave early are queued, the state machine applies, the write
batch is built). The batches of the round go to the group commit *together*: one ``commit`` for those that must
be durable (one fsync) and one for those that need not be, so the messages that wait for the write (``finish``)
leave in one outbox flush (one frame per peer). That is TiKV's batch system in trio terms: 64 partitions with one
write each cost one pass, one store write and one frame per peer, as one partition with 64 writes does, instead
of 64 task wake-ups, 64 commits and 64 waits.

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
from borough.store.base import InvalidLogOperation
from borough.store.batch import WriteBatch
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
        self, committer: GroupCommit, *, limit: int = ROUND_LIMIT, before: Callable[[], object] | None = None
    ) -> None:
        self._committer = committer
        self._limit = limit
        self._before = before  # called at the start of each round, before any core is fed (the clocks' catch-up)
        self._wanted: dict[TurnTaker, None] = {}  # replicas that asked for a turn, in the order they asked
        self._busy: set[TurnTaker] = set()  # replicas whose turn's write is still in flight
        self._later: dict[TurnTaker, None] = {}  # busy replicas that asked again: they go once the write ends
        self._lot = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        #: Rounds made, and the turns they carried (for metrics, benchmarks and tests).
        self.rounds = 0
        self.turns = 0

    def want(self, replica: TurnTaker) -> None:
        """``replica`` has input for its core: give it a turn in the next round."""
        if replica in self._busy:
            self._later[replica] = None
            return
        wanted = self._wanted
        if not wanted:
            self._lot.unpark_all()
        wanted[replica] = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                if not self._wanted:
                    await self._lot.park()
                # Let every task that can run now add its input first: that is what makes a round hold many turns.
                await trio.lowlevel.checkpoint()
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
        for replica in todo:
            try:
                turn = replica.prepare()
            except Exception as exc:
                replica.fail(exc)
                continue
            if turn is None:
                continue
            if turn.batch is None:
                self._finish(replica, turn)
            else:
                (synced if turn.sync else unsynced).append((replica, turn))
        self.rounds += 1
        self.turns += len(todo)
        assert self._nursery is not None
        for group, sync in ((synced, True), (unsynced, False)):
            if group:
                self._busy.update(replica for replica, _ in group)
                self._nursery.start_soon(self._write, group, sync)

    async def _write(self, group: Sequence[tuple[TurnTaker, Turn]], sync: bool) -> None:
        """Write one round's batches (one commit), then finish each turn."""
        errors: list[BaseException | None]
        try:
            errors = await self._commit([turn.batch for _, turn in group if turn.batch is not None], sync)
        except Exception as exc:  # the store failed: no turn of this group may go on as if written
            errors = [exc] * len(group)
        except BaseException:
            # Cancelled: the node stops, and its replicas with it (their tasks are cancelled too). Whether the
            # batches were written is unknown; each replica's next start reads what its store holds.
            self._busy.difference_update(replica for replica, _ in group)
            raise
        for (replica, turn), error in zip(group, errors, strict=True):
            self._busy.discard(replica)
            if error is None:
                self._finish(replica, turn)
            else:
                replica.fail(error)
            if replica in self._later:  # input arrived while the write was in flight
                del self._later[replica]
                self.want(replica)

    async def _commit(self, batches: list[WriteBatch], sync: bool) -> list[BaseException | None]:
        """Commit ``batches`` as one write; when that write is refused as malformed (a bug in one replica's
        batch), commit them one by one so only the culprit fails."""
        committer = self._committer
        if len(batches) == 1:
            merged = batches[0]
        else:
            merged = committer.store.write_batch()
            for batch in batches:
                merged.extend(batch)
        try:
            await committer.commit(merged, sync=sync)
            return [None] * len(batches)
        except InvalidLogOperation:
            if len(batches) == 1:
                raise
        errors: list[BaseException | None] = []
        for batch in batches:
            try:
                await committer.commit(batch, sync=sync)
                errors.append(None)
            except InvalidLogOperation as exc:
                errors.append(exc)
        return errors

    def _finish(self, replica: TurnTaker, turn: Turn) -> None:
        try:
            replica.finish(turn)
        except StorageError:
            raise
        except Exception as exc:
            replica.fail(exc)
