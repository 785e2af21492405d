"""Gets and writes answered without a task: the wire's quick path for the calls that are most of a load.

A call from the wire normally runs in a task of its own, under a cancel scope, through ``Server.handle_call``
(about a fifth of a get's CPU on the leader). A get needs none of that when this node holds the partition: a
stale one is read from the store at once, and a linearizable one on the leader queues a read for the replica's
next ReadIndex round (``Replica.read_nowait``) and is answered from the round's callback
(``Waiter.then``), in the replica's turn. This module owns that decision and the answer; everything else, and
every get it does not take (another op, a partition not hosted here, a follower's read, a refused read, a
malformed body), goes the ordinary way, which says what went wrong exactly as before.

A write with a session (every client's: retrying it is safe, the partition applies it once) on the partition's
leader is proposed at once (``Replica.propose_nowait``) and answered from the turn that applies it, with the
state machine's result, exactly as the server's ``Write`` answers. A write without a session, on a follower or a
replica still electing itself, goes the ordinary way.

Bounds: a quick get holds no task and no timer. It holds a call slot of its connection (``max_inbound_calls``)
and a place in its replica's bounded read queue until the read's round ends, and every round ends: the Raft core
confirms, expires (within an election timeout) or fails each read, and a stopping replica fails them all. A
caller that gives up resets the call and the answer is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from borough.errors import BoroughError
from borough.node.protocol import Get, Write, decode_call
from borough.node.reads import read_value
from borough.node.records import Limits
from borough.node.roles import Roles
from borough.node.rounds import Rounds
from borough.node.server import internal_error
from borough.node.statemachine import KvStateMachine
from borough.node.system_state import SYSTEM
from borough.node.waiters import Waiter
from borough.store.base import Store
from borough.wire.records import CallAnswer, DispatchHooks, IncomingCall

__all__ = ["LoneCallHooks", "QuickCalls"]

logger = logging.getLogger(__name__)


class _Replica(Protocol):
    @property
    def is_leader(self) -> bool: ...

    @property
    def machine(self) -> object: ...

    def read_nowait(self) -> Waiter: ...

    def propose_nowait(self, data: bytes) -> Waiter: ...


class QuickCalls:
    def __init__(
        self,
        *,
        node_id: str,
        limits: Limits,
        roles: Roles,
        store: Store,
        replica: Callable[[str], _Replica | None],
        learn_address: Callable[[str | None, str | None], None],
        on_op: Callable[[], Callable[[str, float], None] | None],
    ) -> None:
        self._node_id = node_id
        self._limits = limits
        self._roles = roles
        self._store = store
        self._replica = replica
        self._learn_address = learn_address
        self._on_op = on_op
        #: Gets and writes answered here (the rest went the ordinary way).
        self.taken = 0
        #: Linearizable gets and writes taken and not answered yet.
        self.pending = 0

    def hooks(self, rounds: Rounds) -> DispatchHooks:
        """The node's dispatch hooks (``Transport.dispatch_hooks``): see ``LoneCallHooks``."""
        return LoneCallHooks(rounds, self)

    def try_call(self, call: IncomingCall, answer: CallAnswer) -> bool:
        """Take ``call`` if it is a get or write this node can answer without a task (True: ``answer`` will be
        called)."""
        body = call.body
        if type(body) is not list or len(body) != 4 or body[0] not in ("get", "write"):
            return False
        try:
            partition, op, _ = decode_call(body, self._limits)
            self._roles.check_call(call.peer, partition, op)
        except Exception:
            return False  # the ordinary way refuses it (or logs what failed) as it would without this module
        replica = self._replica(partition)
        if replica is None or partition == SYSTEM:
            return False
        started = trio.current_time()
        if isinstance(op, Get):
            taken = self._get(partition, op, replica, answer, started)
        else:
            assert isinstance(op, Write)
            taken = self._write(partition, op, replica, answer, started)
        if taken:
            self.taken += 1
            if call.peer.node_id:
                self._learn_address(call.peer.node_id, call.peer.address)
        return taken

    def _get(self, partition: str, op: Get, replica: _Replica, answer: CallAnswer, started: float) -> bool:
        if op.consistency == "stale":
            self._answer(answer, partition, op, started, None)
            return True
        if not replica.is_leader:
            return False  # a follower's read asks the leader, bounded by the ordinary way's wait
        try:
            waiter = replica.read_nowait()
        except BoroughError:
            return False
        self.pending += 1
        waiter.then(lambda done: self._answer_read(answer, partition, op, started, done.error))
        return True

    def _write(self, partition: str, op: Write, replica: _Replica, answer: CallAnswer, started: float) -> bool:
        # (Without a session the ordinary way bounds the write by the caller's time and says when its outcome is
        # unknown; a follower answers NotLeader with the leader's address; a replica electing itself holds it.)
        if op.session is None or not replica.is_leader:
            return False
        machine = replica.machine
        if not isinstance(machine, KvStateMachine):
            return False
        try:
            waiter = replica.propose_nowait(machine.write_command(op.ops, op.session))
        except BoroughError:
            return False  # (refused now, as the ordinary way would be: it says so)
        self.pending += 1
        waiter.then(lambda done: self._answer_write(answer, partition, op, started, done))
        return True

    def _answer_write(self, answer: CallAnswer, partition: str, op: Write, started: float, done: Waiter) -> None:
        # Runs in the replica's turn (its entry was applied or lost): it must not raise.
        self.pending -= 1
        result = done.error if done.error is not None else done.result
        try:
            if isinstance(result, BoroughError):  # (lost, refused by the session table, the replica stopped)
                answer.fail(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                answer.reply(op.encode_result(result))
        except Exception as exc:
            logger.error("write on partition %r failed", partition, exc_info=exc)
            answer.fail(internal_error(self._node_id, op.name, partition))
        self._observe(op.name, started)

    def _observe(self, name: str, started: float) -> None:
        on_op = self._on_op()
        if on_op is not None:
            on_op(name, trio.current_time() - started)

    def _answer_read(
        self, answer: CallAnswer, partition: str, op: Get, started: float, error: BaseException | None
    ) -> None:
        # Runs in the replica's turn (a linearizable read's round ended): it must not raise.
        self.pending -= 1
        self._answer(answer, partition, op, started, error)

    def _answer(self, answer: CallAnswer, partition: str, op: Get, started: float, error: BaseException | None) -> None:
        # Runs in the replica's turn (a linearizable read's round ended), or at once (a stale read): it must not raise.
        try:
            if error is not None:
                answer.fail(error)
            else:
                answer.reply(op.encode_result(read_value(self._store, partition, op.key)))
        except BoroughError as exc:
            answer.fail(exc)
        except Exception as exc:
            logger.error("get on partition %r failed", partition, exc_info=exc)
            answer.fail(internal_error(self._node_id, op.name, partition))
        self._observe(op.name, started)


class LoneCallHooks:
    """A node's dispatch hooks (``borough.wire.records.DispatchHooks``), on every connection: the round that the
    frames a reader dispatched ask for runs in the reader's step (``Rounds.leave``) only while the node has at
    most one client's request in flight, a lone client's. With more, it runs in the round task's pass, in which
    the calls that arrive together from many clients, and the acknowledgements that commit earlier ones, join
    one round."""

    __slots__ = ("_quick", "_rounds")

    def __init__(self, rounds: Rounds, quick: QuickCalls) -> None:
        self._rounds = rounds
        self._quick = quick

    def enter(self) -> None:
        self._rounds.enter()

    def leave(self) -> None:
        self._rounds.leave(inline=self._quick.pending <= 1)
