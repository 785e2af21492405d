"""Handler transactions (issue 18): the command every replica validates and applies
(``borough.node.txn_command`` in ``KvStateMachine``), the outbox of effects it owes (``effects_table``), and the
``request.partition`` a handler sees inside one (``TxnBackend``: read-your-writes, iterators over its own writes,
reads recorded for validation)."""

from __future__ import annotations

from typing import Any

import trio

from borough.kv import encode_value
from borough.node.effects_table import Outbox
from borough.node.records import Delete, Limits, Put, ScanRange
from borough.node.session_table import SessionRef
from borough.node.statemachine import KvStateMachine, write_command
from borough.node.transaction import TxnBackend
from borough.node.txn_command import Committed, Conflict, TxnCommand, range_digest, value_digest
from borough.partition import Partition
from borough.raft.records import Entry, EntryKind
from borough.store.memory import MemoryStore

P = "acct"
SID = b"s" * 16


def machine(store: MemoryStore | None = None) -> KvStateMachine:
    return KvStateMachine(P, store or MemoryStore(), now=lambda: 0.0)


def entry(index: int, data: bytes) -> Entry:
    return Entry(term=2, index=index, kind=EntryKind.NORMAL, data=data)


def txn(**fields: Any) -> bytes:
    return TxnCommand(**fields).encode(stamp=1.0, expiry=900.0)


def apply(m: KvStateMachine, *commands: bytes, first: int = 1) -> dict[int, Any]:
    """Apply ``commands`` in one round and write the result to the store, as a replica does."""
    ops, results = m.apply([entry(first + i, c) for i, c in enumerate(commands)])
    batch = m.store.write_batch()
    batch.apply(P, ops, first + len(commands) - 1, m.record_changes())
    m.store.write(batch)
    return results


def put(key: str, value: Any) -> list[Any]:
    return ["put", key, encode_value(value)]


def test_a_transaction_applies_its_writes_and_records_its_reply_under_its_session() -> None:
    m = machine()
    ref = SessionRef(SID, 1, 1)
    results = apply(m, txn(ops=(put("counter", 1),), reads=(("counter", None),), reply=1, session=ref))
    assert results[1] == Committed(1)
    assert m.store.get(P, "counter") == 1
    # the same request again (a retry reaching a new leader): a no-op returning the recorded reply
    again = apply(
        m,
        txn(ops=(put("counter", 2),), reads=(("counter", value_digest(encode_value(1))),), reply=2, session=ref),
        first=2,
    )
    assert again[2] == Committed(1, duplicate=True)
    assert m.store.get(P, "counter") == 1
    # and a fresh table loaded from the store (a restart) knows it too
    assert machine(m.store).recorded(ref) is not None


def test_a_transaction_whose_read_changed_before_its_entry_applies_nothing() -> None:
    m = machine()
    ref = SessionRef(SID, 1, 1)
    stale = txn(ops=(put("counter", 1),), reads=(("counter", None),), reply=1, session=ref)
    # an earlier entry of the same round wrote the key (not in the store yet): validation sees it
    results = apply(m, write_command([Put("counter", encode_value(5))], stamp=1.0), stale)
    assert isinstance(results[2], Conflict) and "counter" in results[2].reason
    assert m.store.get(P, "counter") == 5
    assert m.recorded(ref) is None  # not recorded: the leader runs the handler again under the same seq
    assert m.conflicts == 1
    # and when the key changed in an earlier round (in the store)
    assert isinstance(apply(m, stale, first=3)[3], Conflict)
    fresh = txn(ops=(put("counter", 6),), reads=(("counter", value_digest(encode_value(5))),), reply=6, session=ref)
    assert apply(m, fresh, first=4)[4] == Committed(6)
    assert m.store.get(P, "counter") == 6


def test_a_deleted_read_key_and_a_changed_range_are_conflicts() -> None:
    m = machine()
    apply(m, write_command([Put("a", encode_value(1)), Put("c", encode_value(3))], stamp=1.0))
    seen = range_digest([("a", encode_value(1)), ("c", encode_value(3))])
    scan = ScanRange(gte="a", lt="m")
    ok = txn(ranges=((scan, seen),), ops=(put("sum", 4),))
    assert apply(m, ok, first=2)[2] == Committed(None)
    # a key inserted into the range by an earlier entry of the same round (a phantom) is a conflict
    results = apply(m, write_command([Put("b", encode_value(2))], stamp=1.0), ok, first=3)
    assert isinstance(results[4], Conflict)
    # a key outside the range is not
    apply(m, write_command([Delete("b")], stamp=1.0), first=5)
    assert apply(m, write_command([Put("zz", encode_value(0))], stamp=1.0), ok, first=6)[7] == Committed(None)
    gone = txn(reads=(("a", value_digest(encode_value(1))),), ops=(put("x", 1),))
    assert isinstance(apply(m, write_command([Delete("a")], stamp=1.0), gone, first=8)[9], Conflict)


def test_effects_enter_the_outbox_once_and_done_removes_them() -> None:
    m = machine()
    effects = (("audit", (put("acct/1", "r1"),)), ("other", (put("k", 1), ["del", "j"])))
    results = apply(m, txn(ops=(put("counter", 1),), effects=effects, session=SessionRef(SID, 1, 1)))
    committed = results[1]
    assert isinstance(committed, Committed) and committed.effect_seqs == (1, 2)
    pending = m.outbox.pending()
    assert [(e.seq, e.target) for e in pending] == [(1, "audit"), (2, "other")]
    ref = m.outbox.ref(pending[0])
    assert ref.seq == 1 and ref.low == 1 and m.outbox.session is not None
    # a duplicate or a conflicting run owes nothing
    dup = txn(ops=(put("counter", 2),), effects=effects, session=SessionRef(SID, 1, 1))
    conflicting = txn(reads=(("counter", None),), effects=effects, session=SessionRef(SID, 2, 1))
    apply(m, dup, conflicting, first=2)
    assert len(m.outbox) == 2
    # the outbox survives a restart, then done entries empty it (even one whose transaction conflicts)
    again = machine(m.store)
    assert [(e.seq, e.target, e.ops) for e in again.outbox.pending()] == [(e.seq, e.target, e.ops) for e in pending]
    apply(again, txn(done=(1,)), txn(reads=(("counter", None),), done=(2, 99)), first=4)
    assert len(again.outbox) == 0 and len(Outbox.load(again.store.records(P))) == 0
    assert again.outbox.next_seq == 3  # seqs are never reused


async def test_the_backend_reads_its_own_writes_and_records_only_what_it_read_from_the_store() -> None:
    store = MemoryStore()
    m = machine(store)
    apply(
        m, write_command([Put("a", encode_value(1)), Put("b", encode_value(2)), Put("d", encode_value(4))], stamp=1.0)
    )
    backend = TxnBackend(store, P)
    part = Partition(backend, P, Limits())
    assert await part.get("a") == 1
    await part.put("a", 10)
    await part.put("c", 3)
    await part.delete("b")
    assert await part.get("a") == 10 and await part.get("b", None) is None
    assert [k async for k in part.iterator(values=False)] == ["a", "c", "d"]
    assert [v async for v in part.iterator(keys=False, reverse=True)] == [4, 3, 10]
    assert list(backend.reads.values()) == [("a", value_digest(encode_value(1)))]  # b and c were its own writes
    assert len(backend.ranges) == 2
    # the buffered writes apply as one transaction, validated against what it read
    command = TxnCommand(
        ops=tuple(backend.writes.values()), reads=tuple(backend.reads.values()), ranges=tuple(backend.ranges)
    )
    assert apply(m, command.encode(stamp=1.0, expiry=900.0), first=2)[2] == Committed(None)
    assert dict(store.iterate(P)) == {"a": 10, "c": 3, "d": 4}
    backend.open = False
    with_error = None
    try:
        await part.put("late", 1)
    except Exception as exc:
        with_error = exc
    assert with_error is not None and "already returned" in str(with_error)


async def test_an_iterator_over_a_page_its_handler_deleted_reads_on() -> None:
    store = MemoryStore()
    m = machine(store)
    apply(m, write_command([Put(f"k{i:03d}", encode_value(i)) for i in range(20)], stamp=1.0))
    backend = TxnBackend(store, P)
    part = Partition(backend, P, Limits())
    for i in range(10):
        await part.delete(f"k{i:03d}")
    rows = []
    async for key, value in part.iterator():
        rows.append((key, value))
    assert rows == [(f"k{i:03d}", i) for i in range(10, 20)]
    await trio.lowlevel.checkpoint()


class FakeLeader:
    """What the effects pump needs of a leader replica: its name, state machine and ``propose``."""

    def __init__(self, m: KvStateMachine) -> None:
        self.name = P
        self.machine = m
        self.is_leader = True
        self.index = 100

    async def propose(self, command: bytes) -> Any:
        await trio.lowlevel.checkpoint()
        self.index += 1
        return apply(self.machine, command, first=self.index)[self.index]


async def test_owed_effects_are_sent_until_they_land_under_the_same_session_and_seq() -> None:
    from borough.errors import Unavailable
    from borough.node.effects import EffectsPump
    from borough.node.protocol import Write

    m = machine()
    effects = (("audit", (put("acct/1", "r1"),)), ("audit", (put("acct/2", "r2"),)))
    assert apply(m, txn(effects=effects))[1] == Committed(None, (1, 2))
    leader = FakeLeader(m)
    sent: list[tuple[str, Write]] = []
    failing = {"audit"}

    async def run(partition: str, op: Any) -> None:
        await trio.lowlevel.checkpoint()
        sent.append((partition, op))
        if partition in failing:
            raise Unavailable("the audit partition has no quorum")

    pump = EffectsPump(run, lambda: [leader])  # type: ignore[list-item]
    await pump.pump_once()
    assert len(m.outbox) == 2 and pump.take_done(P) == ()  # not acknowledged: still owed
    failing.clear()
    await pump.pump_once()
    assert len(m.outbox) == 0  # acknowledged, then a done entry removed them
    refs = [(op.session.seq, op.session.low) for _, op in sent if op.session is not None]
    assert sorted(refs) == [(1, 1), (1, 1), (2, 1), (2, 1)]  # each sent twice, as the same session write
    assert len({op.session.session for _, op in sent if op.session is not None}) == 1
    assert pump.delivered == 2
