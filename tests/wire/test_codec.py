"""The sans-IO frame codec: round trips, the handshake rules, and fuzzing of the decoder.

The decoder must turn any input into events or a ``RemoteProtocolError`` (never another exception, a hang, or
unbounded buffering). Hypothesis prints the failing example and its ``@reproduce_failure`` blob to replay it.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from borough.errors import LocalProtocolError, RemoteProtocolError
from borough.wire import codec as c

MAX = 64 * 1024


def hello(**kw: Any) -> c.Hello:
    base: dict[str, Any] = {"cluster_id": "c1", "node_id": "n1", "address": "h:1", "window": 4096}
    base.update(kw)
    return c.Hello(max_frame_size=MAX, **base)


def pair() -> tuple[c.FrameCodec, c.FrameCodec]:
    """(dialer, acceptor) after the handshake, each having received the other's HELLO."""
    a = c.FrameCodec(c.Role.DIALER, max_frame_size=MAX)
    b = c.FrameCodec(c.Role.ACCEPTOR, max_frame_size=MAX)
    b.receive_data(a.send(hello()))
    assert isinstance(b.next_event(), c.Hello)
    a.receive_data(b.send(hello(node_id="n2")))
    assert isinstance(a.next_event(), c.Hello)
    return a, b


def drain(codec: c.FrameCodec) -> list[Any]:
    out = []
    while (ev := codec.next_event()) is not c.NEED_DATA:
        out.append(ev)
        if isinstance(ev, c.ConnectionClosed):
            break
    return out


def frame(obj: Any) -> bytes:
    body = cbor2.dumps(obj)
    return len(body).to_bytes(4, "big") + body


# ------------------------------------------------------------------------------------------------ examples


def test_round_trip_of_every_event_kind() -> None:
    a, b = pair()
    call_sid, att = a.new_stream_id(), a.new_stream_id()
    events: list[Any] = [
        c.Call(stream_id=call_sid, body={"k": [1, 2.5, None, b"x"]}, streams={"up": att}),
        c.Data(stream_id=att, data=b"\x00" * 1000),
        c.Data(stream_id=att, data=b""),
        c.End(stream_id=att),
        c.Open(stream_id=a.new_stream_id(), header={"h": 1}),
        c.Reset(stream_id=att, error={"type": "NotFound", "message": "m", "fields": {"key": "k"}}),
        c.Reset(stream_id=att, error=None),
        c.Stop(stream_id=att),
        c.Window(stream_id=att, credit=12345),
        c.Message(body=["raft", 1, {"entries": []}]),
        c.Ping(nonce=7),
        c.Pong(nonce=7),
        c.GoAway(reason="idle"),
    ]
    b.receive_data(b"".join(a.send(e) for e in events))
    assert drain(b) == events
    reply_sid = b.new_stream_id()
    a.receive_data(b.send(c.Reply(stream_id=call_sid, body="ok", streams={"down": reply_sid})))
    assert drain(a) == [c.Reply(stream_id=call_sid, body="ok", streams={"down": reply_sid})]
    a.receive_data(b"")
    assert drain(a) == [c.ConnectionClosed()]


def test_byte_at_a_time_delivery() -> None:
    a, b = pair()
    sid = a.new_stream_id()
    data = a.send(c.Open(stream_id=sid, header=None)) + a.encode_data(sid, b"hello") + a.send(c.End(stream_id=sid))
    got: list[Any] = []
    for i in range(len(data)):
        b.receive_data(data[i : i + 1])
        got += drain(b)
    assert got == [c.Open(stream_id=sid, header=None), c.Data(stream_id=sid, data=b"hello"), c.End(stream_id=sid)]


def test_send_rules() -> None:
    a = c.FrameCodec(c.Role.DIALER, max_frame_size=MAX)
    with pytest.raises(LocalProtocolError, match="before the handshake"):
        a.send(c.Message(body=1))
    a.send(hello())
    with pytest.raises(LocalProtocolError, match="already sent"):
        a.send(hello())
    with pytest.raises(LocalProtocolError, match="maximum frame size"):
        a.send(c.Message(body=b"x" * MAX))
    with pytest.raises(LocalProtocolError, match="CBOR"):
        a.send(c.Message(body=object()))
    with pytest.raises(LocalProtocolError, match="maximum frame size"):
        c.encode_message_frame("x" * 100, 50)
    assert [a.new_stream_id() for _ in range(3)] == [1, 3, 5]
    b = c.FrameCodec(c.Role.ACCEPTOR, max_frame_size=MAX)
    assert [b.new_stream_id() for _ in range(3)] == [2, 4, 6]


def test_handshake_refusals() -> None:
    assert c.handshake_refusal(hello(), hello(cluster_id="c1")) is None
    assert c.handshake_refusal(hello(), hello(cluster_id=None)) is None
    assert c.handshake_refusal(hello(cluster_id=None), hello()) is None
    why = c.handshake_refusal(hello(), hello(cluster_id="other", node_id="n9", address="x:1"))
    assert why is not None and "'n9'" in why and "'other'" in why and "'c1'" in why
    why = c.handshake_refusal(hello(), hello(version=5, min_version=3))
    assert why is not None and "versions" in why
    assert c.handshake_refusal(hello(version=2, min_version=1), hello(version=3, min_version=2)) is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00\x00\x00\x00", "length 0"),
        (b"\x7f\xff\xff\xff", "over our maximum frame size"),
        (frame([0, 9, "hi"]), "expected the handshake"),
        (frame({"not": "a list"}), "must be a CBOR array"),
        (frame([0, 0, {"magic": "http"}]), "does not speak the Borough wire protocol"),
        (frame([0, 0, {"magic": "borough", "version": 1, "min_version": 2}]), "version range"),
        (frame([0, 0, {"magic": "borough", "version": 1, "min_version": 1, "window": 0, "max_frame": 9999}]), "window"),
        (b"GET / HTTP/1.1\r\n\r\n", "over our maximum frame size"),
        (frame([0, 0, 1])[:-1] + b"\xff\x00", "trailing garbage|not valid CBOR"),
    ],
)
def test_bad_first_frames(data: bytes, match: str) -> None:
    b = c.FrameCodec(c.Role.ACCEPTOR, max_frame_size=MAX)
    b.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=match):
        drain(b)
    with pytest.raises(RemoteProtocolError):  # stays broken
        b.next_event()


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([0, 0, {}], "second handshake"),
        ([3, 99, None], "unknown frame kind"),
        ([1.5, 2, b""], "stream id"),
        ([-1, 2, b""], "stream id"),
        ([1, "DATA", b""], "kind must be an integer"),
        ([1, 2, b"x"], "never opened"),
        ([2, 2, b"x"], "never opened"),
        ([0, 2, b"x"], "must name a stream"),
        ([0, 7, [1, {}]], "CALL must open a new stream"),
        ([2, 7, [1, {}]], "belongs to our side"),
        ([1, 7, [1, {}, 3]], "must be \\[body, streams\\]"),
        ([1, 7, [1, {"a": 1}]], "not above"),
        ([1, 7, [1, {"a": "x"}]], "text names and stream ids"),
        ([1, 7, [1, [3]]], "map of name to stream id"),
        ([1, 8, ["r", {}]], "not a call we made"),
        ([0, 6, 5], "must name a stream"),
        ([5, 9, "m"], "MESSAGE must be on stream 0"),
        ([0, 10, "x"], "PING must carry an integer"),
        ([0, 12, 5], "GOAWAY must carry text"),
        ([1, 1, None], None),
    ],
)
def test_bad_frames_after_handshake(obj: list[Any], match: str | None) -> None:
    _, b = pair()
    b.receive_data(frame(obj))
    if match is None:
        assert len(drain(b)) == 1
        return
    with pytest.raises(RemoteProtocolError, match=match):
        drain(b)


def test_bad_payloads_on_an_open_stream() -> None:
    for obj, match in [
        ([1, 2, "text"], "DATA payload must be a byte string"),
        ([1, 3, 0], "END payload must be null"),
        ([1, 4, {"type": 1}], "RESET payload"),
        ([1, 6, 0], "WINDOW credit"),
        ([1, 6, 2**40], "WINDOW credit"),
        ([1, 5, b""], "STOP payload must be null"),
        ([3, 1, None], None),
        ([0, 9, cbor2.CBORTag(29, 0)], "not allowed|not valid CBOR"),
    ]:
        _, b = pair()
        b.receive_data(frame([1, 1, None]))
        drain(b)
        b.receive_data(frame(obj))
        if match is None:
            assert len(drain(b)) == 1
            continue
        with pytest.raises(RemoteProtocolError, match=match):
            drain(b)


def test_eof_mid_frame_and_mid_prefix() -> None:
    a, b = pair()
    data = a.send(c.Message(body="hello"))
    b.receive_data(data[:-2])
    b.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        drain(b)
    _, b = pair()
    b.receive_data(b"\x00\x00")
    b.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="length prefix"):
        drain(b)
    b = c.FrameCodec(c.Role.ACCEPTOR, max_frame_size=MAX)
    b.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="before completing the handshake"):
        drain(b)


# ------------------------------------------------------------------------------------------------ fuzzing

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


def valid_stream() -> bytes:
    """A realistic byte stream from a dialer: handshake, call with a stream, data, messages."""
    a2 = c.FrameCodec(c.Role.DIALER, max_frame_size=MAX)
    out = [a2.send(hello())]
    a2.receive_data(c.FrameCodec(c.Role.ACCEPTOR, max_frame_size=MAX).send(hello(node_id="n2")))
    a2.next_event()
    call, att = a2.new_stream_id(), a2.new_stream_id()
    out.append(a2.send(c.Call(stream_id=call, body={"op": "put", "v": [1, 2, 3]}, streams={"s": att})))
    out.append(a2.encode_data(att, b"payload" * 20))
    out.append(a2.send(c.End(stream_id=att)))
    out.append(a2.send(c.Message(body=["append", 3, 9, [[1, b"e"]]])))
    out.append(a2.send(c.Window(stream_id=att, credit=100)))
    out.append(a2.send(c.Ping(nonce=1)))
    out.append(a2.send(c.Reset(stream_id=call, error=None)))
    return b"".join(out)


VALID = valid_stream()


def run_decoder(data: bytes, cuts: list[int], eof: bool) -> None:
    """Feed ``data`` split at ``cuts``; every outcome must be events or RemoteProtocolError, bounded in memory."""
    codec = c.FrameCodec(c.Role.ACCEPTOR, max_frame_size=MAX)
    pieces, last = [], 0
    for cut in sorted(set(cuts)):
        if 0 < cut < len(data):
            pieces.append(data[last:cut])
            last = cut
    pieces.append(data[last:])
    if eof:
        pieces.append(b"")
    events = 0
    try:
        for piece in pieces:
            if not piece and not eof:
                continue
            codec.receive_data(piece)
            while True:
                ev = codec.next_event()
                if ev is c.NEED_DATA or isinstance(ev, c.ConnectionClosed):
                    break
                events += 1
                assert events <= len(data) // 5 + 1  # each event consumed at least a 5-byte frame: no spinning
            # Unconsumed input never exceeds one frame plus what was just fed.
            assert codec.buffered <= MAX + 4 + len(piece)
    except RemoteProtocolError as exc:
        assert str(exc)


@pytest.mark.soak
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6), st.booleans())
def test_fuzz_random_bytes(data: bytes, cuts: list[int], eof: bool) -> None:
    run_decoder(data, cuts, eof)


@pytest.mark.soak
@given(st.integers(0, len(VALID)), st.lists(st.integers(0, len(VALID)), max_size=4), st.booleans())
def test_fuzz_truncated_valid_stream(length: int, cuts: list[int], eof: bool) -> None:
    run_decoder(VALID[:length], cuts, eof)


@pytest.mark.soak
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255), st.sampled_from(["flip", "insert", "delete"])),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.integers(0, len(VALID)), max_size=4),
    st.booleans(),
)
def test_fuzz_mutated_valid_stream(mutations: list[tuple[int, int, str]], cuts: list[int], eof: bool) -> None:
    data = bytearray(VALID)
    for pos, byte, how in mutations:
        pos = min(pos, len(data) - 1)
        if how == "flip":
            data[pos] ^= byte or 1
        elif how == "insert":
            data.insert(pos, byte)
        elif len(data) > 1:
            del data[pos]
    run_decoder(bytes(data), cuts, eof)


@pytest.mark.soak
@given(st.lists(st.lists(cbor_values, min_size=0, max_size=4) | cbor_values, min_size=1, max_size=6))
def test_fuzz_wrongly_typed_frames_after_handshake(frames: list[Any]) -> None:
    prefix = c.FrameCodec(c.Role.DIALER, max_frame_size=MAX).send(hello())
    run_decoder(prefix + b"".join(frame(f) for f in frames), [], True)


@pytest.mark.soak
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.integers(0, 9), cbor_values),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_well_shaped_frames_with_random_payloads(frames: list[tuple[int, int, Any]]) -> None:
    prefix = c.FrameCodec(c.Role.DIALER, max_frame_size=MAX).send(hello())
    run_decoder(prefix + b"".join(frame([sid, kind, payload]) for kind, sid, payload in frames), [], True)


@given(cbor_values, st.integers(1, 2**40))
def test_round_trip_messages_and_windows(body: Any, credit: int) -> None:
    a, b = pair()
    sid = a.new_stream_id()
    events = [c.Message(body=body), c.Open(stream_id=sid, header=body)]
    if credit < 2**31:
        events.append(c.Window(stream_id=sid, credit=credit))
    b.receive_data(b"".join(a.send(e) for e in events))
    assert drain(b) == events


@given(st.integers(0, 2**32 - 1), cbor_values, st.sampled_from(["call", "reply"]))
def test_a_call_or_reply_without_streams_is_framed_as_any_other(sid: int, body: Any, kind: str) -> None:
    """Calls and replies without streams have their envelope assembled by hand (``FrameCodec._plain``): the same
    bytes as the general framing, which decode to the same event."""
    a, b = pair()
    fast = a.encode_call(sid, body, {}) if kind == "call" else a.encode_reply(sid, body, {})
    general = a._frame(sid, c.Kind.CALL if kind == "call" else c.Kind.REPLY, [body, {}], "it")
    assert fast == general


def test_a_call_without_streams_over_the_peers_frame_limit_is_refused_before_it_is_sent() -> None:
    a, _ = pair()
    with pytest.raises(LocalProtocolError, match="the call body encodes to .* over the peer's maximum frame size"):
        a.encode_call(1, b"x" * MAX, {})


def _reply_outcome(frame_bytes: bytes, sid_made: int, fast: bool) -> Any:
    """What the dialer's codec makes of ``frame_bytes`` after making ``sid_made`` calls: the events, or the error."""
    a, _ = pair()
    for _ in range(sid_made):
        a.new_stream_id()
    if not fast:
        a._decode_reply_fast = lambda *args: None  # type: ignore[method-assign]
    try:
        a.receive_data(frame_bytes)
        return drain(a)
    except RemoteProtocolError as exc:
        return type(exc), str(exc)


_reply_bodies = st.one_of(st.none(), st.binary(max_size=300), cbor_values)


@given(st.integers(1, 40), _reply_bodies, st.booleans(), st.data())
def test_a_reply_is_decoded_alike_by_the_fast_path_and_the_generic_one(
    calls: int, body: Any, mangle: bool, data: st.DataObject
) -> None:
    """Replies without streams whose body is null or a byte string are parsed by hand (``_decode_reply_fast``):
    every frame, well formed or not, gives the same event or the same refusal as the generic decoder's."""
    _, b = pair()
    sid = data.draw(st.sampled_from([2 * i + 1 for i in range(calls)] + [0, 2 * calls + 1, 2, 2**62]))
    encoded = bytearray(frame([sid, c.Kind.REPLY, [body, {}]]) if sid >= 2**62 else b.encode_reply(sid, body, {}))
    if mangle:  # (most often within the envelope and the body's head, where the hand parser looks)
        i = data.draw(st.integers(4, min(len(encoded) - 1, 12)) | st.integers(4, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    assert _reply_outcome(bytes(encoded), calls, True) == _reply_outcome(bytes(encoded), calls, False)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x83\x01\x08\x82\x45abcd\xa0",  # a byte string's head says 5 bytes, 4 follow
        b"\x83\x01\x08\x82\x43abcd\xa0",  # ... says 3, 4 follow
        b"\x83\x01\x08\x82\xf6\x00\xa0",  # null, then a stray byte
        b"\x83\x01\x08\x82\x5f\x41a\xff\xa0",  # an indefinite-length byte string
        b"\x83\x07\x08\x82\xf6\xa0",  # a reply to a call never made
        b"\x83\x00\x08\x82\xf6\xa0",  # on stream 0
        b"\x83\x01\x08\x83\xf6\xa0\xa0",  # three items where the body and its streams go
        b"\x83\x01\x08\x82\xf6\xa0",  # well formed: null
        b"\x83\x01\x08\x82\x43abc\xa0",  # well formed: three bytes
        b"\x83\x18\x01\x08\x82\xf6\xa0",  # well formed, its stream id not minimally encoded
    ],
)
def test_hand_made_replies_are_decoded_alike_by_both_paths(payload: bytes) -> None:
    framed = len(payload).to_bytes(4, "big") + payload
    assert _reply_outcome(framed, 1, True) == _reply_outcome(framed, 1, False)
