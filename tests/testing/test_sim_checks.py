"""The post-healing checks on their own: lost acknowledged writes and diverging replicas."""

from __future__ import annotations

from borough.testing import NOT_FOUND, History
from borough.testing.checks import divergent_replicas, lost_writes


def _history() -> History:
    h = History()
    a = h.invoke(1, "put", "k", 1)
    h.ok(a)
    b = h.invoke(2, "put", "k", 2)
    h.ok(b)
    return h


def test_a_final_value_from_the_last_acknowledged_write_loses_nothing() -> None:
    assert lost_writes(_history(), {"k": 2}) == []


def test_a_final_value_older_than_an_acknowledged_write_is_a_lost_write() -> None:
    problems = lost_writes(_history(), {"k": 1})
    assert len(problems) == 1 and "acknowledged write lost" in problems[0] and "put('k', 2)" in problems[0]


def test_an_absent_key_after_an_acknowledged_put_is_a_lost_write_unless_a_delete_may_explain_it() -> None:
    h = _history()
    assert len(lost_writes(h, {"k": NOT_FOUND})) == 2
    d = h.invoke(3, "delete", "k")
    h.unknown(d, "timed out")
    assert lost_writes(h, {"k": NOT_FOUND}) == []


def test_concurrent_writes_may_end_in_either_order() -> None:
    h = History()
    a = h.invoke(1, "put", "k", 1)
    b = h.invoke(2, "put", "k", 2)
    h.ok(a)
    h.ok(b)
    assert lost_writes(h, {"k": 1}) == []
    assert lost_writes(h, {"k": 2}) == []


def test_a_value_nobody_wrote_is_reported_and_a_failed_cas_wrote_nothing() -> None:
    h = History()
    c = h.invoke(1, "cas", "k", 5, expected=NOT_FOUND)
    h.ok(c, False)
    problems = lost_writes(h, {"k": 5})
    assert len(problems) == 1 and "no write" in problems[0]


def test_an_unknown_write_may_be_the_final_value() -> None:
    h = _history()
    late = h.invoke(3, "put", "k", 3)
    h.unknown(late, "connection lost")
    assert lost_writes(h, {"k": 3}) == []


def test_replicas_with_equal_items_agree_and_a_difference_names_the_keys() -> None:
    same = [("a", b"1"), ("b", b"2")]
    assert divergent_replicas({0: (5, same), 1: (5, list(same)), 2: (5, list(same))}, "p") == []
    assert divergent_replicas({0: (5, same)}, "p") == []
    problems = divergent_replicas({0: (5, same), 1: (5, [("a", b"1"), ("b", b"3"), ("c", b"4")])}, "p")
    assert len(problems) == 1 and "node 1" in problems[0] and "['b', 'c']" in problems[0]
