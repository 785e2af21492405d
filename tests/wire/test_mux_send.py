"""The mux writer's direct send (``borough.wire.mux._send_now``): what the kernel takes at once leaves without a pass
of the event loop; anything else falls back to the stream's own ``send_all``."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from borough.wire.mux import _send_now

pytestmark = pytest.mark.trio


async def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


async def test_a_small_frame_is_written_at_once_and_arrives_whole() -> None:
    left, right = await _pair()
    async with left, right:
        assert _send_now(left, b"hello") == 5
        assert await right.receive_some(100) == b"hello"


async def test_a_full_socket_buffer_takes_part_and_then_nothing() -> None:
    left, right = await _pair()
    async with left, right:
        blob = b"x" * (64 << 20)  # far more than any socket buffer
        first = _send_now(left, blob)
        assert 0 < first < len(blob)
        assert _send_now(left, blob) == 0  # full: the writer falls back to send_all, which waits for room


async def test_other_streams_and_closed_sockets_are_left_to_send_all() -> None:
    memory, _ = trio.testing.memory_stream_pair()
    assert _send_now(memory, b"x") == 0
    left, right = await _pair()
    await left.aclose()
    assert _send_now(left, b"x") == 0  # (its file descriptor is gone: never a write to a reused one)
    await right.aclose()


async def test_a_reset_peer_raises_for_the_writer_to_fail_the_link() -> None:
    left, right = await _pair()
    await right.aclose()
    async with left:
        with pytest.raises(OSError):
            for _ in range(3):  # (the first write may land in the buffer before the reset is seen)
                _send_now(left, b"x" * 4096)
