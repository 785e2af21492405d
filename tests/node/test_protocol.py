"""The call protocol alone (borough.node.protocol and the records it carries, borough.node.records): op records
and their flags, the call envelope (encode_call/decode_call) and what it refuses, the key/value validators, write
ops, and the decoding of every op's reply."""

from __future__ import annotations

import re
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from borough.cbor_safe import safe_loads
from borough.errors import RemoteProtocolError
from borough.kv import encode_value
from borough.node import records
from borough.node.protocol import (
    MAX_PAGE_ITEMS,
    OPS,
    Call,
    Export,
    FindLeader,
    Get,
    Hosted,
    Info,
    Join,
    ListPartitions,
    Locate,
    Members,
    Op,
    Scan,
    SendSnapshot,
    SetState,
    Write,
    decode_call,
    encode_call,
)
from borough.node.records import (
    Delete,
    DirectoryRecord,
    Hosting,
    JoinResult,
    Limits,
    PartitionInfo,
    Put,
    ReplicaInfo,
    ScanPage,
    ScanRange,
    check_key,
    check_value,
)
from borough.node.session_table import SessionRef
from borough.ring.members import Member, MemberState, MemberTable

LIMITS = Limits()


@st.composite
def _mangled(draw: st.DrawFn, encoded: bytes) -> bytes:
    """``encoded`` cut short, lengthened, or with one byte changed."""
    how = draw(st.sampled_from(["cut", "extend", "flip"]))
    if how == "cut" and len(encoded) > 1:
        return encoded[: draw(st.integers(1, len(encoded) - 1))]
    if how == "extend":
        return encoded + draw(st.binary(min_size=1, max_size=4))
    i = draw(st.integers(0, len(encoded) - 1))
    return encoded[:i] + bytes([draw(st.integers(0, 255))]) + encoded[i + 1 :]


ONE = encode_value(1)

# One instance of every op, with arguments that exercise each field.
SAMPLES: list[Op] = [
    Get("k"),
    Get(b"\x00k", "stale"),
    Write((Put("a", ONE), Delete(b"b"), Put(b"c", encode_value({"x": [1, 2]})))),
    Write((Delete("k"),), SessionRef(b"\x01" * 16, 7, 3)),
    Scan(ScanRange(), 1),
    Scan(ScanRange(gt="a", lte=b"z", reverse=True, values=False), 500, "stale"),
    Info(),
    FindLeader(),
    Call({"hello": [1, b"2", None]}),
    Join("n1", "host:7000"),
    Locate("orders", True),
    Locate("orders", False),
    Members(),
    SetState("n2", MemberState.LEAVING),
    SetState("n2", MemberState.DEAD),
    ListPartitions(),
    ListPartitions("orders", 10),
    Hosted(),
    SendSnapshot([3, 7, b"meta"]),
]


def body(name: str, args: list[Any], partition: object = "p", left: object = None) -> list[Any]:
    return [name, partition, args, left]


def refused(call_body: object, limits: Limits = LIMITS) -> str:
    """The message of the RemoteProtocolError decode_call raises for ``call_body``."""
    with pytest.raises(RemoteProtocolError) as info:
        decode_call(call_body, limits)
    message = str(info.value)
    assert message.startswith("malformed call: ")
    return message


# --- ops, flags, the envelope -----------------------------------------------------------------------------------


@pytest.mark.parametrize("op", SAMPLES, ids=repr)
@pytest.mark.parametrize("left", [None, 0.0, 2.5])
def test_every_op_survives_the_envelope(op: Op, left: float | None) -> None:
    partition, decoded, decoded_left = decode_call(encode_call("part-1", op, left), LIMITS)
    assert (partition, decoded, decoded_left) == ("part-1", op, left)
    assert type(decoded) is type(op)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("sys.state", ["n2", int(MemberState.ACTIVE)]),  # only LEAVING or DEAD: joining is sys.join's
        ("sys.state", ["n2", 9]),
        ("sys.state", ["", int(MemberState.DEAD)]),
        ("sys.partitions", [7, 10]),
        ("sys.partitions", [None, 0]),
        ("sys.partitions", [None]),
    ],
)
def test_decommission_and_listing_ops_refuse_bad_arguments(name: str, args: list[Any]) -> None:
    assert name in refused(body(name, args, partition="_system"))


def test_an_integer_seconds_left_arrives_as_a_float() -> None:
    _, _, left = decode_call(body("info", [], left=3), LIMITS)
    assert left == 3.0 and type(left) is float


def test_a_calls_streams_do_not_travel_in_the_body() -> None:
    op = Call("b", streams={"data": object()})
    wire = encode_call("p", op, None)
    assert wire == ["request", "p", ["b"], None]
    _, decoded, _ = decode_call(wire, LIMITS)
    assert isinstance(decoded, Call) and decoded.streams is None


@pytest.mark.parametrize(
    ("cls", "repeatable", "creates", "system"),
    [
        (Get, True, False, False),
        (Scan, True, False, False),
        (Info, True, True, False),
        (FindLeader, True, True, False),
        (Write, False, True, False),
        (Call, False, True, False),
        (SendSnapshot, False, False, False),
        (Join, True, False, True),
        (Locate, True, False, True),
        (Members, True, False, True),
        (SetState, True, False, True),
        (ListPartitions, True, False, True),
        (Hosted, True, False, False),
        (Export, True, False, False),
    ],
)
def test_op_flags(cls: type[Op], repeatable: bool, creates: bool, system: bool) -> None:
    assert (cls.repeatable, cls.creates, cls.system) == (repeatable, creates, system)
    assert OPS[cls.name] is cls


def test_the_op_table_is_complete_and_names_are_unique() -> None:
    assert set(OPS) == {
        "get", "write", "scan", "info", "leader", "request", "sys.join", "sys.dir", "sys.members", "sys.state",
        "sys.partitions", "node.hosted", "snap", "export",
    }  # fmt: skip
    assert {name for name, cls in OPS.items() if cls.system} == {
        "sys.join", "sys.dir", "sys.members", "sys.state", "sys.partitions"
    }  # fmt: skip


def test_an_op_must_say_whether_it_is_repeatable() -> None:
    with pytest.raises(TypeError, match="must say name= and repeatable="):

        class Forgetful(Op, name="forgetful"):
            pass

    with pytest.raises(TypeError, match="must say name= and repeatable="):

        class Nameless(Op, repeatable=True):
            pass

    with pytest.raises(TypeError, match="must say name= and repeatable="):

        class MyGet(Get):  # a subclass does not inherit "safe to repeat" silently
            pass


# --- what decode_call refuses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call_body", "what"),
    [
        ("info", "expected \\[op, partition, args, seconds_left\\]"),
        (None, "expected \\[op, partition, args, seconds_left\\]"),
        ({"op": "info"}, "expected \\[op, partition, args, seconds_left\\]"),
        (("info", "p", [], None), "expected \\[op, partition, args, seconds_left\\]"),
        (["info", "p", []], "expected \\[op, partition, args, seconds_left\\]"),
        (["info", "p", [], None, None], "expected \\[op, partition, args, seconds_left\\]"),
        ([], "expected \\[op, partition, args, seconds_left\\]"),
        (["nope", "p", [], None], "unknown operation 'nope'"),
        ([7, "p", [], None], "op and partition must be strings"),
        (body("info", [], partition=5), "op and partition must be strings"),
        (body("info", [], partition=b"p"), "op and partition must be strings"),
        (body("info", [], partition=None), "op and partition must be strings"),
        (body("info", [], partition=""), "op and partition must be strings"),
        (["info", "p", None, None], "args a list"),
        (["info", "p", {}, None], "args a list"),
        (body("info", [], left=-0.5), "seconds_left must be a non-negative number or null"),
        (body("info", [], left=-1), "seconds_left must be a non-negative number or null"),
        (body("info", [], left="1"), "seconds_left must be a non-negative number or null"),
        (body("info", [], left=[1]), "seconds_left must be a non-negative number or null"),
        (body("info", [], left=float("nan")), "seconds_left must be a non-negative number or null"),
        (body("info", [], left=True), "seconds_left must be a non-negative number or null"),
        (body("info", [], left=False), "seconds_left must be a non-negative number or null"),
    ],
)
def test_decode_call_refuses_a_bad_envelope(call_body: object, what: str) -> None:
    assert re.search(what, refused(call_body))


@pytest.mark.parametrize(
    ("name", "args", "what"),
    [
        ("get", [], "get takes \\[key"),
        ("get", ["k"], "get takes \\[key"),
        ("get", ["k", "stale", 1], "get takes \\[key"),
        ("write", [], "write takes \\[ops\\]"),
        ("write", [[["del", "k"]], [], []], "write takes \\[ops\\]"),
        ("scan", [[None] * 4 + [False, True], 1], "scan takes \\[range, limit, consistency\\]"),
        ("scan", [], "scan takes \\[range, limit, consistency\\]"),
        ("info", [1], "info takes no arguments"),
        ("leader", ["x"], "leader takes no arguments"),
        ("sys.members", [None], "sys.members takes no arguments"),
        ("request", [], "request takes \\[body\\]"),
        ("request", [1, 2, 3], "request takes \\[body\\]"),
        ("request", [1, 2], "session"),
        ("sys.join", ["n1"], "sys.join takes \\[node_id, address\\]"),
        ("sys.join", ["n1", "a:1", "x"], "sys.join takes \\[node_id, address\\]"),
        ("sys.dir", ["p"], "sys.dir takes \\[partition, create\\]"),
        ("snap", [], "snap takes \\[install_snapshot_message, to_incarnation, from_incarnation\\]"),
        ("snap", [1, 2], "snap takes \\[install_snapshot_message, to_incarnation, from_incarnation\\]"),
    ],
)
def test_decode_call_refuses_a_wrong_argument_count(name: str, args: list[Any], what: str) -> None:
    assert re.search(what, refused(body(name, args)))


FULL_RANGE = [None, None, None, None, False, True]


@pytest.mark.parametrize(
    ("name", "args", "what"),
    [
        # consistency
        ("get", ["k", "strong"], "consistency must be 'linearizable' or 'stale', not 'strong'"),
        ("get", ["k", None], "consistency must be 'linearizable' or 'stale', not None"),
        ("get", ["k", 1], "consistency must be 'linearizable' or 'stale', not 1"),
        ("scan", [FULL_RANGE, 5, "STALE"], "consistency must be 'linearizable' or 'stale'"),
        # keys
        ("get", [5, "stale"], "a key must be str or bytes, not int"),
        ("get", ["", "stale"], "a key must not be empty"),
        ("get", [b"", "stale"], "a key must not be empty"),
        ("get", ["\ud800", "stale"], "not valid Unicode text"),
        # scan limits and ranges; a bool is not a number and an int is not a bool
        ("scan", [FULL_RANGE, 0, "stale"], "a scan's limit is a positive integer"),
        ("scan", [FULL_RANGE, -3, "stale"], "a scan's limit is a positive integer"),
        ("scan", [FULL_RANGE, 2.0, "stale"], "a scan's limit is a positive integer"),
        ("scan", [FULL_RANGE, "10", "stale"], "a scan's limit is a positive integer"),
        ("scan", [FULL_RANGE, True, "stale"], "a scan's limit is a positive integer"),
        ("scan", [None, 5, "stale"], "a scan range is \\[gt, gte, lt, lte, reverse, values\\]"),
        ("scan", [FULL_RANGE[:5], 5, "stale"], "a scan range is \\[gt, gte, lt, lte, reverse, values\\]"),
        ("scan", [[1, None, None, None, False, True], 5, "stale"], "an iteration bound must be str or bytes"),
        ("scan", [[None, None, None, None, 0, True], 5, "stale"], "reverse and values are bools"),
        ("scan", [[None, None, None, None, False, 1], 5, "stale"], "reverse and values are bools"),
        # system ops
        ("sys.dir", ["p", 1], "sys.dir takes \\[partition, create\\]"),
        ("sys.dir", ["", True], "sys.dir takes \\[partition, create\\]"),
        ("sys.dir", [7, True], "sys.dir takes \\[partition, create\\]"),
        ("sys.join", ["", "a:1"], "non-empty strings"),
        ("sys.join", ["n1", 7000], "non-empty strings"),
        # writes
        ("write", [[]], "a write needs a non-empty list of ops"),
        ("write", [{"put": "k"}], "a write needs a non-empty list of ops"),
        ("write", [[["put", "k"]]], "an op must be \\['put', key, value\\] or \\['del', key\\]"),
        ("write", [[["del", "k", ONE]]], "an op must be \\['put', key, value\\] or \\['del', key\\]"),
        ("write", [[["upsert", "k", ONE]]], "an op must be \\['put', key, value\\] or \\['del', key\\]"),
        ("write", [["del"]], "an op must be"),
        ("write", [[["put", "k", "one"]]], "a put's value must be CBOR-encoded bytes"),
        ("write", [[["put", "k", b""]]], "a put's value must be CBOR-encoded bytes"),
        ("write", [[["del", ""]]], "a key must not be empty"),
        ("write", [[["del", "k"]], []], "a write's session is \\[session_id, seq, low\\]"),
        ("write", [[["del", "k"]], [b"short", 1, 1]], "a session id is 16 bytes"),
        ("write", [[["del", "k"]], ["s" * 16, 1, 1]], "a session id is 16 bytes"),
        ("write", [[["del", "k"]], [b"s" * 16, 0, 0]], "integers in \\[1, 2\\*\\*63\\)"),
        ("write", [[["del", "k"]], [b"s" * 16, 1 << 63, 1]], "integers in \\[1, 2\\*\\*63\\)"),
        ("write", [[["del", "k"]], [b"s" * 16, True, 1]], "integers in"),
        ("write", [[["del", "k"]], [b"s" * 16, 2, 3]], "above its own seq"),
    ],
)
def test_decode_call_refuses_bad_arguments(name: str, args: list[Any], what: str) -> None:
    assert re.search(what, refused(body(name, args)))


def test_decode_call_applies_the_limits() -> None:
    small = Limits(max_key_bytes=4, max_value_bytes=3)
    assert "key of 5 bytes exceeds max_key_bytes=4" in refused(body("get", ["abcde", "stale"]), small)
    assert "exceeds max_key_bytes=4" in refused(body("write", [[["del", b"12345"]]]), small)
    assert "value of 4 encoded bytes exceeds max_value_bytes=3" in refused(
        body("write", [[["put", "k", b"\x64abc"]]]), small
    )
    _, op, _ = decode_call(body("write", [[["put", "abcd", b"\x62ab"]]]), small)  # both exactly at the limit
    assert op == Write((Put("abcd", b"\x62ab"),))


@pytest.mark.parametrize(
    ("sent", "kept"),
    [(1, 1), (MAX_PAGE_ITEMS, MAX_PAGE_ITEMS), (MAX_PAGE_ITEMS + 1, MAX_PAGE_ITEMS), (10**12, MAX_PAGE_ITEMS)],
)
def test_a_scan_limit_is_capped_at_a_page(sent: int, kept: int) -> None:
    _, op, _ = decode_call(body("scan", [FULL_RANGE, sent, "linearizable"]), LIMITS)
    assert isinstance(op, Scan) and op.limit == kept


# --- keys, values, write ops ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [5, None, 1.5, bytearray(b"k"), memoryview(b"k"), ["k"], ("k",)])
def test_check_key_refuses_other_types(key: object) -> None:
    with pytest.raises(TypeError, match=f"a key must be str or bytes, not {type(key).__name__}"):
        check_key(key, LIMITS)


@pytest.mark.parametrize("key", ["", b""])
def test_check_key_refuses_an_empty_key(key: str | bytes) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        check_key(key, LIMITS)


def test_check_key_refuses_a_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="not valid Unicode text"):
        check_key("ok\udc80", LIMITS)


def test_check_key_counts_encoded_bytes_up_to_the_exact_limit() -> None:
    limits = Limits(max_key_bytes=8)
    for key in ("a" * 8, b"\xff" * 8, "é" * 4):  # "é" is two bytes in UTF-8
        assert check_key(key, limits) is key
    for key in ("a" * 9, b"\xff" * 9, "é" * 4 + "a"):
        with pytest.raises(ValueError, match="key of 9 bytes exceeds max_key_bytes=8"):
            check_key(key, limits)


@pytest.mark.parametrize("value", ["text", None, 1, bytearray(b"\x01"), memoryview(b"\x01"), b""])
def test_check_value_refuses_anything_but_non_empty_bytes(value: object) -> None:
    with pytest.raises(TypeError, match="a put's value must be CBOR-encoded bytes"):
        check_value(value, LIMITS)


def test_check_value_up_to_the_exact_limit() -> None:
    limits = Limits(max_value_bytes=8)
    at_limit = b"\x47" + b"\x01" * 7  # a 7-byte byte string: 8 encoded bytes
    assert check_value(at_limit, limits) is at_limit
    with pytest.raises(ValueError, match="cannot be stored"):
        check_value(b"\x01" * 8, limits)  # eight CBOR documents, not one value
    with pytest.raises(ValueError, match="value of 9 encoded bytes exceeds max_value_bytes=8; send large payloads"):
        check_value(b"\x01" * 9, limits)


_scalars = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.binary(max_size=300),
    st.text(max_size=100),
    st.booleans(),
    st.none(),
    st.floats(),
)


@given(_scalars)
def test_one_scalar_value_is_accepted_without_being_decoded(value: object) -> None:
    encoded = cbor2.dumps(value)
    assert records._one_scalar(encoded)  # (the shortcut: no decode)
    assert check_value(encoded, LIMITS) is encoded


@given(st.one_of(st.binary(min_size=1, max_size=40), _scalars.map(cbor2.dumps).flatmap(_mangled)))
def test_the_scalar_shortcut_takes_nothing_the_full_check_would_refuse(data: bytes) -> None:
    if data and records._one_scalar(data):
        safe_loads(data)  # (raises if it is not one value the store can read back)


@pytest.mark.parametrize(
    "data",
    [
        b"\x62\xff\xfe",  # a text string that is not UTF-8
        b"\x43ab",  # a byte string shorter than its head says
        b"\x41ab",  # ... or longer
        b"\x19\x01",  # an integer cut short
        b"\x5f\x41a\xff",  # an indefinite-length byte string
        b"\xf7",  # undefined
        b"\x81\x01",  # an array
    ],
)
def test_values_the_shortcut_does_not_take_get_the_full_check(data: bytes) -> None:
    assert not records._one_scalar(data)


_wire_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            st.one_of(st.text(max_size=12), st.binary(max_size=12), st.integers()),
            st.one_of(_scalars.map(cbor2.dumps), st.binary(max_size=12), st.lists(st.integers()).map(cbor2.dumps)),
        ).map(list),
        st.tuples(st.just("del"), st.one_of(st.text(max_size=12), st.binary(max_size=12))).map(list),
        st.lists(st.integers(), max_size=3),
    ),
    min_size=1,
    max_size=6,
)


@given(_wire_ops, st.integers(1, 16), st.integers(1, 24), st.integers(1, 60))
def test_write_ops_from_the_wire_are_checked_as_one_by_one(
    wire: list[Any], max_key: int, max_value: int, max_write: int
) -> None:
    """The inline path for common puts takes exactly what the op-by-op checks take, and refuses the rest with
    their errors."""
    _same_as_one_by_one(wire, Limits(max_key_bytes=max_key, max_value_bytes=max_value, max_write_bytes=max_write))


@pytest.mark.parametrize("key", ["k" * 8, b"k" * 8, "k" * 9, b"k" * 9, "\u00e9" * 4, "\u00e9" * 5, "", b""])
@pytest.mark.parametrize("value_bytes", [8, 9])
@pytest.mark.parametrize("max_write", [16, 17])
def test_write_ops_from_the_wire_at_each_limit(key: str | bytes, value_bytes: int, max_write: int) -> None:
    value = cbor2.dumps(b"v" * (value_bytes - 1))  # (a one-byte head, then the bytes)
    _same_as_one_by_one([["put", key, value]], Limits(max_key_bytes=8, max_value_bytes=8, max_write_bytes=max_write))


def _same_as_one_by_one(wire: list[Any], limits: Limits) -> None:
    def outcome(decode: Any) -> Any:
        try:
            return decode()
        except (TypeError, ValueError) as exc:
            return type(exc), str(exc)

    def one_by_one() -> Any:
        return records.check_write(tuple(records.write_op_from_list(op, limits) for op in wire), limits)

    assert outcome(lambda: records.write_ops_from_wire(wire, limits)) == outcome(one_by_one)


def test_write_from_args_keeps_mixed_ops_in_order() -> None:
    two = encode_value("two")
    write = Write.from_args([[["put", "a", ONE], ["del", b"b"], ["put", b"a", two], ["del", "a"]]], LIMITS)
    assert write == Write((Put("a", ONE), Delete(b"b"), Put(b"a", two), Delete("a")))
    assert write.to_args() == [[["put", "a", ONE], ["del", b"b"], ["put", b"a", two], ["del", "a"]]]


def test_write_from_args_refuses_a_non_bytes_value_and_an_empty_op_list() -> None:
    with pytest.raises(RemoteProtocolError, match="a put's value must be CBOR-encoded bytes"):
        Write.from_args([[["del", "a"], ["put", "b", 1]]], LIMITS)
    with pytest.raises(RemoteProtocolError, match="a write needs a non-empty list of ops"):
        Write.from_args([[]], LIMITS)


# --- replies ----------------------------------------------------------------------------------------------------


def test_get_decodes_bytes_or_none_only() -> None:
    get = Get("k")
    assert get.decode_result(ONE) == ONE
    assert get.decode_result(None) is None
    for bad in ("text", 1, bytearray(b"x"), [ONE]):
        with pytest.raises(RemoteProtocolError, match=f"a get answered {type(bad).__name__}, expected encoded bytes"):
            get.decode_result(bad)


def test_write_and_find_leader_answer_nothing() -> None:
    assert Write((Delete("k"),)).decode_result("anything") is None
    assert FindLeader().decode_result([1, 2]) is None


def test_scan_pages_round_trip() -> None:
    scan = Scan(ScanRange(), 10)
    for page in (ScanPage([], False), ScanPage([("a", ONE), (b"b", None)], True)):
        assert scan.decode_result(scan.encode_result(page)) == page


@pytest.mark.parametrize(
    "reply",
    [
        None,
        [],
        [[], False, 1],
        [[], 1],  # more must be a bool
        [None, False],
        [[["k"]], False],
        [[["k", ONE, 1]], False],
        [[[5, ONE]], False],
        [[["k", "text"]], False],
        [["k"], False],
    ],
)
def test_scan_refuses_a_malformed_page(reply: object) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed reply: a scan"):
        Scan(ScanRange(), 10).decode_result(reply)


INFO = PartitionInfo(
    name="p",
    leader="b",
    term=4,
    commit_index=17,
    applied_index=16,
    peers=(
        ReplicaInfo(node_id="a", address="a:1", role="voter", match_index=16, connected=True, progress="replicate"),
        ReplicaInfo(node_id="b", address="b:1", role="leader", match_index=17, connected=True),
        ReplicaInfo(node_id="c", address=None, role="learner", match_index=0, connected=False, progress="snapshot"),
    ),
    joint=True,
    targets=("b", "a", "c"),
    snapshots_to=("c",),
)


def test_partition_info_round_trips_with_its_peers() -> None:
    info = Info()
    for sample in (INFO, PartitionInfo(name="q", leader=None, term=0, commit_index=0, applied_index=0, peers=())):
        assert info.decode_result(info.encode_result(sample)) == sample


GOOD_INFO = INFO.to_list()


def _info_with(index: int, value: object) -> list[Any]:
    changed = list(GOOD_INFO)
    changed[index] = value
    return changed


def _peer_with(index: int, value: object) -> list[Any]:
    peer = ["a", "a:1", "voter", 3, True, "replicate"]
    peer[index] = value
    return _info_with(5, [peer])


@pytest.mark.parametrize(
    "reply",
    [
        None,
        GOOD_INFO[:5],
        _info_with(5, None),
        _info_with(0, 1),
        _info_with(1, 2),
        _info_with(2, "4"),
        _info_with(3, None),
        _info_with(4, True),  # a bool is not an index
        _info_with(5, ["a"]),
        _peer_with(0, None),
        _peer_with(3, "3"),
        _info_with(5, [["a", "a:1", "voter", 3]]),
        _info_with(5, [["a", "a:1", "voter", 3, True, "racing"]]),  # not a replication state
        _info_with(6, "no"),  # joint is a bool
        _info_with(7, ["a", 1]),  # targets are node ids
        GOOD_INFO[:8],
    ],
)
def test_partition_info_refuses_a_malformed_reply(reply: object) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed reply: (partition|a replica)"):
        Info().decode_result(reply)


@pytest.mark.parametrize(
    "reply",
    [
        _peer_with(1, 7000),  # an address is a string or null, as ReplicaInfo.address says
        _peer_with(2, 1),  # a role is a string ("leader", "voter", "learner"), not coerced by str()
        _peer_with(4, "no"),  # connected is a bool: "no" must not be coerced to True
    ],
)
def test_partition_info_refuses_a_peer_with_ill_typed_fields(reply: list[Any]) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed reply"):
        Info().decode_result(reply)


TABLE = MemberTable(
    version=3,
    members=[
        Member(node_id="b", address="b:1"),
        Member(node_id="a", address="a:1", state=MemberState.JOINING),
    ],
)


def test_join_and_members_replies_round_trip() -> None:
    join = Join("a", "a:1")
    for result in (JoinResult(TABLE, "cluster-1"), JoinResult(MemberTable(), None)):
        assert join.decode_result(join.encode_result(result)) == result
    members = Members()
    assert members.decode_result(members.encode_result(TABLE)) == TABLE


@pytest.mark.parametrize(
    "reply",
    [
        None,
        [TABLE.to_list()],
        [TABLE.to_list(), "c", "extra"],
        [TABLE.to_list(), 5],
        [None, "c"],
        [[3, [["a", "a:1", 9]]], "c"],  # an unknown member state
        [[True, []], "c"],
    ],
)
def test_join_refuses_a_malformed_reply(reply: object) -> None:
    with pytest.raises(RemoteProtocolError):
        Join("a", "a:1").decode_result(reply)


@pytest.mark.parametrize("reply", [None, [3], [3, None], [-1, []], [1, [["a", "a:1", 1], ["a", "a:2", 1]]]])
def test_members_refuses_a_malformed_reply(reply: object) -> None:
    with pytest.raises(RemoteProtocolError, match="member table"):
        Members().decode_result(reply)


def test_directory_records_round_trip() -> None:
    locate = Locate("p", False)
    record = DirectoryRecord(name="p", voters=("b", "a", "c"), table_version=9)  # type: ignore[arg-type]
    assert locate.decode_result(locate.encode_result(record)) == record
    assert locate.encode_result(None) is None
    assert locate.decode_result(None) is None


@pytest.mark.parametrize(
    "reply",
    [
        "p",
        [],
        ["p", ["a"]],
        ["p", ["a"], 1, 2],
        [1, ["a"], 1],
        ["p", "a", 1],
        ["p", ["a", ""], 1],
        ["p", ["a", 2], 1],
        ["p", ["a"], "1"],
        ["p", ["a"], True],
    ],
)
def test_locate_refuses_a_malformed_record(reply: object) -> None:
    with pytest.raises(RemoteProtocolError, match="a directory record must be \\[name, \\[voters\\], version\\]"):
        Locate("p", False).decode_result(reply)


# --- a property -------------------------------------------------------------------------------------------------

keys = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.binary(min_size=1, max_size=20),
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
).map(encode_value)
write_ops = st.lists(
    st.one_of(st.builds(Put, keys, values), st.builds(Delete, keys)),
    min_size=1,
    max_size=8,
)


def _encoded_len(key: str | bytes) -> int:
    return len(key.encode() if isinstance(key, str) else key)


@given(ops=write_ops, slack=st.integers(0, 4), left=st.none() | st.floats(0, 1e6))
def test_write_ops_survive_the_envelope(ops: list[Put | Delete], slack: int, left: float | None) -> None:
    longest_key = max(_encoded_len(op.key) for op in ops)
    longest_value = max((len(op.value) for op in ops if isinstance(op, Put)), default=1)
    limits = Limits(max_key_bytes=longest_key + slack, max_value_bytes=longest_value + slack)
    write = Write(tuple(ops))
    wire = encode_call("p", write, left)
    assert decode_call(wire, limits) == ("p", write, left)
    # One byte less than the longest key is refused as a whole, not truncated.
    with pytest.raises(RemoteProtocolError, match="exceeds max_key_bytes"):
        decode_call(wire, Limits(max_key_bytes=longest_key - 1, max_value_bytes=longest_value))


def test_hosting_replies_round_trip_and_refuse_garbage() -> None:
    good = Hosting(replicas=("a", "b"), leaderships=("b",))
    assert Hosted().decode_result(Hosted().encode_result(good)) == good
    for bad in (None, [["a"]], [["a"], [1]], [("a",), []], [[], [], []]):
        with pytest.raises(RemoteProtocolError, match="malformed reply: hosting"):
            Hosted().decode_result(bad)


def test_only_reads_and_writes_with_a_session_are_retry_safe() -> None:
    assert Get("k").retry_safe and Scan(ScanRange(), 1).retry_safe
    assert not Write((Delete("k"),)).retry_safe  # a handler's write, or an old client's: applied as often as sent
    assert Write((Delete("k"),), SessionRef(b"s" * 16, 1, 1)).retry_safe
    assert not Call({}).retry_safe  # a request with streams travels without a session: sent once
    with_session = Call({}, session=SessionRef(b"s" * 16, 2, 1))
    assert with_session.retry_safe and not with_session.attempt_bounded  # once (issue 18), however long it runs
    assert Call.from_args(with_session.to_args(), Limits()) == with_session
