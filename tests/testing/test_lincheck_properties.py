"""Properties of the checker: agreement with a brute-force reference, histories of real executions always pass,
corrupted reads are always caught, and shrunk histories are sound and minimal."""

from __future__ import annotations

import os
import random

import attrs
from hypothesis import given, note
from hypothesis import strategies as st
from lincheck_support import (
    Spec,
    brute_force_linearizable,
    cas,
    delete,
    get,
    memo_linearizable,
    put,
    record,
    sequential_history,
)

# The shortcuts taken when a key's full search runs out of budget are tested directly, on small histories.
from borough.testing._register_search import Problem
from borough.testing.history import NOT_FOUND, History, Kind, Operation, Status
from borough.testing.linearizability import Outcome, check
from borough.testing.linearizability import _refute as refute
from borough.testing.linearizability import _shrink as shrink
from borough.testing.linearizability import _stale_read as stale_read

# --- small arbitrary histories --------------------------------------------------------------------------------

_values = st.sampled_from([1, 2, 3, 4, 5])  # 4 and 5 are never read: unobserved writes
_results = st.sampled_from([NOT_FOUND, 1, 2, 3])
_statuses = st.sampled_from(["ok", "ok", "ok", "ok", "fail", "unknown", "unknown", "pending"])


SOAK = os.environ.get("BOROUGH_SOAK") == "1"


@st.composite
def small_specs(draw: st.DrawFn, max_ops: int = 7, min_ops: int = 1, span: int = 20) -> list[Spec]:
    specs = []
    for _ in range(draw(st.integers(min_ops, max_ops))):
        key = draw(st.sampled_from(["a", "a", "a", "b"]))
        start = draw(st.integers(0, span))
        status = draw(_statuses)
        end = None if status == "pending" else start + draw(st.integers(0, 10))
        kind = draw(st.sampled_from(["get", "get", "put", "put", "delete", "cas"]))
        if kind == "get":
            specs.append(get(key, draw(_results), start, end, status))
        elif kind == "put":
            specs.append(put(key, draw(_values), start, end, status))
        elif kind == "delete":
            specs.append(delete(key, start, end, status))
        else:
            specs.append(cas(key, draw(_results), draw(_values), draw(st.booleans()), start, end, status))
    return specs


@given(small_specs())
def test_agrees_with_brute_force(specs: list[Spec]) -> None:
    history = record(*specs)
    note(history.describe())
    result = check(history)
    note(result.explanation)
    assert result.outcome is not Outcome.UNDECIDED
    assert result.ok == brute_force_linearizable(history.operations)


@given(small_specs(min_ops=8, max_ops=18 if SOAK else 14, span=40))
def test_agrees_with_a_plain_memoised_search_on_bigger_histories(specs: list[Spec]) -> None:
    # Dense overlap on one or two keys, where the reductions and the pruning of unknown writes interact most.
    history = record(*specs)
    note(history.describe())
    result = check(history)
    note(result.explanation)
    assert result.outcome is not Outcome.UNDECIDED
    assert result.ok == memo_linearizable(history.operations)
    if not result.ok:
        assert not memo_linearizable(result.minimal)
        assert not memo_linearizable(weakened(result.minimal, result.weakened))


def weakened(ops: tuple[Operation, ...], ids: frozenset[int]) -> list[Operation]:
    return [attrs.evolve(op, status=Status.UNKNOWN) if op.id in ids else op for op in ops]


@given(small_specs(max_ops=8))
def test_shrunk_history_is_sound_and_minimal(specs: list[Spec]) -> None:
    history = record(*specs)
    result = check(history)
    if result.ok:
        return
    note(history.describe())
    note(result.explanation)
    by_id = {op.id: op for op in history.operations}
    # The minimal history is made of the failing key's own records, unchanged.
    assert result.minimal
    assert all(by_id[op.id] == op and op.key == result.key for op in result.minimal)
    assert [op.id for op in result.minimal] == sorted(op.id for op in result.minimal)
    assert result.weakened <= {op.id for op in result.minimal if op.is_write and op.status is Status.OK}
    # It fails on its own, as recorded and with its weakened writes' returns at +infinity.
    assert not brute_force_linearizable(result.minimal)
    shrunk = weakened(result.minimal, result.weakened)
    assert not brute_force_linearizable(shrunk)
    # Each operation is needed: dropping any read, or weakening any ok write, makes it linearizable.
    for op in shrunk:
        if op.status is not Status.OK:
            continue
        read_only = op.kind is Kind.GET or (op.kind is Kind.CAS and op.result is False)
        if read_only:
            smaller = [other for other in shrunk if other is not op]
        else:
            smaller = weakened(tuple(shrunk), frozenset({op.id}))
        assert brute_force_linearizable(smaller), f"#{op.id} is not needed"


@given(small_specs(max_ops=8), st.integers(0, 40))
def test_failing_windows_and_their_shrinks_are_sound(specs: list[Spec], frontier: int) -> None:
    # Windows are only tried when a key's full search runs out of budget; here every window is tried on small
    # histories, around any point, to check that a window that fails proves the whole history fails.
    history = record(*specs)
    key_ops = [op for op in history.operations if op.key == "a"]
    witness, _ = refute(key_ops, frontier, 10_000, width=1)
    if witness is None:
        return
    note(history.describe())
    note(f"{witness.found_by}: {[op.id for op in witness.ops]}, weakened {sorted(witness.weak)}")
    assert not brute_force_linearizable(key_ops)
    assert not brute_force_linearizable(weakened(tuple(witness.ops), witness.weak))
    shrunk = shrink(witness, 10_000, 100_000)
    assert {op.id for op in shrunk.ops} <= {op.id for op in witness.ops}
    assert not brute_force_linearizable(shrunk.ops)
    assert not brute_force_linearizable(weakened(shrunk.ops, shrunk.weak))


@given(small_specs(max_ops=8))
def test_stale_reads_found_directly_are_real(specs: list[Spec]) -> None:
    history = record(*specs)
    key_ops = [op for op in history.operations if op.key == "a"]
    witness = stale_read(Problem.build(key_ops, frozenset()))
    if witness is None:
        return
    note(history.describe())
    note(f"{witness.found_by}: {[op.id for op in witness.ops]}")
    # The witness is not made by sound moves (it drops writes), but fails on its own by the same argument that
    # proves the history fails; both are checked.
    assert not brute_force_linearizable(key_ops)
    assert not brute_force_linearizable(witness.ops)
    assert [op.kind for op in witness.ops].count(Kind.GET) == 1


# --- histories of real executions ------------------------------------------------------------------------------


@st.composite
def executions(draw: st.DrawFn) -> tuple[int, dict[str, int]]:
    seed = draw(st.integers(0, 2**32 - 1))
    params = {
        "n_ops": draw(st.integers(1, 60)),
        "n_keys": draw(st.integers(1, 3)),
        "clients": draw(st.integers(1, 10)),
        "stretch": draw(st.integers(0, 8)),
    }
    return seed, params


def execute(seed: int, params: dict[str, int]) -> History:
    keys = [f"k{i}" for i in range(params["n_keys"])]
    return sequential_history(
        random.Random(seed),
        n_ops=params["n_ops"],
        keys=keys,
        clients=params["clients"],
        stretch=params["stretch"],
        p_fail=0.1,
        p_unknown=0.15,
        p_cas=0.15,
    )


@given(executions())
def test_histories_of_real_executions_are_linearizable(execution: tuple[int, dict[str, int]]) -> None:
    history = execute(*execution)
    note(history.describe())
    result = check(history)
    assert result.ok, result.explanation


@given(executions(), st.data())
def test_corrupted_reads_are_detected(execution: tuple[int, dict[str, int]], data: st.DataObject) -> None:
    history = execute(*execution)
    ops = list(history.operations)
    gets = [op for op in ops if op.kind is Kind.GET and op.status is Status.OK]
    if not gets:
        return
    victim = data.draw(st.sampled_from(gets), label="corrupted get")
    same_key = [op for op in ops if op.key == victim.key and op is not victim]
    # Values a get cannot have read: one never written; one first written after it returned; one whose only
    # write was overwritten before the get began (every written value is unique, so these are exact).
    future = [
        op.value
        for op in same_key
        if op.kind is Kind.PUT and op.status is not Status.FAILED and op.invoked_at > (victim.completed_at or 0)
    ]
    completed_writes = [
        op
        for op in same_key
        if op.status is Status.OK and (op.kind in (Kind.PUT, Kind.DELETE) or (op.kind is Kind.CAS and op.result))
    ]
    stale = [
        w1.value
        for w1 in completed_writes
        if w1.kind is Kind.PUT
        and any(
            (w1.completed_at or 0) < w2.invoked_at and (w2.completed_at or 0) < victim.invoked_at
            for w2 in completed_writes
        )
    ]
    choices = ["never written"] + [f"future: {v}" for v in future] + [f"stale: {v}" for v in stale]
    choice = data.draw(st.sampled_from(choices), label="corruption")
    value = "never written" if choice == "never written" else choice.split(": ", 1)[1]
    corrupted = [attrs.evolve(op, result=value) if op is victim else op for op in ops]
    result = check(corrupted)
    note(result.explanation)
    assert result.outcome is Outcome.NOT_LINEARIZABLE
    assert result.key == victim.key
    # The original history is linearizable, so any sound sub-history that fails must contain the corrupted read.
    assert victim.id in {op.id for op in result.minimal}
    assert check(result.minimal).outcome is Outcome.NOT_LINEARIZABLE


@given(executions())
def test_json_round_trip_preserves_history_and_verdict(execution: tuple[int, dict[str, int]]) -> None:
    history = execute(*execution)
    copy = History.from_json(history.to_json())
    assert copy.operations == history.operations
    assert copy.next_event == history.next_event
    assert check(copy) == check(history)
