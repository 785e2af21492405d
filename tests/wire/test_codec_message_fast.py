"""The MESSAGE fast path of the frame codec (``FrameCodec._decode_message_fast``): a frame starting with the
minimal ``[0, 9, `` decodes only its payload. It must give exactly the generic path's verdict on every input:
the same body, or a ``RemoteProtocolError`` where the generic path refuses (item budget, depth, tags, trailing
bytes, truncation). The generic path is reached with the same frame encoded non-minimally (stream id 0 as the
two bytes ``0x18 0x00``), which cbor2 reads as the same array."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from borough.errors import RemoteProtocolError
from borough.wire import codec as c

MAX = 64 * 1024
FAST_HEAD = b"\x83\x00\x09"
GENERIC_HEAD = b"\x83\x18\x00\x09"


def _codec(max_frame_items: int = 65536) -> c.FrameCodec:
    dialer = c.FrameCodec(c.Role.DIALER, max_frame_size=MAX)
    codec = c.FrameCodec(c.Role.ACCEPTOR, max_frame_size=MAX)
    codec.receive_data(
        dialer.send(c.Hello(cluster_id="c", node_id="n", address="h:1", window=4096, max_frame_size=MAX))
    )
    assert isinstance(codec.next_event(), c.Hello)
    codec.max_frame_items = max_frame_items  # (as the connection sets it after the handshake)
    return codec


def _verdict(head: bytes, payload: bytes, max_frame_items: int) -> tuple[str, Any]:
    codec = _codec(max_frame_items)
    body = head + payload
    codec.receive_data(len(body).to_bytes(4, "big") + body)
    before = codec._payload_decoder.decode
    used: list[bool] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        used.append(True)
        return before(*args, **kwargs)

    codec._payload_decoder.decode = spy  # type: ignore[method-assign]
    try:
        ev = codec.next_event()
    except RemoteProtocolError:
        outcome: tuple[str, Any] = ("refused", None)
    else:
        assert isinstance(ev, c.Message)
        outcome = ("message", ev.body)
    assert bool(used) == (head == FAST_HEAD and bool(payload))  # each head takes the path it is meant to test
    return outcome


def _same(payload: bytes, max_frame_items: int = 65536) -> tuple[str, Any]:
    fast = _verdict(FAST_HEAD, payload, max_frame_items)
    generic = _verdict(GENERIC_HEAD, payload, max_frame_items)
    assert fast == generic
    return fast


def _nested(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"  # ``depth`` arrays of one item around a 0


def test_a_message_decodes_as_before() -> None:
    raft = ["raft", [["p0", [3, "a", "b", 7, 100, 7, 99, [[7, 0, b"x" * 100]]], 1, 2]]]
    assert _same(cbor2.dumps(raft)) == ("message", raft)


@pytest.mark.parametrize("depth", [60, 61, 62, 63, 64, 65, 66])
def test_nesting_at_the_depth_limit_gets_the_same_verdict(depth: int) -> None:
    _same(_nested(depth))
    # ... and above the scan threshold (the pre-scan's depth count, not only the decoder's)
    _same(b"\x82" + _nested(depth) + cbor2.dumps(b"x" * 2000))


def test_the_depth_limit_is_reached_on_both_paths() -> None:
    verdicts = {_same(_nested(d))[0] for d in range(50, 70)}
    assert verdicts == {"message", "refused"}


@pytest.mark.parametrize("items", [1, 2, 3, 4, 5, 6, 20])
def test_item_budget_at_its_limit_gets_the_same_verdict(items: int) -> None:
    for n in range(12):
        _same(cbor2.dumps(list(range(n))), max_frame_items=items)
        _same(cbor2.dumps([0] * 300 * n), max_frame_items=items * 100)  # scanned (over 1 KiB)


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no payload at all
        b"\x01\x02",  # trailing bytes after the payload
        b"\x82\x01",  # truncated array
        b"\x9f\x01\xff",  # indefinite length
        b"\xd9\x01\x00\x01",  # a tag not on the allow-list (256)
        b"\xc2\x58\x80" + b"\x01" * 128,  # a bignum over the size limit
        b"\xff",  # a stray break
        b"\x7f",  # an indefinite text
    ],
)
def test_hostile_payloads_are_refused_on_both_paths(payload: bytes) -> None:
    assert _same(payload) == ("refused", None)


@given(st.binary(max_size=200))
def test_random_payload_bytes_get_the_same_verdict(payload: bytes) -> None:
    _same(payload)


@given(st.binary(min_size=1, max_size=3))
def test_tiny_frames_never_read_past_their_end(tail: bytes) -> None:
    # A frame of 1-3 bytes that starts like a MESSAGE, followed in the buffer by a valid frame: a refusal (never an
    # IndexError, never bytes of the next frame taken as its own).
    codec = _codec()
    body = (b"\x83" + tail)[: len(tail)]
    nxt = cbor2.dumps([0, 9, "next"])
    codec.receive_data(len(body).to_bytes(4, "big") + body + len(nxt).to_bytes(4, "big") + nxt)
    with pytest.raises(RemoteProtocolError):
        codec.next_event()
