"""SWIM messages: every message round-trips through CBOR; anything else is a RemoteProtocolError (fuzzed)."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from borough.errors import RemoteProtocolError
from borough.raft.records import NodeId
from borough.ring.messages import (
    MAX_SYNC_UPDATES,
    MAX_UPDATES,
    Ack,
    Gossip,
    Liveness,
    Nack,
    Ping,
    PingReq,
    SwimMessage,
    Sync,
    Update,
    decode_message,
    encode_message,
)

from .budget import examples

u63 = st.integers(min_value=0, max_value=2**63 - 1)
ids = st.text(min_size=1, max_size=16).map(NodeId)
updates = st.lists(
    st.builds(Update, node_id=ids, incarnation=u63, liveness=st.sampled_from(list(Liveness)), accuser=st.none() | ids),
    max_size=8,
).map(tuple)
common = {"seq": u63, "source": ids, "source_incarnation": u63, "table_version": u63, "updates": updates}
messages = st.one_of(
    st.builds(Ping, target=ids, **common),
    st.builds(Ack, **common),
    st.builds(PingReq, target=ids, target_address=st.text(min_size=1, max_size=20), **common),
    st.builds(Nack, **common),
    st.builds(Gossip, **common),
    st.builds(Sync, reply=st.booleans(), **common),
)
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=examples(100))
@given(msg=messages)
def test_every_message_round_trips_through_cbor(msg: SwimMessage) -> None:
    assert decode_message(cbor2.loads(cbor2.dumps(encode_message(msg)))) == msg


@settings(max_examples=examples(300))
@given(garbage=cbor_values)
def test_garbage_decodes_to_a_message_or_a_remote_protocol_error(garbage: object) -> None:
    try:
        decode_message(garbage)
    except RemoteProtocolError:
        pass


@settings(max_examples=examples(300))
@given(msg=messages, data=st.data())
def test_a_mutated_message_is_valid_or_a_remote_protocol_error(msg: SwimMessage, data: st.DataObject) -> None:
    wire = encode_message(msg)
    replacement = data.draw(cbor_values, label="replacement")
    if data.draw(st.booleans(), label="mutate an update") and msg.updates:
        wire[5][0][data.draw(st.integers(min_value=0, max_value=3), label="update field")] = replacement
    else:
        wire[data.draw(st.integers(min_value=0, max_value=len(wire) - 1), label="field")] = replacement
    try:
        decoded = decode_message(wire)
    except RemoteProtocolError:
        return
    assert encode_message(decoded) == wire


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        ([], "at least 6"),
        ([9, 0, "a", 0, 0, []], "unknown SWIM message kind"),
        ([2, 0, "a", 0, 0, [], "extra"], "has 6 fields"),
        ([1, 0, "a", 0, 0, []], "has 7 fields"),
        ([2, -1, "a", 0, 0, []], "seq"),
        ([2, True, "a", 0, 0, []], "seq"),
        ([2, 0, "", 0, 0, []], "source"),
        ([2, 0, "a", 0, 0, [["b", 0, 3, None]]], "liveness"),
        ([2, 0, "a", 0, 0, [["b", 0, 1]]], "update must be"),
        ([2, 0, "a", 0, 0, [["b", 0, 1, 5]]], "accuser"),
        ([2, 0, "a", 0, 0, [["b", 0, 0, None]] * (MAX_UPDATES + 1)], "at most"),
        ([3, 0, "a", 0, 0, [], "b", ""], "address"),
        ([2, 0, "a" * 300, 0, 0, []], "source"),
        ([6, 0, "a", 0, 0, [], 1], "reply"),
        ([6, 0, "a", 0, 0, [["b", 0, 0, None]] * (MAX_SYNC_UPDATES + 1), False], "at most"),
    ],
)
def test_specific_garbage_names_what_is_wrong(wire: list[object], match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_message(wire)
