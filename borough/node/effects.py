"""Delivering the effects committed handler transactions owe to other partitions (issue 18).

This module owns the sending side of a partition's outbox (``borough.node.effects_table``): on the partition's
leader, each owed effect is sent to its target as a session write (the outbox's session id and the effect's
seq, so the target applies it exactly once however often it is sent, by this leader or a later one), retried
until it lands; an acknowledged effect's seq is remembered here until the partition's next entry carries it as
``done`` (the next handler transaction's, or a ``done``-only entry this pump proposes when the partition is
quiet). A handler's own request delivers its effects right after its commit (``deliver``); the pump
(``pump_forever``) picks up whatever a crash, a leader change or a failed send left behind.

Reading the other partition meanwhile shows the effect missing until it lands: effects are applied after the
handler's commit, not atomically with it, and effects of different requests may land in any order.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import trio

from borough.errors import BoroughError
from borough.node.clocks import Visits
from borough.node.effects_table import Effect, Outbox
from borough.node.protocol import Op, Write
from borough.node.records import Delete, Put, WriteOp
from borough.node.registry import Replicas
from borough.node.replica import Replica
from borough.node.statemachine import KvStateMachine
from borough.node.txn_command import TxnCommand

__all__ = ["EffectsPump", "owing"]

logger = logging.getLogger(__name__)

#: Seconds between the pump's rounds over the partitions this node leads.
PUMP_INTERVAL: Final = 0.5
#: Longest one send of an effect may take before the pump tries again in a later round.
SEND_TIMEOUT: Final = 10.0
#: Effects sent at once per partition by one round.
MAX_SENDING: Final = 64


class EffectsPump:
    """``run(partition, op)`` routes an op (the node's session); ``leading()`` lists this node's replicas."""

    def __init__(self, run: Callable[[str, Op], Awaitable[Any]], replicas: Callable[[], Iterable[Replica]]) -> None:
        self._run = run
        self._replicas = replicas
        self._done: dict[str, set[int]] = {}
        self._sending: dict[str, set[int]] = {}
        #: Effects sent and acknowledged (a resent duplicate counts again: the target answered it as known).
        self.delivered = 0

    def take_done(self, partition: str) -> tuple[int, ...]:
        """The acknowledged seqs of ``partition`` for its next entry (forgotten here: if that entry is lost,
        the next leader sends those effects again and their targets answer them as duplicates)."""
        done = self._done.pop(partition, None)
        return tuple(sorted(done)) if done else ()

    async def deliver(self, replica: Replica, seqs: Iterable[int]) -> None:
        """Send the effects ``seqs`` of ``replica``'s outbox now (those not being sent already)."""
        machine = replica.machine
        assert isinstance(machine, KvStateMachine)
        outbox = machine.outbox
        sending = self._sending.setdefault(replica.name, set())
        effects = [e for e in outbox.pending() if e.seq in set(seqs) and e.seq not in sending]
        try:
            async with trio.open_nursery() as nursery:
                for effect in effects:
                    sending.add(effect.seq)
                    nursery.start_soon(self._send, replica.name, outbox, effect)
        finally:
            for effect in effects:
                sending.discard(effect.seq)
            if not sending:
                self._sending.pop(replica.name, None)

    async def _send(self, partition: str, outbox: Outbox, effect: Effect) -> None:
        try:
            with trio.fail_after(SEND_TIMEOUT):
                await self._run(effect.target, Write(_write_ops(effect.ops), outbox.ref(effect)))
        except (BoroughError, OSError) as exc:
            logger.info(
                "partition %r: effect %d on %r not delivered yet: %s", partition, effect.seq, effect.target, exc
            )
            return
        self.delivered += 1
        self._done.setdefault(partition, set()).add(effect.seq)

    async def pump_once(self) -> None:
        """One round: send what each led partition owes, and record as done what was acknowledged."""
        replicas = list(self._replicas())
        async with trio.open_nursery() as nursery:
            for replica in replicas:
                machine = replica.machine
                if not replica.is_leader or not isinstance(machine, KvStateMachine):
                    continue
                if len(machine.outbox):
                    owed = [e.seq for e in machine.outbox.pending()[:MAX_SENDING]]
                    nursery.start_soon(self.deliver, replica, owed)
        for replica in replicas:
            machine = replica.machine
            if replica.name in self._done and replica.is_leader and isinstance(machine, KvStateMachine):
                done = self.take_done(replica.name)
                command = TxnCommand(done=done).encode(stamp=machine.clock.read(), expiry=machine.expiry)
                try:
                    with trio.fail_after(SEND_TIMEOUT):
                        await replica.propose(command)
                except (BoroughError, trio.TooSlowError) as exc:
                    logger.debug("partition %r: done effects not recorded yet: %s", replica.name, exc)

    async def pump_forever(self, interval: float = PUMP_INTERVAL) -> None:
        while True:
            await trio.sleep(interval)
            await self.pump_once()


def _write_ops(ops: tuple[list[Any], ...]) -> tuple[WriteOp, ...]:
    return tuple(Put(op[1], op[2]) if op[0] == "put" else Delete(op[1]) for op in ops)


def owing(replicas: Replicas) -> Callable[[], list[Replica]]:
    """What a node's pump round looks at: its replicas that are awake or woke since the last round, and those
    whose outbox still held effects then (a partition gains effects only by applying an entry, awake; one whose
    acknowledged effects are not recorded as done yet still holds them), so a round over an idle node visits
    nothing instead of every replica hosted."""
    visits = Visits(replicas.clocks)

    def candidates() -> list[Replica]:
        found = []
        for name in visits.take(replicas):
            replica = replicas.get(name)
            if replica is None:
                continue
            machine = replica.machine
            if not replica.quiesced or (isinstance(machine, KvStateMachine) and len(machine.outbox)):
                visits.again.add(name)
            found.append(replica)
        return found

    return candidates
