"""The History recorder: event ordering, outcomes, validation, descriptions and the JSON form."""

from __future__ import annotations

import copy
import decimal
import json
import math
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from borough.errors import NotLeader
from borough.testing.history import NOT_FOUND, History, Kind, Operation, Status, timeline


def test_invoke_and_complete_advance_one_event_counter() -> None:
    history = History()
    a = history.invoke("c1", "put", "k", 1, time=0.5)
    b = history.invoke("c2", Kind.GET, "k")
    assert (a.id, a.invoked_at, b.id, b.invoked_at) == (0, 0, 1, 1)
    assert a.status is Status.PENDING and a.completed_at is None and a.returns_by is None
    done_b = history.ok(b, NOT_FOUND, time=1.5)
    done_a = history.ok(a)
    assert (done_b.completed_at, done_a.completed_at) == (2, 3)
    assert done_b.result is NOT_FOUND and done_b.complete_time == 1.5
    assert done_a.returns_by == 3 and done_a.invoke_time == 0.5
    # The records are immutable: the history holds the new ones, the caller's old ones are unchanged.
    assert a.status is Status.PENDING
    assert history.operations == (done_a, done_b)
    assert list(history) == [done_a, done_b]
    assert len(history) == 2 and history.next_event == 4 and history.pending() == []


def test_fail_and_unknown() -> None:
    history = History()
    failed = history.fail(history.invoke("c", "put", "k", 1), NotLeader("p", leader="n2"))
    assert failed.status is Status.FAILED
    assert failed.error is not None and failed.error.startswith("NotLeader: ") and "n2" in failed.error
    lost = history.unknown(history.invoke("c", "delete", "k"), TimeoutError())
    assert lost.status is Status.UNKNOWN and lost.error == "TimeoutError"
    assert lost.returns_by is None  # +infinity for the checker, although the client gave up at an event
    assert lost.completed_at == 3
    pending = history.invoke("c", "get", "k")
    assert history.pending() == [pending]


def test_cas_records_expected_and_a_boolean_result() -> None:
    history = History()
    op = history.invoke("c", "cas", "k", 2, expected=NOT_FOUND)
    assert op.expected is NOT_FOUND and op.value == 2
    with pytest.raises(TypeError, match="True .swapped. or False"):
        history.ok(op, "yes")
    assert history.ok(op, True).result is True


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda h: h.invoke("c", "scan", "k"), ValueError, "unknown operation kind 'scan'"),
        (lambda h: h.invoke("c", "put", "k"), ValueError, "needs a value"),
        (lambda h: h.invoke("c", "put", "k", NOT_FOUND), ValueError, "record a delete instead"),
        (lambda h: h.invoke("c", "get", "k", 1), ValueError, "takes no value"),
        (lambda h: h.invoke("c", "delete", "k", 1), ValueError, "takes no value"),
        (lambda h: h.invoke("c", "cas", "k", 1), ValueError, "needs expected="),
        (lambda h: h.invoke("c", "put", "k", 1, expected=0), ValueError, "only cas takes expected="),
        (lambda h: h.invoke("c", "put", ["k"], 1), TypeError, "keys must be hashable"),
        (lambda h: h.invoke("c", "put", None, 1), ValueError, "cannot be a key"),
        (lambda h: h.invoke("c", "get", NOT_FOUND), ValueError, "cannot be a key"),
    ],
)
def test_bad_invocations_are_refused_and_record_nothing(call, error, match) -> None:  # type: ignore[no-untyped-def]
    history = History()
    with pytest.raises(error, match=match):
        call(history)
    assert len(history) == 0 and history.next_event == 0


def test_bad_completions_are_refused() -> None:
    history = History()
    get_op = history.invoke("c", "get", "k")
    with pytest.raises(ValueError, match="needs the value read"):
        history.ok(get_op)
    put_op = history.invoke("c", "put", "k", 1)
    with pytest.raises(ValueError, match="takes no result"):
        history.ok(put_op, 1)
    history.ok(put_op, None)
    with pytest.raises(ValueError, match="already has an outcome"):
        history.fail(put_op)
    with pytest.raises(ValueError, match="not invoked on this history"):
        History().ok(get_op, 1)
    with pytest.raises(TypeError, match="Operation returned by invoke"):
        history.ok("op", 1)  # type: ignore[arg-type]
    assert history.next_event == 3  # two invocations, one completion


def test_not_found_is_one_object_through_copy_and_pickle() -> None:
    assert copy.deepcopy(NOT_FOUND) is NOT_FOUND
    assert pickle.loads(pickle.dumps(NOT_FOUND)) is NOT_FOUND
    assert repr(NOT_FOUND) == "NOT_FOUND"
    assert NOT_FOUND != None  # noqa: E711 - it is not None, a value a key may hold


def test_describe() -> None:
    history = History()
    history.ok(history.invoke("alice", "put", "k", "x" * 100, time=1.0), time=2.0)
    history.ok(history.invoke("bob", "get", "k"), NOT_FOUND)
    history.ok(history.invoke("bob", "cas", "k", 2, expected=1), False)
    history.unknown(history.invoke("carol", "delete", "k"), "connection lost")
    history.invoke("dave", "get", b"k")
    text = history.describe()
    lines = text.splitlines()
    assert lines[0] == "history of 5 operations (1 pending, 3 ok, 1 unknown), 9 events"
    assert lines[1].startswith("  #0 client 'alice': put('k', 'xxxx") and "..." in lines[1]
    assert lines[1].endswith("ok [0, 1] t=1..2")
    assert lines[2] == "  #1 client 'bob': get('k') -> NOT_FOUND [2, 3]"
    assert lines[3] == "  #2 client 'bob': cas('k', 1 -> 2) -> False [4, 5]"
    assert lines[4] == "  #3 client 'carol': delete('k') unknown: connection lost [6, +inf) (gave up at 7)"
    assert lines[5] == "  #4 client 'dave': get(b'k') pending [8, +inf)"


def test_timeline_draws_intervals_on_a_shared_axis() -> None:
    history = History()
    a = history.invoke("c", "put", "k", 1)
    b = history.invoke("c", "get", "k")
    history.ok(a)
    c = history.invoke("c", "put", "k", 2)
    history.ok(b, 1)
    history.fail(c, "refused")
    d = history.invoke("c", "delete", "k")
    history.unknown(d)
    drawing = timeline(history.operations, marks={0: "(*)"}).splitlines()
    assert len(drawing) == 4
    bars = [line[line.index("|") if "|" in line else line.index("x") :] for line in drawing]
    assert bars[0] == "|-----|  (*)"
    assert bars[1] == "|--------|"
    assert bars[2] == "x-----x"
    assert bars[3].startswith("|") and bars[3].endswith("->")
    # Columns line up: each bar starts where its invocation falls on the shared axis.
    assert [line.index(bar) for line, bar in zip(drawing, bars, strict=True)] == sorted(
        line.index(bar) for line, bar in zip(drawing, bars, strict=True)
    )
    assert timeline([]) == ""


# --- JSON ------------------------------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.just(NOT_FOUND)
)
_hashables = st.recursive(
    _scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=4
)
_values = st.recursive(
    _hashables,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3) | st.just("$"), inner, max_size=3)
        | st.dictionaries(_hashables, inner, max_size=3)
        | st.sets(_hashables, max_size=3)
    ),
    max_leaves=8,
)


@given(_values)
def test_json_keeps_values_and_their_types(value: object) -> None:
    history = History()
    op = history.invoke("c", "get", "k")
    history.ok(op, value)
    copy_ = History.from_json(history.to_json())
    result = copy_.operations[0].result
    assert result == value
    assert _types(result) == _types(value)


def _types(value: object) -> object:
    """A structure of type names, so 1 vs True vs 1.0 and list vs tuple differences are caught."""
    if isinstance(value, dict):
        return ("dict", sorted((repr(_types(k)), repr(_types(v))) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_types(item) for item in value])
    if isinstance(value, set | frozenset):
        return (type(value).__name__, sorted(repr(_types(item)) for item in value))
    return type(value).__name__


def test_json_round_trip_of_a_whole_history() -> None:
    history = History()
    history.ok(history.invoke(("node", 1), "put", b"\x00k", {"a": (1, 2.5)}, time=0.25), time=0.5)
    history.ok(history.invoke(7, "cas", "k", [1, {2: 3}], expected=NOT_FOUND), True)
    history.fail(history.invoke("c", "delete", "k"), "NotLeader: ask n2")
    history.unknown(history.invoke("c", "put", "k", math.inf))
    history.ok(history.invoke("c", "get", "k"), decimal.Decimal("1.5"))  # no JSON form: stored as tagged CBOR
    history.invoke("c", "get", "k")
    text = history.to_json(indent=1)
    assert json.loads(text)["format"] == "borough.history"
    copy_ = History.from_json(text)
    assert copy_.operations == history.operations
    assert copy_.next_event == history.next_event
    # A restored history keeps recording where the original left off.
    late = copy_.invoke("c", "get", "k")
    assert (late.id, late.invoked_at) == (6, history.next_event)


def test_values_neither_json_nor_cbor_can_hold_are_refused() -> None:
    history = History()
    history.invoke("c", "put", "k", object())
    with pytest.raises(TypeError, match="cannot save"):
        history.to_json()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "invalid JSON"),
        ("[]", "format 'borough.history'"),
        ('{"format": "borough.history", "version": 99}', "version 99"),
        ('{"format": "borough.history", "version": 1}', "malformed"),
        (
            '{"format": "borough.history", "version": 1, "next_event": 1, "operations": [{"id": 3}]}',
            "malformed",
        ),
        (
            '{"format": "borough.history", "version": 1, "next_event": 1, "operations": [{"id": 0, "client": "c",'
            ' "kind": "get", "key": "k", "status": "ok", "invoked_at": 0, "completed_at": 1, "result": 1}]}',
            "next_event 1 is not after event 1",
        ),
        (
            '{"format": "borough.history", "version": 1, "next_event": 5, "operations": [{"id": 0, "client": "c",'
            ' "kind": "get", "key": "k", "status": "ok", "invoked_at": 2, "completed_at": 1, "result": 1}]}',
            "completes at event 1, not after 2",
        ),
        (
            '{"format": "borough.history", "version": 1, "next_event": 5, "operations": [{"id": 0, "client": "c",'
            ' "kind": "get", "key": "k", "status": "ok", "invoked_at": 0, "completed_at": 1}]}',
            "ok get #0 has no result",
        ),
        (
            '{"format": "borough.history", "version": 1, "next_event": 5, "operations": [{"id": 0, "client": "c",'
            ' "kind": "get", "key": "k", "status": "pending", "invoked_at": 0, "completed_at": 1}]}',
            "is pending but completed_at is 1",
        ),
    ],
)
def test_from_json_says_what_is_wrong(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        History.from_json(text)


def test_operation_fields_are_keyword_only_and_frozen() -> None:
    op = Operation(id=0, client_id="c", kind=Kind.GET, key="k", invoked_at=0)
    with pytest.raises(AttributeError):
        op.status = Status.OK  # type: ignore[misc]
    assert not op.is_write
    assert Operation(id=0, client_id="c", kind=Kind.DELETE, key="k", invoked_at=0).is_write
