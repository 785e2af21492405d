"""What a replica applies: committed log entries turned into key/value writes and per-entry results.

This module owns the command format in the Raft log and the two state machines behind it: ordinary
partitions and ``_system`` (member table and directory, see ``borough.system``). An ordinary partition's
command is ``[1, stamp, expiry, session, ops]``: the leader's log-time stamp and session expiry (see
``borough.node.session_table``: every replica judges expiry by these, never by its own clock), the write's
``SessionRef`` as a list (or None for a write without one: a handler's), and its ``["put", key,
encoded_value]`` / ``["del", key]`` ops, applied atomically; every op was checked by ``borough.node.protocol``
before it entered the log. A write whose session already applied it is a no-op returning the recorded result;
one the session table refuses is a no-op returning the error its caller gets. (A plain list of ops, the format
before sessions, is still applied as a write without a session.)

It knows nothing of Raft roles, trio or the network; the replica driver hands it committed entries and writes
what it returns (ops, results and record changes, in one batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import cbor2

from borough.kv import encode_key
from borough.node.effects_table import Outbox
from borough.node.records import WriteOp
from borough.node.session_table import DEFAULT_EXPIRY, Known, LogClock, Refused, SessionRef, SessionTable
from borough.node.system_state import SystemState
from borough.node.txn_command import TXN_V1, Committed, TxnCommand, validate
from borough.raft.records import Entry, EntryKind
from borough.store.base import Store

__all__ = ["KvStateMachine", "StateMachine", "SystemStateMachine", "encode_command", "propose_write", "write_command"]

logger = logging.getLogger(__name__)


def encode_command(command: Any) -> bytes:
    """A ``_system`` command (see ``borough.node.system_state``) as a log entry."""
    return cbor2.dumps(command)


#: The version tag that opens a stamped write command.
_WRITE_V1 = 1
_NORMAL = EntryKind.NORMAL


def write_command(
    ops: Iterable[WriteOp], *, stamp: float, session: SessionRef | None = None, expiry: float = DEFAULT_EXPIRY
) -> bytes:
    """The log entry of an ordinary partition's write: its checked ops, applied atomically in order, stamped
    with the leader's log time (``KvStateMachine.write_command`` stamps it for you)."""
    ref = None if session is None else session.to_list()
    return cbor2.dumps([_WRITE_V1, stamp, expiry, ref, [op.to_list() for op in ops]])


async def propose_write(replica: Any, ops: Iterable[WriteOp], session: SessionRef | None = None) -> Any:
    """Propose a write on ``replica`` (a leader of an ordinary partition), stamped by its state machine, and
    return its result; a write the session table refused raises its error (nothing was applied)."""
    machine = replica.machine
    if not isinstance(machine, KvStateMachine):
        raise TypeError(f"partition {replica.name!r} takes no key/value writes")
    result = await replica.propose(machine.write_command(ops, session))
    if isinstance(result, BaseException):
        raise result
    return result


class StateMachine(Protocol):
    def apply(self, entries: Sequence[Entry]) -> tuple[list[Any], dict[int, Any]]:
        """The key/value ops that applying ``entries`` produces, and each command's result by index."""
        ...

    def record_changes(self) -> list[tuple[bytes, bytes | None]]:
        """The changes to the partition's internal records made by the entries applied since the last call,
        for the batch that applies them (``WriteBatch.apply``'s ``records``)."""
        ...

    def reload(self) -> None:
        """The partition's data was replaced (a snapshot was installed): rebuild any in-memory view."""
        ...


class KvStateMachine:
    """An ordinary partition: each entry is a batch of puts and deletes, applied in order, at most once per
    (session, seq). ``now`` is the node's clock (trio's), used only to stamp commands this replica proposes."""

    def __init__(
        self, partition: str, store: Store, *, now: Callable[[], float], expiry: float = DEFAULT_EXPIRY
    ) -> None:
        self.partition = partition
        self.store = store
        self.expiry = expiry
        self._now = now
        # (records are written with applied entries: a replica that applied none, such as a new group's, has none)
        records = list(store.records(partition)) if store.applied_index(partition) else []
        self.sessions = SessionTable.load(records)
        #: Effects on other partitions that committed transactions still owe (``borough.node.effects_table``).
        self.outbox = Outbox.load(records)
        #: Transactions refused by validation on this replica (for status and the benchmark).
        self.conflicts = 0
        self._pending = _Pending()
        self.clock = LogClock(now, self.sessions.now)

    def write_command(self, ops: Iterable[WriteOp], session: SessionRef | None = None) -> bytes:
        """A write as this replica proposes it as leader: stamped with its log clock and expiry."""
        return write_command(ops, stamp=self.clock.read(), session=session, expiry=self.expiry)

    def apply(self, entries: Sequence[Entry]) -> tuple[list[Any], dict[int, Any]]:
        ops: list[Any] = []
        results: dict[int, Any] = {}
        sessions = self.sessions
        pending = self._pending
        pending.rounds.append(ops)
        for entry in entries:
            if entry.kind != _NORMAL or not entry.data:
                continue  # a conf change (the core handles it) or a leader's no-op
            txn: TxnCommand | None = None
            try:
                command = cbor2.loads(entry.data)
                if command and command[0] == TXN_V1:
                    stamp, expiry, txn = TxnCommand.decode(command)
                    sessions.advance(stamp, expiry)
                    new_ops = []
                elif command and command[0] == _WRITE_V1:
                    _, stamp, expiry, ref, new_ops = command
                    sessions.advance(float(stamp), float(expiry))
                    session = None if ref is None else SessionRef.from_list(ref)
                else:
                    session, new_ops = None, command  # a write from before sessions
                if not isinstance(new_ops, list):
                    raise TypeError("a write's ops are a list")
            except Exception:
                # Only a corrupt log or a bug writes this; skipping keeps every replica identical.
                logger.error("partition %r: undecodable command at index %d skipped", self.partition, entry.index)
                continue
            if txn is not None:
                results[entry.index] = self._apply_txn(entry.index, stamp, txn, ops, pending)
                continue
            seen = None if session is None else sessions.check(session)
            if seen is None:  # (the common case first)
                ops.extend(new_ops)
                if session is not None:
                    sessions.record(session, None)
            elif isinstance(seen, Known):
                results[entry.index] = seen.result
            else:
                results[entry.index] = seen.error
        self.clock.observe(sessions.now)
        return ops, results

    def _apply_txn(self, index: int, stamp: float, txn: TxnCommand, ops: list[Any], pending: _Pending) -> Any:
        """A handler's transaction (``borough.node.txn_command``): its ``done`` acknowledgements always apply;
        the rest once per session, and only if its reads still hold."""
        self.outbox.done(txn.done)
        sessions = self.sessions
        seen = None if txn.session is None else sessions.check(txn.session)
        if isinstance(seen, Known):
            return Committed(seen.result, duplicate=True)
        if isinstance(seen, Refused):
            return seen.error
        conflict = validate(self.store, self.partition, pending.index(), txn)
        if conflict is not None:
            self.conflicts += 1
            return conflict
        ops.extend(txn.ops)
        if txn.session is not None:
            sessions.record(txn.session, txn.reply)
        return Committed(txn.reply, tuple(self.outbox.add(self.partition, index, stamp, txn.effects)))

    def recorded(self, ref: SessionRef) -> Known | None:
        """The reply recorded for ``ref`` on this replica, if any (see ``SessionTable.peek``)."""
        return self.sessions.peek(ref)

    def record_changes(self) -> list[tuple[bytes, bytes | None]]:
        self._pending = _Pending()  # the round's ops go to the store in the batch these changes join
        return self.sessions.changes() + self.outbox.changes()

    def reload(self) -> None:
        records = list(self.store.records(self.partition))
        self.sessions = SessionTable.load(records)
        self.outbox = Outbox.load(records)
        self._pending = _Pending()
        self.clock.observe(self.sessions.now)


class _Pending:
    """The ops applied since the store was last written (one round: every ``apply`` call until
    ``record_changes``), by encoded key, indexed only when a transaction needs them."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, Any] = {}
        #: The op lists of this round's ``apply`` calls, and how far each is indexed.
        self.rounds: list[list[Any]] = []
        self._seen: list[int] = []

    def index(self) -> dict[bytes, Any]:
        by_key = self._by_key
        seen = self._seen
        seen.extend([0] * (len(self.rounds) - len(seen)))
        for i, ops in enumerate(self.rounds):
            for op in ops[seen[i] :]:
                by_key[encode_key(op[1])] = op
            seen[i] = len(ops)
        return by_key


class SystemStateMachine:
    """``_system``: member table and partition directory, with an in-memory view for lookups."""

    def __init__(self, store: Store, partition: str) -> None:
        self.store = store
        self.partition = partition
        self.state = SystemState()
        self.reload()

    def reload(self) -> None:
        self.state = SystemState.load(self.store.iterate(self.partition))

    def record_changes(self) -> list[tuple[bytes, bytes | None]]:
        return []

    def apply(self, entries: Sequence[Entry]) -> tuple[list[Any], dict[int, Any]]:
        ops: list[Any] = []
        results: dict[int, Any] = {}
        for entry in entries:
            if entry.kind != EntryKind.NORMAL or not entry.data:
                continue
            try:
                command = cbor2.loads(entry.data)
            except Exception:
                logger.error("_system: undecodable command at index %d skipped", entry.index)
                continue
            new_ops, result = self.state.apply(command)
            ops.extend(new_ops)
            results[entry.index] = result
        return ops, results
