"""Bigger histories, checked functionally (timings belong in bench/lincheck.py): many keys and clients, deep
single-key histories that would overflow a recursive search, and the per-key budget."""

from __future__ import annotations

import random

import attrs
from lincheck_support import get, put, record, sequential_history, sequential_specs

from borough.testing.history import History, Kind, Status
from borough.testing.linearizability import Outcome, check


def mid_size_history(seed: int) -> History:
    keys = [f"user:{i}" for i in range(20)]
    return sequential_history(random.Random(seed), n_ops=2_000, keys=keys, clients=10, stretch=5)


def test_many_keys_and_clients() -> None:
    history = mid_size_history(7)
    result = check(history)
    assert result.ok, result.explanation
    assert result.keys == 20 and result.operations == 2_000
    assert not result.failed_keys and not result.undecided_keys


def test_one_corrupted_read_among_many_is_found_and_shrunk() -> None:
    history = mid_size_history(8)
    ops = list(history.operations)
    victim = next(op for op in reversed(ops) if op.kind is Kind.GET and op.status is Status.OK)
    corrupted = [attrs.evolve(op, result="corrupted") if op is victim else op for op in ops]
    result = check(corrupted)
    assert result.outcome is Outcome.NOT_LINEARIZABLE
    assert result.key == victim.key and result.failed_keys == (victim.key,)
    assert [op.id for op in result.minimal] == [victim.id]


def test_deep_single_key_history_needs_no_recursion() -> None:
    # 3,000 sequential writes and reads on one key: a recursive search would pass Python's recursion limit.
    specs = []
    for i in range(1_500):
        specs.append(put("k", i, 4 * i, 4 * i + 1))
        specs.append(get("k", i, 4 * i + 2, 4 * i + 3))
    assert check(record(*specs)).ok
    # A stale read at the very end: found, and shrunk to the three operations that show it.
    stale = record(*specs, get("k", 0, 6_000, 6_001))
    result = check(stale)
    assert result.outcome is Outcome.NOT_LINEARIZABLE
    assert [op.call() for op in result.minimal] == ["put('k', 0)", "put('k', 1)", "get('k')"]


def test_a_stale_read_in_a_hot_key_is_found_without_the_full_search() -> None:
    # A hot key too busy for the full search within the budget: the last read, made to return the freshest value
    # overwritten before it began, is still found (by the direct stale-read check) and shrunk to three ops.
    history = sequential_history(random.Random(11), n_ops=3_000, keys=["hot"], clients=10, stretch=8, p_cas=0.0)
    ops = list(history.operations)
    victim = next(op for op in reversed(ops) if op.kind is Kind.GET and op.status is Status.OK)
    puts = [op for op in ops if op.kind is Kind.PUT and op.status is Status.OK]
    stale = max(
        (
            w1
            for w1 in puts
            if w1.value != victim.result
            and any((w1.completed_at or 0) < w2.invoked_at < (w2.completed_at or 0) < victim.invoked_at for w2 in puts)
        ),
        key=lambda w1: w1.completed_at or 0,
    ).value
    corrupted = [attrs.evolve(op, result=stale) if op is victim else op for op in ops]
    result = check(corrupted)
    assert result.outcome is Outcome.NOT_LINEARIZABLE, result.explanation
    assert victim.id in {op.id for op in result.minimal}
    assert len(result.minimal) == 3
    assert f"checked directly, read #{victim.id} cannot have seen" in result.explanation
    assert check(result.minimal).outcome is Outcome.NOT_LINEARIZABLE


def test_a_local_failure_in_a_hot_key_is_found_in_a_window() -> None:
    # A read of the older of two concurrent writes after another read saw the newer one, at the end of a hot key
    # too busy for the full search: no single read is stale on its own, but a window around it fails.
    specs = sequential_specs(random.Random(11), n_ops=3_000, keys=["hot"], clients=10, stretch=8, p_cas=0.0)
    end = max(spec.end or spec.start for spec in specs) + 100
    ending = [
        put("hot", "A", end, end + 10, client="w1"),
        put("hot", "B", end + 1, end + 11, client="w2"),
        get("hot", "B", end + 12, end + 13, client="r1"),
        get("hot", "A", end + 14, end + 15, client="r2"),
    ]
    result = check(record(*specs, *ending))
    assert result.outcome is Outcome.NOT_LINEARIZABLE, result.explanation
    assert "the window of its events" in result.explanation
    assert [op.client_id for op in result.minimal] == ["w1", "w2", "r1", "r2"]


def test_budget_gives_undecided_instead_of_hanging() -> None:
    history = sequential_history(random.Random(3), n_ops=500, keys=["hot"], clients=10, stretch=5)
    result = check(history, budget=100)
    assert result.outcome is Outcome.UNDECIDED and not result.ok
    assert result.key == "hot" and result.undecided_keys == ("hot",) and result.minimal == ()
    assert "budget of 100 steps" in result.explanation
    assert check(history).ok  # with the default budget it is decided


def test_a_failing_key_is_reported_even_when_another_is_undecided() -> None:
    hot = sequential_history(random.Random(3), n_ops=500, keys=["hot"], clients=10, stretch=5)
    specs = [put("cold", 1, 0, 1), put("cold", 2, 2, 3), get("cold", 1, 4, 5)]
    ops = [*hot.operations, *(attrs.evolve(op, id=op.id + 1_000) for op in record(*specs).operations)]
    result = check(ops, budget=100)
    assert result.outcome is Outcome.NOT_LINEARIZABLE
    assert result.key == "cold" and result.undecided_keys == ("hot",)
    assert "1 key(s) undecided within budget" in result.explanation
