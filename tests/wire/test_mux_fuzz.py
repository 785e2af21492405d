"""Fuzzing a live ``MuxConnection`` with hostile but well-framed peers, and random workloads over a faulty
simulated network. The connection must either cope or close with a ``RemoteProtocolError``; it must never raise
anything else into its nursery, hang, or leak calls and streams. Hypothesis prints the failing example."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from borough import errors
from borough.wire import codec as c
from borough.wire.mux import IncomingCall, Reply, make_hello, open_mux
from borough.wire.settings import WireSettings

from .helpers import chunks, collect, mux_pair

SETTINGS = WireSettings(window=1024, data_frame_size=512, max_frame_size=16 * 1024, max_inbound_calls=64)

payloads = st.one_of(
    st.none(),
    st.integers(-3, 2**32),
    st.binary(max_size=1500),
    st.text(max_size=10),
    st.dictionaries(
        st.sampled_from(["type", "message", "fields", "x"]), st.text(max_size=5) | st.integers(), max_size=3
    ),
    st.lists(
        st.none() | st.integers(0, 20) | st.dictionaries(st.text(max_size=3), st.integers(1, 40), max_size=3),
        max_size=3,
    ),
)

frames = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 40), payloads),
    min_size=1,
    max_size=25,
)


async def _hostile_peer_session(script: list[tuple[int, int, Any]]) -> None:
    async def handler(call: IncomingCall) -> Any:
        for stream in call.streams.values():
            await collect(stream)
        return Reply(call.body, streams={"back": chunks(b"r" * 3000, 700)})

    ours, theirs = trio.testing.memory_stream_pair()
    codec = c.FrameCodec(c.Role.ACCEPTOR, max_frame_size=SETTINGS.max_frame_size)
    peer_codec = c.FrameCodec(c.Role.DIALER, max_frame_size=SETTINGS.max_frame_size)
    hello = make_hello(SETTINGS, cluster_id="c", node_id="peer", address=None)
    codec.receive_data(peer_codec.send(hello))
    assert isinstance(codec.next_event(), c.Hello)
    codec.send(make_hello(SETTINGS, cluster_id="c", node_id="me", address=None))
    got: list[Any] = []

    async def drain_peer_side() -> None:
        try:
            while await theirs.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as n:
        n.start_soon(drain_peer_side)
        async with open_mux(ours, codec, settings=SETTINGS, on_call=handler, on_message=got.append) as conn:
            for sid, kind, payload in script:
                body = cbor2.dumps([sid, kind, payload])
                try:
                    await theirs.send_all(len(body).to_bytes(4, "big") + body)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                await trio.sleep(0.01)
            await trio.sleep(1)
            reason = conn.close_reason
            assert reason is None or isinstance(reason, errors.RemoteProtocolError | errors.Unavailable), repr(reason)
        n.cancel_scope.cancel()
    assert not conn._inbound_calls and conn._inbound_busy == 0


@pytest.mark.soak
@given(frames)
def test_fuzz_hostile_peer_frames(script: list[tuple[int, int, Any]]) -> None:
    trio.run(_hostile_peer_session, script, clock=trio.testing.MockClock(autojump_threshold=0))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("call"), st.integers(0, 5000), st.integers(0, 5000)),
        st.tuples(st.just("message"), st.integers(0, 100), st.just(0)),
        st.tuples(st.just("cancel"), st.integers(1, 30), st.just(0)),
    ),
    min_size=1,
    max_size=20,
)


async def _workload(script: list[tuple[str, int, int]]) -> None:
    async def handler(call: IncomingCall) -> Any:
        up = await collect(call.streams["up"]) if "up" in call.streams else b""
        await trio.sleep(0.001 * (len(up) % 7))
        return Reply({"n": len(up)}, streams={"down": chunks(b"d" * call.body["down"], 333)})

    received: list[Any] = []
    async with mux_pair(settings=SETTINGS, b_on_call=handler, b_on_message=received.append) as (a, b):
        sent: list[Any] = []
        async with trio.open_nursery() as n:
            for i, (op, x, y) in enumerate(script):
                if op == "call":

                    async def one(up: int = x, down: int = y) -> None:
                        reply = await a.call({"down": down}, streams={"up": chunks(b"u" * up, 257)})
                        assert reply.body == {"n": up}
                        assert await collect(reply.streams["down"]) == b"d" * down

                    n.start_soon(one)
                elif op == "message":
                    if a.send_message([i, x]):
                        sent.append([i, x])
                else:

                    async def cancelled(after: int = x) -> None:
                        with trio.move_on_after(after / 1000):
                            reply = await a.call({"down": 100_000}, streams={"up": chunks(b"u" * 100_000, 1000)})
                            async with reply:
                                await trio.sleep(after / 1000)  # read some of it, maybe, then close

                    n.start_soon(cancelled)
        await trio.sleep(1)
        assert received == sent
        assert not a._calls and not b._inbound_calls and b._inbound_busy == 0
        assert not a._streams and not b._streams, (a._streams, b._streams)


@pytest.mark.soak
@given(ops)
def test_fuzz_random_workloads_leave_no_state_behind(script: list[tuple[str, int, int]]) -> None:
    trio.run(_workload, script, clock=trio.testing.MockClock(autojump_threshold=0))
