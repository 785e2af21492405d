"""Hand-made histories, each with the verdict a person can verify by drawing the intervals."""

from __future__ import annotations

import attrs
import pytest
from lincheck_support import brute_force_linearizable, cas, delete, get, put, record

from borough.testing.history import NOT_FOUND, History, Kind, Operation, Status
from borough.testing.linearizability import CheckResult, Outcome, check


def verdict(history: History) -> CheckResult:
    result = check(history)
    # Every small hand-made case is also checked by brute force, so the two checkers must agree.
    assert result.ok == brute_force_linearizable(history.operations), history.describe()
    return result


def assert_ok(history: History) -> None:
    result = verdict(history)
    assert result.outcome is Outcome.LINEARIZABLE, result.explanation
    assert result.ok and result.key is None and result.minimal == ()


def assert_fails(history: History, key: object = "k") -> CheckResult:
    result = verdict(history)
    assert result.outcome is Outcome.NOT_LINEARIZABLE, history.describe()
    assert not result.ok
    assert result.key == key
    assert result.minimal, result.explanation
    assert all(op.key == key for op in result.minimal)
    assert f"key {key!r}" in result.explanation
    # The minimal sub-history fails on its own, with its ops as recorded.
    assert check(result.minimal).outcome is Outcome.NOT_LINEARIZABLE
    assert not brute_force_linearizable(result.minimal)
    return result


def test_empty_history_is_linearizable() -> None:
    result = check(History())
    assert result.ok and result.keys == 0 and result.operations == 0


def test_sequential() -> None:
    assert_ok(
        record(
            get("k", NOT_FOUND, 0, 1),
            put("k", 1, 2, 3),
            get("k", 1, 4, 5),
            put("k", 2, 6, 7),
            get("k", 2, 8, 9),
            delete("k", 10, 11),
            get("k", NOT_FOUND, 12, 13),
        )
    )


@pytest.mark.parametrize("seen", [0, 1])
def test_get_overlapping_a_put_may_see_either_value(seen: int) -> None:
    assert_ok(record(put("k", 0, 0, 1), put("k", 1, 2, 6), get("k", seen, 3, 5)))


def test_two_concurrent_gets_may_see_old_then_new_but_not_new_then_old() -> None:
    # The put spans both gets: the first may see 1 and the second 0... only if they overlap each other.
    assert_ok(record(put("k", 0, 0, 1), put("k", 1, 2, 20), get("k", 1, 3, 5), get("k", 1, 6, 8)))
    assert_ok(record(put("k", 0, 0, 1), put("k", 1, 2, 20), get("k", 0, 3, 5), get("k", 1, 6, 8)))
    # Sequential gets during the put: once a get saw 1, a later get cannot see 0 (no new-then-old).
    result = assert_fails(record(put("k", 0, 0, 1), put("k", 1, 2, 20), get("k", 1, 3, 5), get("k", 0, 6, 8)))
    assert len(result.minimal) == 4


def test_stale_read_after_a_completed_write_fails() -> None:
    result = assert_fails(record(put("k", 1, 0, 1), put("k", 2, 2, 3), get("k", 1, 4, 5)))
    assert [op.kind for op in result.minimal] == [Kind.PUT, Kind.PUT, Kind.GET]
    assert (
        "#1 put('k', 2) ok: it would overwrite 1, which #2 get('k') -> 1 (invoked at event 4) must still see"
        in result.explanation
    )


def test_read_of_a_value_never_written_fails() -> None:
    result = assert_fails(record(put("k", 1, 0, 1), get("k", 7, 2, 3), put("other", 7, 4, 5)))
    # The put of 1 explains nothing about reading 7: it is shrunk away, and the other key is not involved.
    assert [op.call() for op in result.minimal] == ["get('k')"]
    assert result.failed_keys == ("k",)


def test_read_from_the_future_fails() -> None:
    assert_fails(record(get("k", 1, 0, 1), put("k", 1, 2, 3)))


def test_failed_ops_are_ignored() -> None:
    assert_ok(record(put("k", 1, 0, 1), put("k", 2, 2, 3, status="fail"), get("k", 1, 4, 5)))
    # A failed get's result does not matter either.
    assert_ok(record(put("k", 1, 0, 1), get("k", 99, 2, 3, status="fail")))
    # A failed put did not take effect, so reading its value is a violation.
    assert_fails(record(put("k", 1, 0, 1), put("k", 2, 2, 3, status="fail"), get("k", 2, 4, 5)))


def test_unknown_put_that_a_later_read_sees_is_fine() -> None:
    assert_ok(record(put("k", 1, 0, 1), put("k", 2, 2, 3, status="unknown"), get("k", 2, 10, 11)))


def test_unknown_put_that_takes_effect_after_the_client_gave_up_is_fine() -> None:
    assert_ok(record(put("k", 1, 0, 1), put("k", 2, 2, 3, status="unknown"), get("k", 1, 4, 5), get("k", 2, 6, 7)))


def test_unknown_put_that_never_appears_is_fine() -> None:
    assert_ok(record(put("k", 1, 0, 1), put("k", 2, 2, 3, status="unknown"), get("k", 1, 4, 5), get("k", 1, 6, 7)))


def test_unknown_put_whose_value_appears_then_disappears_fails() -> None:
    result = assert_fails(
        record(put("k", 1, 0, 1), put("k", 2, 2, 3, status="unknown"), get("k", 2, 4, 5), get("k", 1, 6, 7))
    )
    assert len(result.minimal) == 4


def test_unknown_put_invoked_after_a_read_cannot_explain_it() -> None:
    assert_fails(record(get("k", 2, 0, 1), put("k", 2, 2, 3, status="unknown")))


def test_pending_ops_count_as_unknown() -> None:
    assert_ok(record(put("k", 1, 0, 1), put("k", 2, 2, None), get("k", 2, 4, 5)))
    assert_ok(record(put("k", 1, 0, 1), get("k", 5, 2, None)))  # a pending get observed nothing
    assert_fails(record(put("k", 2, 0, None), get("k", 2, 4, 5), get("k", NOT_FOUND, 6, 7)))


def test_delete_and_not_found() -> None:
    assert_ok(record(get("k", NOT_FOUND, 0, 1)))
    assert_ok(record(put("k", 1, 0, 1), delete("k", 2, 3), get("k", NOT_FOUND, 4, 5)))
    assert_ok(record(delete("k", 0, 1), get("k", NOT_FOUND, 2, 3)))  # deleting an absent key is fine
    assert_ok(record(put("k", 1, 0, 1), delete("k", 2, 6), get("k", 1, 3, 4), get("k", NOT_FOUND, 5, 7)))
    assert_fails(record(put("k", 1, 0, 1), delete("k", 2, 3), get("k", 1, 4, 5)))
    assert_fails(record(put("k", 1, 0, 1), get("k", NOT_FOUND, 2, 3)))
    assert_fails(record(put("k", 1, 0, 1), delete("k", 2, 3), put("k", 2, 4, 5), get("k", NOT_FOUND, 6, 7)))


def test_unknown_delete() -> None:
    assert_ok(record(put("k", 1, 0, 1), delete("k", 2, 3, status="unknown"), get("k", 1, 4, 5)))
    assert_ok(record(put("k", 1, 0, 1), delete("k", 2, 3, status="unknown"), get("k", NOT_FOUND, 4, 5)))
    assert_fails(
        record(
            put("k", 1, 0, 1),
            delete("k", 2, 3, status="unknown"),
            get("k", NOT_FOUND, 4, 5),
            get("k", 1, 6, 7),
        )
    )


def test_compare_and_set() -> None:
    assert_ok(record(cas("k", NOT_FOUND, 1, True, 0, 1), get("k", 1, 2, 3)))
    assert_ok(record(put("k", 1, 0, 1), cas("k", 2, 3, False, 2, 3), get("k", 1, 4, 5)))
    assert_ok(record(put("k", 1, 0, 1), cas("k", 1, 3, True, 2, 3), get("k", 3, 4, 5)))
    # Two concurrent cas ops from the same value cannot both win...
    assert_fails(record(put("k", 1, 0, 1), cas("k", 1, 2, True, 2, 5), cas("k", 1, 3, True, 3, 6)))
    # ...but one may win and the other see its result and lose.
    assert_ok(record(put("k", 1, 0, 1), cas("k", 1, 2, True, 2, 5), cas("k", 1, 3, False, 3, 6), get("k", 2, 7, 8)))
    # A refused cas must have seen a different value.
    assert_fails(record(put("k", 1, 0, 1), cas("k", 1, 2, False, 2, 3)))
    assert_fails(record(cas("k", NOT_FOUND, 2, False, 0, 1)))
    # A swap that the next read does not reflect.
    assert_fails(record(put("k", 1, 0, 1), cas("k", 1, 2, True, 2, 3), get("k", 1, 4, 5)))


def test_unknown_cas() -> None:
    # It may have swapped...
    assert_ok(record(put("k", 1, 0, 1), cas("k", 1, 2, None, 2, 3, status="unknown"), get("k", 2, 4, 5)))
    # ...or not...
    assert_ok(record(put("k", 1, 0, 1), cas("k", 1, 2, None, 2, 3, status="unknown"), get("k", 1, 4, 5)))
    # ...but only if the value was its expected one when it took effect.
    assert_fails(record(put("k", 5, 0, 1), cas("k", 1, 2, None, 2, 3, status="unknown"), get("k", 2, 4, 5)))
    # An unknown cas that later enables another unknown cas whose value is read.
    assert_ok(
        record(
            put("k", 1, 0, 1),
            cas("k", 1, 2, None, 2, 3, status="unknown"),
            cas("k", 2, 3, None, 4, 5, status="unknown"),
            get("k", 3, 6, 7),
        )
    )
    # A refused cas keeps the unobserved-write pruning honest: the unknown put of 7 explains the refusal.
    assert_ok(record(put("k", 1, 0, 1), put("k", 7, 2, 3, status="unknown"), cas("k", 1, 2, False, 4, 5)))


def test_each_refused_cas_may_need_its_own_unknown_write() -> None:
    # Both refused cas ops saw something other than 1, although 1 was written just before each: two unknown
    # writes (of values nobody reads) explain them, one each...
    specs = [
        put("k", 1, 0, 1),
        put("k", 7, 2, 3, status="unknown"),
        put("k", 8, 2.5, 3.5, status="unknown"),
        cas("k", 1, 2, False, 4, 5),
        put("k", 1, 6, 7),
        cas("k", 1, 3, False, 8, 9),
    ]
    assert_ok(record(*specs))
    # ...but one cannot explain both.
    assert_fails(record(*specs[:2], *specs[3:]))


def test_keys_are_independent_registers() -> None:
    assert_fails(record(put("a", 1, 0, 1), get("b", 1, 2, 3)), key="b")
    # Different keys never constrain each other's order, even across a completed write.
    assert_ok(record(put("a", 1, 0, 1), put("b", 1, 2, 3), get("a", 1, 4, 5), get("b", 1, 4.5, 6)))


def test_many_concurrent_clients() -> None:
    # Ten clients write distinct values concurrently; any one of them may be the last.
    writes = [put("k", i, i, 20 + i, client=f"c{i}") for i in range(10)]
    # (Too many orders for the brute-force cross-check in verdict(): 10! of them.)
    for final in range(10):
        assert check(record(*writes, get("k", final, 40, 41, client="r"), get("k", final, 42, 43, client="r"))).ok
    # All concurrent readers during the writes may see writes in a single consistent order.
    reads = [get("k", i, 5 + i, 15 + i, client=f"r{i}") for i in range(10)]
    assert check(record(*writes, *reads)).ok
    # Two readers after all writes completed must agree.
    result = check(record(*writes, get("k", 3, 40, 41, client="r1"), get("k", 4, 42, 43, client="r2")))
    assert result.outcome is Outcome.NOT_LINEARIZABLE
    assert {op.client_id for op in result.minimal} >= {"r1", "r2"}
    # Readers that saw 3 then 4, then another that saw 3 again: 3 cannot come back.
    result = check(
        record(
            *writes,
            get("k", 3, 30, 31, client="r1"),
            get("k", 4, 32, 33, client="r2"),
            get("k", 3, 34, 35, client="r3"),
        )
    )
    assert result.outcome is Outcome.NOT_LINEARIZABLE


def test_unhashable_values_compare_by_equality() -> None:
    assert_ok(record(put("k", {"a": [1, 2]}, 0, 1), get("k", {"a": [1, 2]}, 2, 3)))
    assert_fails(record(put("k", {"a": [1, 2]}, 0, 1), get("k", {"a": [1, 3]}, 2, 3)))
    assert_ok(record(put("k", [1], 0, 1), cas("k", [1], {"b": 2}, True, 2, 3), get("k", {"b": 2}, 4, 5)))
    # Python's == decides, also inside containers: a set equals a frozenset, 1 equals True, a list never equals a
    # tuple (clients should record values as the database returns them: CBOR gives lists back, not tuples).
    assert_ok(record(put("k", [{1}, {"x": 1}], 0, 1), get("k", [frozenset({1}), {"x": True}], 2, 3)))
    assert_fails(record(put("k", [1, {2: 3}], 0, 1), get("k", (1, {2: 3}), 2, 3)))
    assert_ok(record(put("k", (1, [2]), 0, 1), get("k", (1, [2]), 2, 3)))  # a tuple that holds a list
    assert_ok(record(put("k", bytearray(b"a"), 0, 1), get("k", b"a", 2, 3)))
    assert_fails(record(put("k", bytearray(b"a"), 0, 1), get("k", bytearray(b"b"), 2, 3)))
    # Anything else unhashable is compared with ==, one by one.
    assert_ok(record(put("k", Box(1), 0, 1), get("k", Box(1), 2, 3)))
    assert_fails(record(put("k", Box(1), 0, 1), get("k", Box(2), 2, 3)))


@attrs.define
class Box:
    """An unhashable value type (attrs.define sets __hash__ to None) with a plain == on its contents."""

    content: object


def test_keys_of_mixed_types_are_kept_apart_and_ordered_by_first_use() -> None:
    result = check(record(put(b"k", 1, 0, 1), get("k", 1, 2, 3), get(b"k", 2, 4, 5), get(("p", "k"), 9, 6, 7)))
    assert result.failed_keys == (b"k", "k", ("p", "k"))
    assert result.key == b"k"


def test_ties_between_a_return_and_an_invocation_count_as_concurrent() -> None:
    # Built by hand (a History never produces ties): put 2 returns at event 3, the get is invoked at event 3.
    def op(i: int, kind: Kind, start: int, end: int, *, value: object = None, result: object = None) -> Operation:
        return Operation(
            id=i,
            client_id="c",
            kind=kind,
            key="k",
            value=value,
            status=Status.OK,
            result=result,
            invoked_at=start,
            completed_at=end,
        )

    writes = [op(0, Kind.PUT, 0, 1, value=1), op(1, Kind.PUT, 2, 3, value=2)]
    assert check([*writes, op(2, Kind.GET, 3, 4, result=1)]).ok
    assert not check([*writes, op(2, Kind.GET, 4, 5, result=1)]).ok


def test_explanation_names_the_ops_and_the_dead_end() -> None:
    history = record(
        put("k", 1, 0, 1, client="alice"),
        put("k", 2, 2, 3, client="bob"),
        get("k", 1, 4, 5, client="carol"),
        put("x", 1, 0, 10),
    )
    result = check(history)
    text = result.explanation
    assert text.startswith("not linearizable: key 'k'")
    for needle in ["client 'alice'", "client 'bob'", "client 'carol'", "Timeline:", "minimal", "must still see"]:
        assert needle in text, text
    assert "put('x'" not in text


def test_weakened_writes_are_marked() -> None:
    # put 1 runs long, but the first read of 1 pins it before put 2; the second read of 1 then fails. The failure
    # does not need put 1's return, only its invocation: it is marked (*).
    history = record(put("k", 1, 0, 10), get("k", 1, 1, 2), put("k", 2, 3, 4), get("k", 1, 5, 6))
    result = assert_fails(history)
    assert len(result.minimal) == 4
    assert result.weakened == {0}
    assert "(*) fails even if this write's return were at +infinity" in result.explanation


def test_check_rejects_bad_input() -> None:
    history = record(put("k", 1, 0, 1))
    op = history.operations[0]
    with pytest.raises(ValueError, match="two operations have id 0"):
        check([op, op])
    with pytest.raises(TypeError, match="History or Operations"):
        check(["not an op"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="budget"):
        check(history, budget=0)
    broken = Operation(id=0, client_id="c", kind=Kind.PUT, key="k", value=1, status=Status.OK, invoked_at=3)
    with pytest.raises(ValueError, match="not after its invocation"):
        check([broken])


def test_a_failing_history_saved_as_json_replays_to_the_same_result() -> None:
    history = record(
        put("k", {"v": 1}, 0, 1, client="alice"),
        put("k", b"\x00", 2, 3, status="unknown", client="bob"),
        get("k", b"\x00", 4, 5, client="carol"),
        get("k", {"v": 1}, 6, 7, client="carol"),
    )
    saved = history.to_json()
    replayed = check(History.from_json(saved))
    assert replayed.outcome is Outcome.NOT_LINEARIZABLE
    assert replayed == check(history)  # same verdict, same minimal history, same explanation
    assert check(op for op in History.from_json(saved).operations) == replayed  # any iterable of operations
