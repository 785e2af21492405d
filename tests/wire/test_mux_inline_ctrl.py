"""Control frames (replies, calls) written at once: a lone frame, with the writer idle and no other task runnable,
is handed to the socket in the sender's own step; otherwise it waits for the writer, so many replies finishing in
one pass still leave in one write. Real sockets (``socket.socketpair``): only a plain TCP-like socket can take a
frame without a pass of the event loop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from borough import errors
from borough.wire import mux
from borough.wire.mux import MuxConnection
from borough.wire.records import CallAnswer, IncomingCall

from .helpers import mux_pair

pytestmark = pytest.mark.trio


def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


class _Held:
    """A quick handler that keeps every call's answer, to answer from the test."""

    def __init__(self) -> None:
        self.answers: list[CallAnswer] = []

    def __call__(self, call: IncomingCall, answer: CallAnswer) -> bool:
        self.answers.append(answer)
        return True


async def _unused(call: IncomingCall) -> Any:
    raise AssertionError("every call here is taken by the quick handler")


@asynccontextmanager
async def _pair() -> AsyncIterator[tuple[MuxConnection, MuxConnection, _Held]]:
    """Two connected muxes over a real socket pair; ``b`` takes every call with a ``_Held`` quick handler."""
    held = _Held()
    async with mux_pair(b_on_call=_unused, b_on_quick_call=held, stream_pair=_socket_pair()) as (a, b):
        yield a, b, held


async def _calls_waiting(a: MuxConnection, held: _Held, n: int, got: list[Any], nursery: trio.Nursery) -> None:
    async def call(i: int) -> None:
        got.append((await a.call(i)).body)

    for i in range(n):
        nursery.start_soon(call, i)
    await trio.testing.wait_all_tasks_blocked()
    assert len(held.answers) == n


async def test_a_lone_reply_is_written_in_the_answering_step() -> None:
    async with _pair() as (a, b, held):
        got: list[Any] = []
        async with trio.open_nursery() as nursery:
            await _calls_waiting(a, held, 1, got, nursery)
            writes = b.writes
            held.answers[0].reply("done")
            # No checkpoint since: the writer task has not run, yet the reply already left.
            assert b.writes == writes + 1
            assert not b._ctrl and not b._prio
        assert got == ["done"]


async def test_replies_answered_in_one_step_leave_in_one_write() -> None:
    # One round's apply answers many callers in one step: no other task is runnable, yet they must be joined.
    async with _pair() as (a, b, held):
        got: list[Any] = []
        async with trio.open_nursery() as nursery:
            await _calls_waiting(a, held, 3, got, nursery)
            writes = b.writes
            for i, answer in enumerate(held.answers):
                answer.reply(i * 10)
            assert b.writes == writes and len(b._ctrl) == 3  # queued for the writer, not written one by one
            await trio.testing.wait_all_tasks_blocked()
            assert b.writes == writes + 1  # the writer sent all three in one write
        assert sorted(got) == [0, 10, 20]


async def test_a_lone_reply_waits_for_the_writer_while_other_tasks_are_runnable() -> None:
    async with _pair() as (a, b, held):
        got: list[Any] = []
        async with trio.open_nursery() as nursery:
            await _calls_waiting(a, held, 1, got, nursery)
            writes = b.writes
            nursery.start_soon(trio.lowlevel.checkpoint)  # another task runnable: its reply may come this pass
            held.answers[0].reply("late")
            assert b.writes == writes and len(b._ctrl) == 1
        assert got == ["late"]


async def test_a_call_on_an_idle_connection_leaves_at_once_and_counts_as_sent() -> None:
    async with _pair() as (a, b, held), trio.open_nursery() as nursery:
        await trio.testing.wait_all_tasks_blocked()
        writes = a.writes

        async def call() -> None:
            await a.call("x")

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        assert a.writes == writes + 1 and a._ctrl_taken == a._ctrl_queued
        held.answers[0].reply(None)


async def test_frames_keep_their_order_when_the_writer_is_busy() -> None:
    # With frames already queued, a new control frame never overtakes them, runnable tasks or not.
    async with _pair() as (a, b, held):
        got: list[Any] = []
        async with trio.open_nursery() as nursery:
            await _calls_waiting(a, held, 2, got, nursery)
            first = b._codec.encode_reply(held_sid(b, 0), "first", {})
            b._ctrl.append(first)  # as if queued in a busy pass
            b._ctrl_queued += 1
            b._quick_calls.discard(held_sid(b, 0))
            b._inbound_busy -= 1
            b._kick()
            held.answers[1].reply("second")
            assert len(b._ctrl) == 2 and b._ctrl[0] is first  # behind the queued frame
        assert sorted(got) == ["first", "second"]


def held_sid(b: MuxConnection, i: int) -> int:
    return sorted(b._quick_calls)[i]


async def test_a_call_whose_inline_write_fails_was_not_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    # The socket refuses the write (the peer is gone): nothing of the call reached the peer, so the caller may
    # safely retry it anywhere, which NotDelivered says.
    async with _pair() as (a, _b, held):
        await trio.testing.wait_all_tasks_blocked()

        def broken(stream: trio.abc.Stream, blob: bytes) -> int:
            raise BrokenPipeError("the peer is gone")

        monkeypatch.setattr(mux, "_send_now", broken)
        with pytest.raises(errors.NotDelivered):
            await a.call("x")
        assert a.closed and not held.answers
