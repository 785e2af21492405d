"""The reader's direct read (``MuxConnection._receive``): from a plain TCP stream, what the socket holds is read at
once, without the pass of the event loop ``SocketStream.receive_some`` makes after each read; a socket that keeps
holding data must still let other tasks run every ``YIELD_EVERY_BYTES``. Real sockets (``socket.socketpair``)."""

from __future__ import annotations

import os
import socket
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

from borough.wire import mux
from borough.wire.settings import WireSettings

from .helpers import mux_pair

pytestmark = pytest.mark.trio


def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


async def test_messages_and_a_call_arrive_whole_and_in_order_over_sockets() -> None:
    got: list[Any] = []

    async def on_call(call: Any) -> Any:
        return ["echo", call.body]

    async with mux_pair(b_on_message=got.append, b_on_call=on_call, stream_pair=_socket_pair()) as (a, b):
        for i in range(50):
            assert a.send_message(["m", i, b"x" * (i * 997)])
        assert (await a.call("hi")).body == ["echo", "hi"]
        await trio.testing.wait_all_tasks_blocked()
        assert got == [["m", i, b"x" * (i * 997)] for i in range(50)]
        assert b.reads >= 1


async def test_a_peer_closing_its_socket_closes_the_connection() -> None:
    left, right = _socket_pair()
    async with mux_pair(stream_pair=(left, right)) as (a, b):
        await trio.testing.wait_all_tasks_blocked()
        left.socket.close()  # abruptly, under the mux's feet: the peer sees EOF
        with trio.fail_after(5):
            await b.wait_closed()
        assert b.closed


async def test_a_socket_that_always_holds_data_does_not_hold_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 2 MiB message, with every read returning a full ``read_size`` at once (as a socket whose peer keeps up):
    # other tasks run at least once per ``YIELD_EVERY_BYTES`` read.
    settings = WireSettings(max_frame_size=4 << 20)
    body = cbor2.dumps([0, 9, b"y" * (2 << 20)])
    wake_body = cbor2.dumps([0, 9, "wake"])
    wake = len(wake_body).to_bytes(4, "big") + wake_body  # (through the socket, to wake the reader)
    pending = bytearray(len(body).to_bytes(4, "big") + body)
    got: list[Any] = []
    ticks = 0
    at_delivery: list[int] = []

    def on_message(message: Any) -> None:
        got.append(message)
        at_delivery.append(ticks)

    async with mux_pair(settings=settings, b_on_message=on_message, stream_pair=_socket_pair()) as (a, b):
        await trio.testing.wait_all_tasks_blocked()
        real_read = os.read
        b_fd = b._stream.socket.fileno()  # type: ignore[attr-defined]

        woken = False

        def read(fd: int, n: int) -> bytes:
            nonlocal woken
            if fd != b_fd or not pending or not woken:
                data = real_read(fd, n)
                woken = woken or (fd == b_fd and data.endswith(wake))
                return data
            chunk = bytes(pending[:n])
            del pending[:n]
            return chunk

        monkeypatch.setattr(mux.os, "read", read)
        async with trio.open_nursery() as nursery:

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(ticker)
            assert a.send_message_frame(wake)
            with trio.fail_after(5):
                while len(got) < 2:
                    await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
        assert len(got) == 2 and got[0] == "wake" and got[1] == b"y" * (2 << 20)
        reads = len(body) // settings.read_size
        assert at_delivery[1] - at_delivery[0] >= reads * settings.read_size // mux.YIELD_EVERY_BYTES - 1


class _Hooks:
    """Dispatch hooks that log each ``enter`` and ``leave`` beside the messages, and check they pair up."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.held = False

    def enter(self) -> None:
        assert not self.held
        self.held = True
        self.log.append("enter")

    def leave(self) -> None:
        assert self.held
        self.held = False
        self.log.append("leave")


async def test_the_dispatch_hooks_bracket_each_run_of_frames_read_together() -> None:
    log: list[Any] = []
    hooks = _Hooks(log)

    def on_message(message: Any) -> None:
        assert hooks.held  # (a handler runs inside the bracket)
        log.append(message)

    left, right = _socket_pair()
    async with mux_pair(b_on_message=on_message, b_hooks=hooks, stream_pair=(left, right)) as (a, b):
        await trio.testing.wait_all_tasks_blocked()
        log.clear()
        frames = b"".join(
            len(body).to_bytes(4, "big") + body for body in (cbor2.dumps([0, 9, ["m", i]]) for i in range(3))
        )
        os.write(left.socket.fileno(), frames)  # (in one write: the reader finds all three in one read)
        await trio.testing.wait_all_tasks_blocked()
        # One run: the hooks are told once around the three messages, and ``leave`` comes before the reader waits.
        assert log == ["enter", ["m", 0], ["m", 1], ["m", 2], "leave"]
        assert a.send_message(["m", 3])
        await trio.testing.wait_all_tasks_blocked()
        assert log[5:] == ["enter", ["m", 3], "leave"]


async def test_the_dispatch_hooks_are_left_before_the_reader_lets_other_tasks_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[Any] = []
    hooks = _Hooks(log)
    monkeypatch.setattr(mux, "YIELD_EVERY", 2)
    left, right = _socket_pair()
    async with mux_pair(b_on_message=log.append, b_hooks=hooks, stream_pair=(left, right)) as (a, b):
        await trio.testing.wait_all_tasks_blocked()
        log.clear()
        frames = b"".join(
            len(body).to_bytes(4, "big") + body for body in (cbor2.dumps([0, 9, ["m", i]]) for i in range(5))
        )
        os.write(left.socket.fileno(), frames)
        await trio.testing.wait_all_tasks_blocked()
        assert log == [
            "enter", ["m", 0], ["m", 1], "leave",
            "enter", ["m", 2], ["m", 3], "leave",
            "enter", ["m", 4], "leave",
        ]  # fmt: skip


async def test_the_dispatch_hooks_are_left_when_the_connection_ends_mid_run() -> None:
    log: list[Any] = []
    hooks = _Hooks(log)

    def on_message(message: Any) -> None:
        log.append(message)
        raise RuntimeError("a handler's bug: the connection closes")

    left, right = _socket_pair()
    async with mux_pair(b_on_message=on_message, b_hooks=hooks, stream_pair=(left, right)) as (a, b):
        await trio.testing.wait_all_tasks_blocked()
        assert a.send_message(["m", 0])
        with trio.fail_after(5):
            await b.wait_closed()
        await trio.testing.wait_all_tasks_blocked()
        assert log[-3:] == ["enter", ["m", 0], "leave"] and not hooks.held
