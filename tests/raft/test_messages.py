"""Raft messages: every kind round-trips through its list encoding and CBOR; the decoder refuses malformed input
with ``RemoteProtocolError`` and never raises anything else (fuzzed with Hypothesis)."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from borough.errors import RemoteProtocolError
from borough.raft.confchange import ConfChange, encode_conf_change
from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    _decode_checked,
    decode_message,
    encode_message,
)
from borough.raft.records import ConfState, Entry, EntryKind, NodeId, SnapshotMeta

A, B = NodeId("a"), NodeId("b")
CONF = ConfState(voters=["a", "b", "c"])


def examples() -> list[Message]:
    return [
        VoteRequest(frm=A, to=B, term=3, last_index=10, last_term=2, pre_vote=True, transfer=False),
        VoteRequest(frm=A, to=B, term=3, last_index=0, last_term=0, transfer=True),
        VoteResponse(frm=B, to=A, term=3, pre_vote=True, reject=True),
        AppendRequest(frm=A, to=B, term=5, prev_index=7, prev_term=4, commit=6),
        AppendRequest(
            frm=A,
            to=B,
            term=5,
            prev_index=7,
            prev_term=4,
            commit=6,
            entries=[
                Entry(term=4, index=8, data=b"x"),
                Entry(term=5, index=9, kind=EntryKind.CONF_CHANGE, data=encode_conf_change(ConfChange(), CONF)),
            ],
        ),
        AppendResponse(frm=B, to=A, term=5, index=9),
        AppendResponse(frm=B, to=A, term=5, index=7, reject=True, hint_index=3, hint_term=2),
        Heartbeat(frm=A, to=B, term=5, commit=6, seq=12),
        Heartbeat(frm=A, to=B, term=5, commit=6, seq=12, quiesce=True),
        HeartbeatResponse(frm=B, to=A, term=5, seq=12),
        InstallSnapshot(frm=A, to=B, term=5, meta=SnapshotMeta(index=9, term=5, conf_state=CONF)),
        InstallSnapshot(
            frm=A,
            to=B,
            term=5,
            meta=SnapshotMeta(
                index=9,
                term=5,
                conf_state=ConfState(
                    voters=["a", "d"], learners=["e"], voters_outgoing=["a", "b"], learners_next=["b"], auto_leave=True
                ),
            ),
        ),
        TimeoutNow(frm=A, to=B, term=5),
        ReadIndexRequest(frm=B, to=A, term=5, context=b"ctx"),
        ReadIndexResponse(frm=A, to=B, term=5, index=9, context=b"ctx"),
        ReadIndexResponse(frm=A, to=B, term=5, context=b"ctx", reject=True),
    ]


@pytest.mark.parametrize("msg", examples(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_cbor(msg: Message) -> None:
    wire = cbor2.dumps(encode_message(msg))
    back = decode_message(cbor2.loads(wire))
    assert back == msg
    assert type(back) is type(msg)


def test_the_encoding_is_compact() -> None:
    hb = encode_message(Heartbeat(frm=A, to=B, term=5, commit=6, seq=12))
    assert hb == [5, "a", "b", 5, 6, 12, False]  # no field names on the wire
    assert len(cbor2.dumps(hb)) <= 10


@pytest.mark.parametrize(
    ("obj", "complaint"),
    [
        ({}, "expected a non-empty list"),
        ([], "expected a non-empty list"),
        ([99, "a", "b", 1], "unknown message type"),
        (["3", "a", "b", 1], "unknown message type"),
        ([5, "a", "b", 1, 2], "must have 6 fields"),
        ([5, "a", "b", True, 2, 3, False], "term must be an integer"),
        ([5, "a", "b", -1, 2, 3, False], "term must be between"),
        ([5, "a", "b", 2**64, 2, 3, False], "term must be between"),
        ([5, "", "b", 1, 2, 3, False], "frm must be a non-empty node id"),
        ([5, "a", "a", 1, 2, 3, False], "addressed to its own sender"),
        ([5, "a", 7, 1, 2, 3, False], "to must be a non-empty node id"),
        ([5, "a", "b", 1, 2, 3, 1], "quiesce must be a boolean"),
        ([1, "a", "b", 1, 2, 3, 1, False], "pre_vote must be a boolean"),
        ([3, "a", "b", 2, 1, 3, 0, [[1, 0, b""]]], "prev_term 3 is greater than the message term 2"),
        ([3, "a", "b", 2, 1, 1, 0, [[3, 0, b""]]], "outside"),
        ([3, "a", "b", 2, 1, 2, 0, [[1, 0, b""]]], "outside"),
        ([3, "a", "b", 2, 1, 1, 0, [[1, 2, b""]]], "kind must be 0"),
        ([3, "a", "b", 2, 1, 1, 0, [[1, 0, "text"]]], "data must be a byte string"),
        ([3, "a", "b", 2, 1, 1, 0, [[1, 0]]], "must have 3 items"),
        ([3, "a", "b", 2, 1, 1, 0, "nope"], "entries must be a list"),
        ([3, "a", "b", 2, 1, 1, 0, [[1, 1, b"garbage"]]], "conf change"),
        ([7, "a", "b", 2, [1, 1, [["a"], ["a"], [], [], False]]], "both voter and learner"),
        ([7, "a", "b", 2, [1, 1, [["a", "a"], [], [], [], False]]], "lists a node twice"),
        ([7, "a", "b", 2, [1, 1, [["a"], [], [], [], 0]]], "auto_leave must be a boolean"),
        ([9, "a", "b", 2, "ctx"], "context must be a byte string"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(obj: Any, complaint: str) -> None:
    with pytest.raises(RemoteProtocolError, match=complaint):
        decode_message(obj)


# Anything a CBOR decoder can produce, and near-misses of valid encodings.
cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=9) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=40,
)


@given(cbor_values)
def test_decoding_arbitrary_values_raises_only_remote_protocol_error(obj: Any) -> None:
    try:
        decode_message(obj)
    except RemoteProtocolError:
        pass


def _draw_path(tree: Any, data: st.DataObject) -> list[int]:
    """The path (list indexes from the root) to a node of an encoded message, drawn at any depth."""
    path: list[int] = []
    node = tree
    while isinstance(node, list) and node:
        i = data.draw(st.integers(0, len(node) - 1))
        path.append(i)
        if not data.draw(st.booleans()):
            break
        node = node[i]
    return path


def _parent(tree: Any, path: list[int]) -> Any:
    """The list holding the node at the non-empty ``path``."""
    for i in path[:-1]:
        tree = tree[i]
    return tree


@given(st.sampled_from(examples()), st.data())
def test_decoding_mutated_messages_raises_only_remote_protocol_error(msg: Message, data: st.DataObject) -> None:
    encoded: Any = encode_message(msg)
    # Replace one node of the encoded tree (at any depth) by an arbitrary value.
    path = _draw_path(encoded, data)
    replacement = data.draw(cbor_values)
    if path:
        _parent(encoded, path)[path[-1]] = replacement
    try:
        decoded = decode_message(encoded)
    except RemoteProtocolError:
        return
    # Whatever decodes must round-trip: the decoder accepted only well-formed content.
    assert decode_message(encode_message(decoded)) == decoded


@given(st.binary(max_size=64))
def test_decoding_garbage_cbor_raises_only_remote_protocol_error(raw: bytes) -> None:
    try:
        obj = cbor2.loads(raw)
    except Exception:
        return  # not CBOR at all: the wire layer's concern
    try:
        decode_message(obj)
    except RemoteProtocolError:
        pass


# --- the fast path agrees with the checked decoders ----------------------------------------------------------------


def _verdict(decode: Any, obj: Any) -> Any:
    try:
        msg = decode(obj)
    except RemoteProtocolError:
        return "refused"
    return (type(msg), msg)


def _agree(obj: Any) -> None:
    assert _verdict(decode_message, obj) == _verdict(_decode_checked, obj)


@given(st.sampled_from(examples()), st.data())
def test_the_fast_path_agrees_with_the_checked_decoders_on_mutated_messages(msg: Message, data: st.DataObject) -> None:
    encoded: Any = encode_message(msg)
    # Replace one or two nodes of the encoded tree by an arbitrary value or a near-miss of the original.
    for _ in range(data.draw(st.integers(1, 2))):
        path = _draw_path(encoded, data)
        if not path:
            break
        target = _parent(encoded, path)
        old = target[path[-1]]
        near: list[Any] = [cbor_values]
        if type(old) is int:
            near.append(st.sampled_from([old - 1, old + 1, -1, 0, 2**63 - 1, 2**63, True, False, float(old)]))
        if type(old) is str:
            near.append(st.sampled_from(["", "a", "b", "x" * 256, "x" * 257, old.encode()]))
        if type(old) is bytes:
            near.append(st.sampled_from([b"", old.decode("latin-1"), bytearray(old)]))
        if type(old) is list:
            near.append(st.sampled_from([old[:-1], [*old, 0], tuple(old), []]))
        target[path[-1]] = data.draw(st.one_of(near))
    _agree(encoded)


@given(cbor_values)
def test_the_fast_path_agrees_with_the_checked_decoders_on_arbitrary_values(obj: Any) -> None:
    _agree(obj)


@pytest.mark.parametrize(
    "obj",
    [
        [3, "a", "b", 5, 7, 4, 6, [[4, 0, b"x"], [3, 0, b"y"]]],  # a term going down
        [3, "a", "b", 5, 7, 4, 6, [[6, 0, b"x"]]],  # past the message's term
        [3, "a", "b", 5, 7, 4, 6, [[0, 0, b"x"]]],  # term 0
        [3, "a", "b", 5, 0, 0, 6, [[0, 0, b"x"]]],  # term 0 after an empty log
        [3, "a", "b", 5, 7, 4, 6, [[5, True, b"x"]]],  # kind true
        [3, "a", "b", 5, 7, 4, 6, [[5, 1, b"x"]]],  # a conf change (checked path)
        [3, "a", "b", 5, 7, 4, 6, [(5, 0, b"x")]],  # an entry as a tuple (the checked path takes it)
        [3, "a", "b", 5, 2**63 - 1, 4, 6, [[5, 0, b"x"]]],  # indexes overflow
        [3, "a", "b", 5, 2**63 - 2, 4, 6, [[5, 0, b"x"]]],
        [3, "a", "b", 5, 7, 6, 6, []],  # prev_term over term
        [3, "a", "a", 5, 7, 4, 6, []],  # to itself
        [3, "a" * 256, "b", 5, 7, 4, 6, []],
        [3, "a" * 257, "b", 5, 7, 4, 6, []],
        (3, "a", "b", 5, 7, 4, 6, []),  # a tuple (the checked path takes it)
        [4, "b", "a", 5, 9, False, 0, 2**63],
        [5, "a", "b", 5, 6, 12, 0],
        [6, "b", "a", 5, -1],
        [9, "b", "a", 5, bytearray(b"c")],
        [10, "a", "b", 5, 9, b"c", None],
    ],
)
def test_the_fast_path_agrees_with_the_checked_decoders_at_the_edges(obj: Any) -> None:
    _agree(obj)
