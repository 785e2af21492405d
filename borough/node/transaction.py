"""Running a handler as a transaction on its partition's leader (issue 18).

This module owns one handler run from start to commit: the ``request.partition`` it sees (``TxnBackend``:
reads of this replica's applied state, the handler's own buffered writes first, every read recorded with a
digest of what it saw; writes buffered), the other partitions it sees (``HeldEffects``: reads go straight to
them, writes are held), and the loop that commits the run as one ``TxnCommand`` (``borough.node.txn_command``)
carrying the request's ``SessionRef`` and reply, running the handler again when validation says it read
something that changed (at most ``MAX_ATTEMPTS`` times, then ``Overloaded`` naming the reason: nothing was
applied, so routing may send the request again).

Runs of one partition take turns on its leader (a lock per partition, like a Durable Object's input gate), so
on a steady leader validation practically never fails: each run starts after the previous one's entry was
applied here. The lock is only an optimisation; correctness rests on validation at apply time, which every
replica does alike, so a run on a deposed leader that is still going cannot commit a stale result.

A handler that raises, is cancelled or loses its leader commits nothing, and its held effects are dropped. It
knows nothing of the wire or routing: the server hands it a leader replica and the handler to run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import cbor2
import trio

from borough.errors import BoroughError, Overloaded, RemoteError
from borough.kv import encode_key
from borough.node.reads import read_value, scan_page
from borough.node.records import PartitionInfo, ScanPage, ScanRange, WriteOp
from borough.node.replica import Replica
from borough.node.session_table import SessionRef
from borough.node.statemachine import KvStateMachine
from borough.node.streams import split_streams
from borough.node.txn_command import (
    Committed,
    Conflict,
    TxnCommand,
    in_range,
    range_digest,
    validate,
    value_digest,
)
from borough.store.base import Store

__all__ = ["MAX_ATTEMPTS", "HeldEffects", "Transactions", "TxnBackend"]

logger = logging.getLogger(__name__)

#: Runs of one request before it gives up on conflicts (each conflict means another write changed its reads).
MAX_ATTEMPTS: Final = 8
#: Longest a committed run waits for its effects to land before replying (they land later regardless).
EFFECTS_WAIT: Final = 5.0
#: A handler's operations on ``request.partition`` between two yields to other tasks.
YIELD_EVERY: Final = 32
#: Effects a partition may owe before new runs are refused (Overloaded) until its targets catch up.
MAX_OWED: Final = 100_000


class _Stale(Exception):
    """A run raised after something it read changed: it runs again instead of answering with its exception."""


class Finished(BoroughError):
    """A handler used its ``request.partition`` after it returned (its transaction is already decided)."""


class TxnBackend:
    """``request.partition`` inside a transaction (a ``Any``; see the module docstring)."""

    def __init__(self, store: Store, partition: str, proposed: Proposed | None = None) -> None:
        self._store = store
        self._partition = partition
        self._proposed = proposed if proposed is not None else Proposed()
        #: Buffered writes by encoded key: the op as it will be applied (``["put", key, raw]`` / ``["del", key]``).
        self.writes: dict[bytes, list[Any]] = {}
        self.reads: dict[bytes, tuple[str | bytes, bytes | None]] = {}
        self.ranges: list[tuple[ScanRange, bytes]] = []
        self.open = True
        self._ops = 0

    async def _pace(self) -> None:
        """A checkpoint for cancellation on every operation, but a yield to other tasks only every
        ``YIELD_EVERY``: the operations are local and in memory, and a run that does not yield between its reads
        and its proposal lets the next run of the partition start at once (its turn is short)."""
        self._ops += 1
        if self._ops % YIELD_EVERY:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await trio.lowlevel.checkpoint()

    def _check(self) -> None:
        if not self.open:
            raise Finished("this handler already returned: its transaction is committed or dropped")

    async def kv_get(self, partition: str, key: str | bytes, consistency: str) -> bytes | None:
        await self._pace()
        if not self.open:  # after the handler returned (a reply stream reading lazily): the applied state
            return read_value(self._store, self._partition, key)
        kb = encode_key(key)
        op = self.writes.get(kb)
        if op is not None:
            return op[2] if op[0] == "put" else None
        proposed = self._proposed.get(kb)
        raw = read_value(self._store, self._partition, key) if proposed is None else _raw(proposed)
        if kb not in self.reads:
            self.reads[kb] = (key, value_digest(raw))
        return raw

    async def kv_write(self, partition: str, ops: tuple[WriteOp, ...]) -> None:
        await self._pace()
        self._check()
        for op in ops:
            self.writes[encode_key(op.key)] = op.to_list()

    async def kv_scan(self, partition: str, scan: ScanRange, limit: int, consistency: str) -> ScanPage:
        """A page of the range as this transaction sees it: the store's items with its own writes laid over
        them. What the store held in the part of the range the page covers is recorded for validation."""
        await self._pace()
        if not self.open:
            return scan_page(self._store, self._partition, scan, limit)
        while True:
            page = list(
                self._store.iterate(self._partition, encoded=True, **_bounds(scan), reverse=scan.reverse, limit=limit)
            )
            more = len(page) >= limit
            covered = scan if not more else _up_to(scan, page[-1][0])
            merged = {encode_key(k): (k, raw) for k, raw in page}
            for kb, op in self._proposed.within(covered):
                if op[0] == "put":
                    merged[kb] = (op[1], op[2])
                else:
                    merged.pop(kb, None)
            self.ranges.append((covered, range_digest(merged[kb] for kb in sorted(merged))))
            for kb, op in self.writes.items():
                if in_range(kb, covered):
                    if op[0] == "put":
                        merged[kb] = (op[1], op[2])
                    else:
                        merged.pop(kb, None)
            items = [merged[kb] for kb in sorted(merged, reverse=scan.reverse)]
            if items or not more:
                values = scan.values
                return ScanPage([(k, raw if values else None) for k, raw in items], more)
            scan = scan.after(page[-1][0])  # everything on this page was deleted by the handler: read on

    async def partition_info(self, partition: str) -> PartitionInfo:
        raise TypeError("info() is not available on request.partition inside a handler; use request.node")

    async def kv_export(self, partition: str) -> tuple[int, trio.abc.ReceiveStream]:
        raise TypeError("export() is not available on request.partition inside a handler's transaction")


class Proposed:
    """The writes of a partition's runs that were proposed on this leader and are not applied yet, newest last
    per key: the next run reads them (pipelining: it need not wait for the previous entry to apply). Safe
    because validation at apply time checks what the run read against the state there: if a proposed run it read
    from does not commit, neither does it, and it runs again."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, list[tuple[int, list[Any]]]] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, kb: bytes) -> list[Any] | None:
        ops = self._by_key.get(kb)
        return ops[-1][1] if ops else None

    def latest(self) -> dict[bytes, list[Any]]:
        return {kb: ops[-1][1] for kb, ops in self._by_key.items()}

    def within(self, scan: ScanRange) -> list[tuple[bytes, list[Any]]]:
        return [(kb, ops[-1][1]) for kb, ops in self._by_key.items() if in_range(kb, scan)]

    def add(self, writes: dict[bytes, list[Any]]) -> int:
        token = self._next
        self._next += 1
        for kb, op in writes.items():
            self._by_key.setdefault(kb, []).append((token, op))
        return token

    def remove(self, token: int, writes: dict[bytes, list[Any]]) -> None:
        for kb in writes:
            ops = [item for item in self._by_key.get(kb, ()) if item[0] != token]
            if ops:
                self._by_key[kb] = ops
            else:
                self._by_key.pop(kb, None)


class HeldEffects:
    """Other partitions inside a transaction: reads and info go to ``backend`` (routed, as any caller's);
    writes are held, per partition in order, until the transaction commits."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.held: dict[str, list[list[Any]]] = {}
        self.open = True

    async def kv_get(self, partition: str, key: str | bytes, consistency: Any) -> bytes | None:
        raw: bytes | None = await self._backend.kv_get(partition, key, consistency)
        return raw

    async def kv_scan(self, partition: str, scan: ScanRange, limit: int, consistency: Any) -> ScanPage:
        page: ScanPage = await self._backend.kv_scan(partition, scan, limit, consistency)
        return page

    async def partition_info(self, partition: str) -> PartitionInfo:
        info: PartitionInfo = await self._backend.partition_info(partition)
        return info

    async def kv_export(self, partition: str) -> tuple[int, trio.abc.ReceiveStream]:
        export: tuple[int, trio.abc.ReceiveStream] = await self._backend.kv_export(partition)
        return export

    async def kv_write(self, partition: str, ops: tuple[WriteOp, ...]) -> None:
        await trio.lowlevel.checkpoint()
        if not self.open:
            raise Finished("this handler already returned: its transaction is committed or dropped")
        self.held.setdefault(partition, []).extend(op.to_list() for op in ops)


#: Runs the handler once with ``request.partition``'s backend and the other partitions' backend.
RunHandler = Callable[[TxnBackend, HeldEffects], Awaitable[Any]]


class Transactions:
    """The node's handler transactions: a turn per partition and the commit loop. ``others`` is the backend
    other partitions are read through; ``effects`` delivers what committed runs owe (``EffectsPump``)."""

    def __init__(self, store: Store, others: Any, effects: Any, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        self._store = store
        self._others = others
        self._effects = effects
        self.max_attempts = max_attempts
        self._turns: dict[str, tuple[trio.Lock, int]] = {}
        self._proposed: dict[str, Proposed] = {}
        #: Runs that were run again because their entry failed validation (for the benchmark and status).
        self.conflicts = 0
        self.commits = 0

    @classmethod
    def for_node(cls, store: Store, session: Any, replicas: Any) -> Transactions:
        """A node's: other partitions through its routed ``session``, effects sent by an ``EffectsPump``."""
        from borough.node.effects import EffectsPump, owing

        pump = EffectsPump(session.run, owing(replicas))  # (the replicas that may owe effects, not every one)
        return cls(store, session, pump)

    @property
    def effects(self) -> Any:
        return self._effects

    @asynccontextmanager
    async def turn(self, partition: str) -> AsyncIterator[None]:
        """Hold ``partition``'s turn (one run at a time on this node). Locks are dropped when nobody holds or
        waits for them, so their number is bounded by the runs in progress."""
        lock, users = self._turns.get(partition, (trio.Lock(), 0))
        self._turns[partition] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[partition]
            if users <= 1:
                del self._turns[partition]
            else:
                self._turns[partition] = (lock, users - 1)

    async def run(self, replica: Replica, ref: SessionRef | None, handler: RunHandler, *, rerun: bool = True) -> Any:
        """Run ``handler`` as one transaction on leader ``replica`` and return its reply once committed (or the
        reply recorded for ``ref`` by an earlier run). ``rerun=False`` (a request whose streams cannot be read
        twice) gives up at the first conflict."""
        machine = replica.machine
        if not isinstance(machine, KvStateMachine):
            raise TypeError(f"partition {replica.name!r} runs no handlers")
        if ref is not None and (known := machine.recorded(ref)) is not None:
            await trio.lowlevel.checkpoint()
            return known.result
        if len(machine.outbox) >= MAX_OWED:
            raise Overloaded(
                f"partition {replica.name!r} still owes {len(machine.outbox)} effects to other partitions; retry later"
            )
        reason = ""
        attempts = self.max_attempts if rerun else 1
        for _attempt in range(attempts):
            result, reply = await self._attempt(replica, machine, ref, handler)
            if isinstance(result, Committed):
                self.commits += 1
                break
            if isinstance(result, BaseException):
                raise result
            assert isinstance(result, Conflict)
            self.conflicts += 1
            reason = result.reason
        else:
            raise Overloaded(
                f"the handler for partition {replica.name!r} ran {attempts} times and each time something it read "
                f"changed before it committed ({reason}); nothing was applied"
            )
        if result.effect_seqs:
            with trio.move_on_after(EFFECTS_WAIT):
                await self._effects.deliver(replica, result.effect_seqs)
        return result.reply if result.duplicate else reply  # (the reply as made, with its streams if any)

    async def run_plain(self, replica: Replica, ref: SessionRef | None, handler: Callable[[], Awaitable[Any]]) -> Any:
        """A handler that opted out (``borough.non_transactional``): it runs as plain code, its writes applied
        as it makes them; only its reply is recorded under ``ref``, so a retry of a run that finished returns
        it, while a retry of a run cut off midway runs it again (at least once)."""
        machine = replica.machine
        if ref is not None and isinstance(machine, KvStateMachine) and (known := machine.recorded(ref)) is not None:
            await trio.lowlevel.checkpoint()
            return known.result
        reply = await handler()
        if ref is not None and isinstance(machine, KvStateMachine) and _recordable(reply):
            command = TxnCommand(reply=reply, session=ref).encode(stamp=machine.clock.read(), expiry=machine.expiry)
            try:
                result = await replica.propose(command)
            except BoroughError as exc:  # the handler ran; only a retry's shortcut is lost
                logger.info("partition %r: reply of a non-transactional handler not recorded: %s", replica.name, exc)
            else:
                if isinstance(result, Committed):
                    return result.reply  # an earlier run's, if one finished first
        return reply

    async def _attempt(
        self, replica: Replica, machine: KvStateMachine, ref: SessionRef | None, handler: RunHandler
    ) -> tuple[Any, Any]:
        """One run in the partition's turn; its entry is proposed before the turn passes on, and its result
        awaited after (so the next run overlaps this one's replication). Returns the entry's result and the
        handler's reply."""
        name = replica.name
        proposed = self._proposed.setdefault(name, Proposed())
        local = TxnBackend(self._store, name, proposed)
        token: int | None = None
        try:
            async with self.turn(name):
                if ref is not None and (known := machine.recorded(ref)) is not None:
                    return Committed(known.result, duplicate=True), None  # an earlier copy committed meanwhile
                replica.check_leader()
                try:
                    command, reply = await self._run_once(replica, machine, ref, handler, local)
                except _Stale as stale:
                    return Conflict(str(stale)), None
                waiter = replica.propose_nowait(command)  # queued now: entries in the order of the turns
                token = proposed.add(local.writes)
            # The turn passes on here: the next run overlaps this entry's replication, reading its writes.
            try:
                return await waiter.wait(), reply
            except BoroughError as exc:
                return exc, reply
        finally:
            if token is not None:
                proposed.remove(token, local.writes)
            if not len(proposed) and name not in self._turns:
                self._proposed.pop(name, None)

    async def _run_once(
        self, replica: Replica, machine: KvStateMachine, ref: SessionRef | None, handler: RunHandler, local: TxnBackend
    ) -> tuple[bytes, Any]:
        held = HeldEffects(self._others)
        try:
            reply = await handler(local, held)
        except Exception as exc:
            # A run whose reads changed under it may have seen an inconsistent view (and raised because of it):
            # its exception is no answer; it runs again, as a run that returned would.
            seen = TxnCommand(reads=tuple(local.reads.values()), ranges=tuple(local.ranges))
            conflict = validate(self._store, replica.name, self._proposed.get(replica.name, Proposed()).latest(), seen)
            if conflict is not None:
                raise _Stale(f"{conflict.reason}, and the handler raised {type(exc).__name__}") from exc
            raise
        finally:
            local.open = held.open = False
        recorded, _streams = split_streams(reply)  # streams cannot be recorded: a retry gets the rest
        if not _recordable(recorded):
            raise RemoteError(
                "TypeError", "the handler's reply cannot be recorded: reply with plain data (CBOR)", from_handler=True
            )
        txn = TxnCommand(
            ops=tuple(local.writes.values()),
            reads=tuple(local.reads.values()),
            ranges=tuple(local.ranges),
            effects=tuple((p, tuple(ops)) for p, ops in held.held.items() if ops),
            reply=recorded,
            session=ref,
            done=self._effects.take_done(replica.name),
        )
        return txn.encode(stamp=machine.clock.read(), expiry=machine.expiry), reply


def _recordable(reply: Any) -> bool:
    try:
        cbor2.dumps(reply)
    except Exception:
        return False
    return True


def _raw(op: list[Any]) -> bytes | None:
    return op[2] if op[0] == "put" else None


def _bounds(scan: ScanRange) -> dict[str, Any]:
    return {"gt": scan.gt, "gte": scan.gte, "lt": scan.lt, "lte": scan.lte}


def _up_to(scan: ScanRange, last: str | bytes) -> ScanRange:
    """The part of ``scan`` from its start through ``last`` (in iteration order)."""
    if scan.reverse:
        return ScanRange(gte=last, lt=scan.lt, lte=scan.lte, reverse=True, values=scan.values)
    return ScanRange(gt=scan.gt, gte=scan.gte, lte=last, values=scan.values)
