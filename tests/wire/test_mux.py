"""The multiplexed connection: stream conformance, calls, errors, flow control, priority lane, liveness."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from borough import errors
from borough.wire.mux import IncomingCall, MuxStream, Reply
from borough.wire.records import CallAnswer
from borough.wire.settings import WireSettings

from .helpers import chunks, collect, mux_pair


async def _stream_maker_pair(nursery: trio.Nursery, settings: WireSettings | None = None):
    accepted: trio.MemorySendChannel[MuxStream]
    accepted, accepted_r = trio.open_memory_channel[MuxStream](100)

    async def on_stream(st: MuxStream) -> None:
        await accepted.send(st)
        await trio.sleep_forever()

    async def maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        a, _b = pair
        s1 = await a.open_stream({"purpose": "test"})
        s2 = await accepted_r.receive()
        assert s2.header == {"purpose": "test"}
        return s1, s2

    pair: tuple[Any, Any]
    cm = mux_pair(settings=settings, b_on_stream=on_stream)
    pair = await cm.__aenter__()
    return cm, maker


async def _hang(cancelled: trio.Event) -> None:
    """A handler's wait that never ends by itself; ``cancelled`` is set when it is cancelled."""
    try:
        await trio.sleep_forever()
    finally:
        cancelled.set()


async def test_check_half_closeable_stream() -> None:
    async with trio.open_nursery() as n:
        cm, maker = await _stream_maker_pair(n)
        try:
            await trio.testing.check_half_closeable_stream(maker, None)
        finally:
            await cm.__aexit__(None, None, None)


async def test_check_two_way_stream_small_window() -> None:
    # A tiny window makes the random-size transfers of the conformance test wait on credit constantly.
    settings = WireSettings(window=1024, data_frame_size=512)
    async with trio.open_nursery() as n:
        cm, maker = await _stream_maker_pair(n, settings)
        try:
            await trio.testing.check_two_way_stream(maker, None)
        finally:
            await cm.__aexit__(None, None, None)


async def test_call_round_trip_and_typed_errors() -> None:
    async def handler(call: IncomingCall) -> Any:
        op = call.body["op"]
        if op == "echo":
            return call.body["x"]
        if op == "notfound":
            raise errors.NotFound(call.body["x"], partition="p1")
        if op == "notleader":
            raise errors.NotLeader("p1", leader="n3", leader_address="h3:1")
        if op == "overloaded":
            raise errors.Overloaded("too busy; back off")
        if op == "boom":
            raise ValueError("bad stock")
        raise AssertionError(op)

    async with mux_pair(b_on_call=handler) as (a, _b):
        assert await a.call({"op": "echo", "x": [1, "two", b"3"]}) == Reply([1, "two", b"3"], {})
        with pytest.raises(errors.NotFound) as nf:
            await a.call({"op": "notfound", "x": "k"})
        assert (nf.value.key, nf.value.partition) == ("k", "p1")
        assert str(nf.value) == "key 'k' not found in partition 'p1'"
        with pytest.raises(errors.NotLeader) as nl:
            await a.call({"op": "notleader"})
        assert (nl.value.leader, nl.value.leader_address) == ("n3", "h3:1")
        with pytest.raises(errors.Overloaded, match="too busy; back off"):
            await a.call({"op": "overloaded"})
        with pytest.raises(errors.RemoteError) as re:
            await a.call({"op": "boom"})
        assert (re.value.type_name, re.value.message) == ("ValueError", "bad stock")


async def test_calls_both_directions_and_many_concurrent() -> None:
    async def double(call: IncomingCall) -> Any:
        await trio.sleep(0.001 * (call.body % 7))
        return call.body * 2

    results: dict[int, Any] = {}
    async with mux_pair(a_on_call=double, b_on_call=double) as (a, b):

        async def one(conn: Any, i: int) -> None:
            results[i] = (await conn.call(i)).body

        async with trio.open_nursery() as n:
            for i in range(200):
                n.start_soon(one, a if i % 2 else b, i)
    assert results == {i: 2 * i for i in range(200)}


async def test_streams_attached_to_call_and_reply() -> None:
    payload = bytes(range(256)) * 4000  # ~1 MB, several windows

    async def handler(call: IncomingCall) -> Any:
        got = await collect(call.streams["up"])
        return Reply({"n": len(got)}, streams={"down": chunks(got[::-1], 10_000)})

    async with mux_pair(b_on_call=handler) as (a, _b):
        reply = await a.call({"op": "reverse"}, streams={"up": chunks(payload, 7000)})
        assert reply.body == {"n": len(payload)}
        assert await collect(reply.streams["down"]) == payload[::-1]


async def test_receive_stream_source_is_consumed_and_closed() -> None:
    send, recv = trio.testing.memory_stream_one_way_pair()

    async def handler(call: IncomingCall) -> Any:
        return await collect(call.streams["s"])

    async with mux_pair(b_on_call=handler) as (a, _b):
        async with trio.open_nursery() as n:

            async def feed() -> None:
                await send.send_all(b"hello ")
                await send.send_all(b"world")
                await send.aclose()

            n.start_soon(feed)
            reply = await a.call(None, streams={"s": recv})
        assert reply.body == b"hello world"
    with pytest.raises(trio.ClosedResourceError):
        await recv.receive_some(1)


async def test_failing_source_resets_stream_with_error() -> None:
    async def bad_source():  # type: ignore[no-untyped-def]
        yield b"abc"
        raise ValueError("disk on fire")

    async def handler(call: IncomingCall) -> Any:
        with pytest.raises(trio.BrokenResourceError) as exc_info:
            await collect(call.streams["s"])
        cause = exc_info.value.__cause__
        assert isinstance(cause, errors.RemoteError) and cause.type_name == "ValueError"
        return "saw the failure"

    async with mux_pair(b_on_call=handler) as (a, _b):
        assert (await a.call(None, streams={"s": bad_source()})).body == "saw the failure"


async def test_cancelling_a_call_cancels_the_handler(autojump_clock: trio.testing.MockClock) -> None:
    started, cancelled = trio.Event(), trio.Event()

    async def handler(call: IncomingCall) -> Any:
        if call.body != "hang":
            return call.body
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with mux_pair(b_on_call=handler) as (a, b):
        with trio.move_on_after(1):
            await a.call("hang")
        with trio.fail_after(1):
            await cancelled.wait()
        assert started.is_set()
        assert b._inbound_busy == 0 and not a._calls
        assert (await a.call("still works")).body == "still works"


async def test_a_call_with_a_deadline_raises_too_slow_then_and_cancels_the_handler_with_no_timer_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``call(deadline=...)`` bounds a call as a cancel scope would (the peer's handler is cancelled), with no
    scope of its own; once the last bounded call's deadline has passed, the connection keeps no timer."""
    cancelled = trio.Event()

    async def handler(call: IncomingCall) -> Any:
        if call.body != "hang":
            await trio.sleep(call.body)
            return call.body
        return await _hang(cancelled)

    async with mux_pair(b_on_call=handler) as (a, b):
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await a.call("hang", deadline=start + 1.5)
        assert trio.current_time() - start == pytest.approx(1.5)
        with trio.fail_after(1):
            await cancelled.wait()
        assert b._inbound_busy == 0 and not a._calls
        # Answered in time: the reply; the watcher ends at the last bounded call's deadline.
        assert (await a.call(0.5, deadline=trio.current_time() + 1)).body == 0.5
        assert a._watching
        await trio.sleep(0.5)
        await trio.testing.wait_all_tasks_blocked()
        assert not a._watching and a._deadline_wake is None and not a._deadlines
        # A deadline earlier than the one the watcher sleeps until still wins.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: a.call(3.0, deadline=trio.current_time() + 10))
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                await a.call("hang", deadline=start + 0.25)
            assert trio.current_time() - start == pytest.approx(0.25)
        # Past the deadline already: refused at once, and the connection still works.
        with pytest.raises(trio.TooSlowError):
            await a.call(0.1, deadline=trio.current_time())
        assert (await a.call(0.0, deadline=trio.current_time() + 1)).body == 0.0


async def test_bounded_calls_that_finish_do_not_pile_up(autojump_clock: trio.testing.MockClock) -> None:
    """Finished calls leave the deadline heap when the watcher next wakes, or are swept out once it holds many
    more entries than calls in flight: its size stays bounded by the calls in flight, not by the calls made."""

    async def handler(call: IncomingCall) -> Any:
        return call.body

    async with mux_pair(b_on_call=handler) as (a, _b):
        for i in range(5_000):
            assert (await a.call(i, deadline=trio.current_time() + 60)).body == i
        assert len(a._deadlines) <= 1024 + 1


async def test_a_handler_bounded_through_its_call_is_cancelled_at_the_deadline_and_the_caller_gets_its_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``IncomingCall.bound``: the handler hands its deadline to the scope the wire runs it in (one scope a call);
    once it passes the handler is cancelled, the caller gets the handler's error, and the slot is free again."""
    cancelled = trio.Event()

    async def handler(call: IncomingCall) -> Any:
        if call.body != "hang":
            return call.body
        assert call.bound is not None
        call.bound.limit(trio.current_time() + 3, lambda: errors.Timeout("hang took too long"))
        return await _hang(cancelled)

    async with mux_pair(b_on_call=handler) as (a, b):
        start = trio.current_time()
        with pytest.raises(errors.Timeout, match="hang took too long"):
            await a.call("hang")
        assert trio.current_time() - start == pytest.approx(3, abs=0.1)
        assert cancelled.is_set()
        assert b._inbound_busy == 0 and not b._inbound_calls and not a._calls
        assert (await a.call("still works")).body == "still works"


async def test_a_bounded_handler_the_caller_gave_up_on_sends_no_error(autojump_clock: trio.testing.MockClock) -> None:
    """The caller's RESET cancels a bounded handler as any other: nothing is sent back for the call."""
    cancelled = trio.Event()

    async def handler(call: IncomingCall) -> Any:
        assert call.bound is not None
        call.bound.limit(trio.current_time() + 30, lambda: errors.Timeout("never sent"))
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with mux_pair(b_on_call=handler) as (a, b):
        resets: list[int] = []
        encode_reset = b._codec.encode_reset

        def record(sid: int, error: Any) -> bytes:
            resets.append(sid)
            return encode_reset(sid, error)

        b._codec.encode_reset = record  # type: ignore[method-assign]
        with trio.move_on_after(1):
            await a.call("hang")
        with trio.fail_after(1):
            await cancelled.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert b._inbound_busy == 0 and not b._inbound_calls
        assert resets == []  # no error answers a call its caller reset


async def test_connection_loss_mid_call_raises_unavailable(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(call: IncomingCall) -> Any:
        await trio.sleep_forever()

    async with mux_pair(b_on_call=handler) as (a, b):

        async def kill() -> None:
            await trio.sleep(0.5)
            await b.aclose("shutting down")

        async with trio.open_nursery() as n:
            n.start_soon(kill)
            with pytest.raises(errors.Unavailable, match="a@a:1|b@b:1"):
                await a.call("x")
        assert a.closed or not a.usable


async def test_overloaded_when_too_many_inbound_calls(autojump_clock: trio.testing.MockClock) -> None:
    settings = WireSettings(max_inbound_calls=3)
    release = trio.Event()

    async def handler(call: IncomingCall) -> Any:
        await release.wait()
        return call.body

    async with mux_pair(settings=settings, b_on_call=handler) as (a, _b):
        outcomes: list[Any] = []

        async def one(i: int) -> None:
            try:
                outcomes.append((await a.call(i)).body)
            except errors.Overloaded as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as n:
            for i in range(5):
                n.start_soon(one, i)
            await trio.sleep(1)
            release.set()
        assert sum(isinstance(x, int) for x in outcomes) == 3
        assert sum(isinstance(x, errors.Overloaded) for x in outcomes) == 2


async def test_too_large_call_body_raises_before_sending() -> None:
    settings = WireSettings(max_frame_size=64 * 1024, data_frame_size=16 * 1024)

    async def handler(call: IncomingCall) -> Any:
        raise AssertionError("must not be called")

    async with mux_pair(settings=settings, b_on_call=handler) as (a, _b):
        with pytest.raises(errors.LocalProtocolError, match="maximum frame size"):
            await a.call(b"x" * 100_000)
        with pytest.raises(errors.LocalProtocolError, match="CBOR"):
            await a.call(object())
        assert a.usable


async def test_messages_delivered_in_order_and_dropped_when_full() -> None:
    got: list[Any] = []
    settings = WireSettings(priority_queue_limit=10)
    async with mux_pair(settings=settings, b_on_message=got.append) as (a, _b):
        sent = [a.send_message({"i": i}) for i in range(25)]
        assert sent == [True] * 10 + [False] * 15
        assert a.messages_dropped == 15
        await trio.testing.wait_all_tasks_blocked()
        assert got == [{"i": i} for i in range(10)]
        for i in range(10, 15):
            assert a.send_message({"i": i})
        await trio.testing.wait_all_tasks_blocked()
        assert got == [{"i": i} for i in range(15)]


async def test_messages_for_a_peer_that_does_not_read_are_bounded_in_bytes() -> None:
    got: list[Any] = []
    settings = WireSettings(priority_queue_bytes=10_000)
    async with mux_pair(settings=settings, b_on_message=got.append) as (a, _b):
        sent = [a.send_message(b"x" * 1000) for _ in range(25)]  # each frame ~1010 bytes: 9 fit in 10,000
        assert sent == [True] * 9 + [False] * 16
        assert a.messages_dropped == 16
        await trio.testing.wait_all_tasks_blocked()
        assert len(got) == 9
        assert a.send_message(b"x" * 1000)  # the writer took the queue: room again
        await trio.testing.wait_all_tasks_blocked()
        assert len(got) == 10


async def test_writer_batches_queued_messages_into_one_write() -> None:
    got: list[Any] = []
    async with mux_pair(b_on_message=got.append) as (a, _b):
        await trio.testing.wait_all_tasks_blocked()
        writes = a.writes
        for i in range(100):
            a.send_message(i)
        await trio.testing.wait_all_tasks_blocked()
        assert got == list(range(100))
        assert a.writes == writes + 1


async def test_keepalive_detects_dead_peer(autojump_clock: trio.testing.MockClock) -> None:
    # A peer that stops sending (and answering pings) is declared dead within the liveness timeout.
    settings = WireSettings(keepalive_interval=1, liveness_timeout=3, idle_timeout=1000)
    a_send, b_recv = trio.testing.memory_stream_one_way_pair()
    b_send, a_recv = trio.testing.memory_stream_one_way_pair()
    pair = (trio.StapledStream(a_send, a_recv), trio.StapledStream(b_send, b_recv))
    async with mux_pair(settings=settings, stream_pair=pair) as (a, _b):
        await trio.sleep(10)
        assert a.usable  # pings and pongs keep a healthy idle link alive

        async def black_hole() -> None:
            await b_send.get_data()  # discard: from now on nothing b writes reaches a

        b_send.send_all_hook = black_hole
        start = trio.current_time()
        await a.wait_closed()
        assert 1 <= trio.current_time() - start <= 3.5  # liveness_timeout after the last byte received
        assert isinstance(a.close_reason, errors.Unavailable)
        assert "liveness" in str(a.close_reason)


async def test_keepalive_keeps_idle_healthy_link_up(autojump_clock: trio.testing.MockClock) -> None:
    settings = WireSettings(keepalive_interval=1, liveness_timeout=3, idle_timeout=50)
    async with mux_pair(settings=settings) as (a, b):
        await trio.sleep(30)
        assert a.usable and b.usable
        await trio.sleep(25)  # now idle past idle_timeout: closed gracefully
        assert a.closed and b.closed


async def test_reply_streams_can_be_closed_unread_and_free_the_peer(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(call: IncomingCall) -> Any:
        return Reply("big", streams={"a": chunks(b"a" * 1_000_000, 4096), "b": chunks(b"b" * 1_000_000, 4096)})

    async with mux_pair(b_on_call=handler) as (a, b):
        async with await a.call("x") as reply:
            assert await reply.streams["a"].receive_some(10) == b"a" * 10
        await trio.sleep(1)
        assert b._inbound_busy == 0 and not b._streams and not a._streams


async def test_open_stream_refused_without_a_handler() -> None:
    async with mux_pair() as (a, _b):
        st = await a.open_stream({"want": "stream"})
        with pytest.raises(trio.BrokenResourceError) as exc_info:
            await st.receive_some()
        assert isinstance(exc_info.value.__cause__, errors.Overloaded)
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(100):
                await st.send_all(b"x" * 10_000)


# --- quick calls: answered later, without a task ------------------------------------------------------------------


async def plain(call: IncomingCall) -> Any:
    return ("handler", call.body)


class QuickTaker:
    """A quick handler that takes calls whose body is a dict with ``"quick"`` and keeps their answers."""

    def __init__(self) -> None:
        self.answers: dict[Any, CallAnswer] = {}

    def __call__(self, call: IncomingCall, answer: CallAnswer) -> bool:
        if not isinstance(call.body, dict) or "quick" not in call.body:
            return False
        if call.body["quick"] == "now":
            answer.reply("answered at once")
        elif call.body["quick"] == "raise":
            raise RuntimeError("a bug in the quick handler")
        else:
            self.answers[call.body["quick"]] = answer
        return True


async def test_a_quick_call_is_answered_later_without_a_task_and_the_rest_go_to_the_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    quick = QuickTaker()

    async with mux_pair(b_on_call=plain, b_on_quick_call=quick) as (a, b):
        assert (await a.call({"quick": "now"})).body == "answered at once"
        assert (await a.call("plain")).body == ["handler", "plain"]
        async with trio.open_nursery() as nursery:
            got: dict[str, Any] = {}

            async def call(key: str) -> None:
                try:
                    got[key] = (await a.call({"quick": key})).body
                except errors.BoroughError as exc:
                    got[key] = exc

            nursery.start_soon(call, "x")
            nursery.start_soon(call, "y")
            await trio.testing.wait_all_tasks_blocked()
            assert set(quick.answers) == {"x", "y"} and b._inbound_busy == 2
            quick.answers["y"].fail(errors.NotFound("k", partition="p"))
            quick.answers["x"].reply("late")
            quick.answers["x"].reply("twice")  # a second answer is ignored
        assert got["x"] == "late"
        assert isinstance(got["y"], errors.NotFound)
        assert b._inbound_busy == 0 and not b._quick_calls


async def test_a_reset_quick_call_drops_its_answer_and_frees_its_slot_when_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    quick = QuickTaker()
    async with mux_pair(b_on_call=plain, b_on_quick_call=quick) as (a, b):
        with trio.move_on_after(1):
            await a.call({"quick": "slow"})
        await trio.testing.wait_all_tasks_blocked()
        assert not b._quick_calls and b._inbound_busy == 1  # its read still holds the slot
        quick.answers["slow"].reply("too late")
        assert b._inbound_busy == 0
        assert (await a.call({"quick": "now"})).body == "answered at once"


async def test_quick_calls_count_against_the_inbound_call_limit(autojump_clock: trio.testing.MockClock) -> None:
    quick = QuickTaker()
    settings = WireSettings(max_inbound_calls=2)
    async with (
        mux_pair(settings=settings, b_on_call=plain, b_on_quick_call=quick) as (a, b),
        trio.open_nursery() as nursery,
    ):
        for key in ("p", "q"):
            nursery.start_soon(a.call, {"quick": key})
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(errors.Overloaded):
            await a.call({"quick": "r"})
        for answer in quick.answers.values():
            answer.reply("ok")


async def test_a_quick_handler_that_raises_fails_that_call_and_the_connection_lives(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    quick = QuickTaker()
    async with mux_pair(b_on_call=plain, b_on_quick_call=quick) as (a, b):
        with pytest.raises(errors.RemoteError, match="a bug in the quick handler"):
            await a.call({"quick": "raise"})
        assert b._inbound_busy == 0 and not b.closed
        assert (await a.call({"quick": "now"})).body == "answered at once"
    assert "a quick call handler" in caplog.text


async def test_a_quick_answer_after_the_connection_closed_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    quick = QuickTaker()
    async with mux_pair(b_on_call=plain, b_on_quick_call=quick) as (a, b):
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                with pytest.raises(errors.Unavailable):
                    await a.call({"quick": "held"})

            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            await b.aclose("going away")
        quick.answers["held"].reply("nobody listens")  # no error, nothing queued
        assert b.closed and not b._ctrl
