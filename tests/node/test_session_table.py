"""The session table of one partition (``borough.node.session_table``) and the state machine around it: a
(session, seq) applies once, in any order within the window; ``low`` trims what is kept; late copies of writes
given up on are refused; sessions expire by log time only; both bounds hold; the records rebuild the same table
(restart, snapshot) and the log clock never goes back."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from borough.errors import Overloaded, RemoteError
from borough.kv import encode_value
from borough.node.records import Put
from borough.node.session_table import Known, LogClock, Refused, SessionRef, SessionTable
from borough.node.statemachine import KvStateMachine, write_command
from borough.raft.records import Entry
from borough.store.memory import MemoryStore

A, B = b"a" * 16, b"b" * 16


def run(table: SessionTable, ref: SessionRef, *, stamp: float = 0.0, expiry: float = 100.0) -> Any:
    """One command through the table: 'applied', or what the table answered."""
    table.advance(stamp, expiry)
    seen = table.check(ref)
    if seen is None:
        table.record(ref, None)
        return "applied"
    return seen


def reloaded(table: SessionTable, store: MemoryStore | None = None, applied: int = 1) -> SessionTable:
    """Write the table's changes to a store and load a fresh table from it."""
    store = store or MemoryStore()
    batch = store.write_batch()
    batch.apply("p", [], applied, table.changes())
    store.write(batch)
    return SessionTable.load(store.records("p"), max_sessions=table.max_sessions, max_window=table.max_window)


def test_a_duplicate_is_a_no_op_returning_the_recorded_result() -> None:
    table = SessionTable()
    assert run(table, SessionRef(A, 1, 1)) == "applied"
    assert run(table, SessionRef(A, 1, 1)) == Known(None)
    assert run(table, SessionRef(B, 1, 1)) == "applied"  # another session's seq 1 is another write


def test_seqs_within_the_window_apply_in_any_order_once_each() -> None:
    table = SessionTable()
    assert run(table, SessionRef(A, 3, 1)) == "applied"
    assert run(table, SessionRef(A, 1, 1)) == "applied"
    assert run(table, SessionRef(A, 3, 1)) == Known(None)
    assert run(table, SessionRef(A, 2, 1)) == "applied"
    assert run(table, SessionRef(A, 1, 1)) == Known(None)
    assert table.results_held() == 3


def test_low_trims_the_results_and_a_late_copy_below_it_is_refused() -> None:
    table = SessionTable()
    for seq in (1, 2, 3):
        run(table, SessionRef(A, seq, 1))
    assert run(table, SessionRef(A, 5, 3)) == "applied"  # 1 and 2 are finished: their results are dropped
    assert table.results_held() == 2
    assert run(table, SessionRef(A, 3, 3)) == Known(None)  # 3 is still kept
    late = run(table, SessionRef(A, 4, 4))
    assert late == "applied"  # 4 was never seen: within the window, so applied
    refused = run(table, SessionRef(A, 2, 2))  # 2 was applied and trimmed: never applied again
    assert isinstance(refused, Refused) and isinstance(refused.error, RemoteError)
    gave_up = SessionTable()
    run(gave_up, SessionRef(A, 2, 2))  # the client gave up on 1 before it arrived
    assert isinstance(run(gave_up, SessionRef(A, 1, 1)), Refused)


def test_sessions_expire_by_log_time_only_oldest_first() -> None:
    table = SessionTable()
    run(table, SessionRef(A, 1, 1), stamp=10.0)
    run(table, SessionRef(B, 1, 1), stamp=50.0)
    run(table, SessionRef(A, 2, 1), stamp=60.0)  # A wrote again: now B is the oldest
    table.advance(150.0, expiry=100.0)
    assert len(table) == 2
    table.advance(40.0, expiry=100.0)  # a stamp from behind never moves log time back
    assert table.now == 150.0
    table.advance(150.1, expiry=100.0)
    assert len(table) == 1  # B (last write at 50) expired; A wrote at 60
    assert run(table, SessionRef(A, 2, 1), stamp=150.1) == Known(None)
    table.advance(300.0, expiry=100.0)
    assert len(table) == 0 and table.results_held() == 0
    assert run(table, SessionRef(A, 2, 1), stamp=300.0) == "applied"  # forgotten: treated as new
    assert reloaded(table).now == 300.0


def test_the_bounds_refuse_rather_than_forget_a_live_session() -> None:
    table = SessionTable(max_sessions=2, max_window=3)
    run(table, SessionRef(A, 1, 1), stamp=1.0)
    run(table, SessionRef(B, 1, 1), stamp=2.0)
    full = run(table, SessionRef(b"c" * 16, 1, 1), stamp=3.0)
    assert isinstance(full, Refused) and isinstance(full.error, Overloaded) and full.error.provably_not_run
    assert len(table) == 2
    for seq in (2, 3):
        run(table, SessionRef(A, seq, 1), stamp=3.0)
    busy = run(table, SessionRef(A, 4, 1), stamp=3.0)
    assert isinstance(busy, Refused) and isinstance(busy.error, Overloaded)
    assert run(table, SessionRef(A, 4, 2), stamp=3.0) == "applied"  # 1 finished: room again
    table.advance(103.5, expiry=100.0)  # A and B expire: a new session fits
    assert run(table, SessionRef(b"c" * 16, 1, 1), stamp=103.5) == "applied"


def test_the_records_rebuild_the_same_table() -> None:
    table = SessionTable()
    store = MemoryStore()
    run(table, SessionRef(A, 1, 1), stamp=5.0)
    run(table, SessionRef(A, 2, 1), stamp=6.0)
    run(table, SessionRef(B, 7, 7), stamp=7.0)
    loaded = reloaded(table, store, applied=1)
    run(table, SessionRef(A, 3, 2), stamp=8.0)  # trims 1: its record is deleted in the next batch
    loaded = reloaded(table, store, applied=2)
    assert loaded.now == 8.0 and len(loaded) == 2 and loaded.results_held() == 3
    assert run(loaded, SessionRef(B, 7, 7), stamp=8.0, expiry=1.5) == Known(None)  # B's last write is 8 now
    assert run(loaded, SessionRef(A, 2, 2), stamp=9.0) == Known(None)
    assert isinstance(run(loaded, SessionRef(A, 1, 1), stamp=9.0), Refused)
    loaded.advance(108.5, expiry=100.0)  # the order of last writes was rebuilt and kept: B (8) then A (9)
    assert len(loaded) == 1 and run(loaded, SessionRef(A, 2, 2), stamp=108.5) == Known(None)


@given(
    st.lists(
        st.tuples(st.sampled_from([A, B]), st.integers(1, 12), st.integers(0, 11), st.floats(0, 400)),
        max_size=60,
    )
)
def test_property_each_seq_applies_at_most_once_and_the_table_stays_bounded(
    commands: list[tuple[bytes, int, int, float]],
) -> None:
    table = SessionTable(max_window=5)
    store = MemoryStore()
    applied: list[tuple[bytes, int]] = []
    for i, (sid, seq, back, stamp) in enumerate(commands):
        ref = SessionRef(sid, seq, max(1, seq - back))
        if run(table, ref, stamp=stamp, expiry=1000.0) == "applied":
            applied.append((sid, seq))
        assert table.results_held() <= 5 * len(table)
        if i % 7 == 0:
            table = reloaded(table, store, applied=i + 1)  # a restart: the same decisions follow
    assert len(applied) == len(set(applied))  # never twice (expiry is far beyond these stamps)


@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 10)), max_size=80))
def test_property_a_session_keeps_exactly_the_results_at_or_above_its_low(writes: list[tuple[int, int]]) -> None:
    """Whatever order its seqs are applied in: trimming (which stops at the first result it keeps while they
    were recorded in seq order) drops exactly those below ``low``."""
    table = SessionTable(max_window=64)
    model: set[int] = set()
    low = 1
    for seq, back in writes:
        ref = SessionRef(A, seq, max(1, seq - back))
        answered = run(table, ref, expiry=1000.0)
        if ref.low > low:
            low = ref.low
            model = {s for s in model if s >= low}
        assert (answered == "applied") == (seq >= low and seq not in model)
        if answered == "applied":
            model.add(seq)
        session = table._sessions[A]
        assert set(session.results) == model
        if session.ascending:
            assert list(session.results) == sorted(session.results)


def _state(table: SessionTable) -> Any:
    """What decides the table's answers: its time, and its sessions oldest first (sessions with the same last
    write expire together, so their order among themselves does not matter: ``load`` orders them by id)."""
    sessions = [(s.last, sid, s.low, dict(s.results)) for sid, s in table._sessions.items()]
    assert [s[0] for s in sessions] == sorted(s[0] for s in sessions)
    return table.now, sorted(sessions)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([A, B, b"c" * 16]), st.integers(1, 8), st.integers(0, 7), st.floats(0, 50), st.booleans()
        ),
        max_size=40,
    )
)
def test_property_the_records_of_any_batching_rebuild_the_live_table(
    commands: list[tuple[bytes, int, int, float, bool]],
) -> None:
    # A short expiry forgets and recreates sessions within one batch; headers and the clock are encoded when the
    # changes are taken, so what they hold must be the table's state then, whatever happened in between.
    table = SessionTable(max_window=4)
    store = MemoryStore()
    for i, (sid, seq, back, stamp, cut) in enumerate(commands):
        run(table, SessionRef(sid, seq, max(1, seq - back)), stamp=stamp, expiry=10.0)
        if cut:
            assert _state(reloaded(table, store, applied=i + 1)) == _state(table)
    assert _state(reloaded(table, store, applied=len(commands) + 1)) == _state(table)


def test_the_log_clock_goes_on_from_the_highest_applied_time_and_never_back() -> None:
    now = [1000.0]
    clock = LogClock(lambda: now[0], log_time=50.0)  # a new leader: its own clock's origin does not matter
    assert clock.read() == 50.0
    now[0] += 2.0
    assert clock.read() == 52.0
    clock.observe(40.0)  # an older stamp never pulls it back
    assert clock.read() == 52.0
    clock.observe(80.0)  # another leader's stamps ran ahead: go on from them
    assert clock.read() == 80.0
    now[0] -= 5.0  # (a clock going back is ignored too)
    assert clock.read() == 80.0


def test_the_state_machine_applies_a_duplicate_entry_as_a_no_op_and_returns_refusals() -> None:
    store = MemoryStore()
    machine = KvStateMachine("p", store, now=lambda: 0.0)
    put = (Put("k", encode_value(1)),)
    first = write_command(put, stamp=1.0, session=SessionRef(A, 1, 1))
    late = write_command(put, stamp=2.0, session=SessionRef(A, 1, 1))
    entries = [Entry(term=1, index=i, data=d) for i, d in [(1, first), (2, late)]]
    ops, results = machine.apply(entries)
    assert ops == [["put", "k", encode_value(1)]] and results == {2: None}  # 2 is 1 again: a no-op
    batch = store.write_batch()
    batch.apply("p", ops, 2, machine.record_changes())
    store.write(batch)
    again = KvStateMachine("p", store, now=lambda: 0.0)  # a restart
    ops, results = again.apply([Entry(term=1, index=3, data=late)])
    assert ops == [] and results == {3: None}
    assert again.clock.read() == 2.0
    stale = write_command(put, stamp=3.0, session=SessionRef(A, 1, 1))
    newer = write_command(put, stamp=3.0, session=SessionRef(A, 5, 5))
    ops, results = again.apply([Entry(term=1, index=4, data=newer), Entry(term=1, index=5, data=stale)])
    assert len(ops) == 1 and isinstance(results[5], RemoteError)


@pytest.mark.parametrize(
    "bad",
    [[b"short", 1, 1], [A, 0, 1], [A, 2, 3], [A, 1], "x", [A, 1.0, 1], [A, True, 1], [A, 1, True], (A, 1, 1)]
    + [[A, 1 << 63, 1], [bytearray(A), 1, 1], [A, 1, 0], [A, 1, 1, 1]],
)
def test_a_session_ref_is_checked(bad: Any) -> None:
    with pytest.raises(ValueError):
        SessionRef.from_list(bad)
