"""A hostile peer against one multiplexed connection (issue 14): PONGs it cannot take, floods of PINGs, calls and
streams, error replies holding huge integers. Each attack ends with that connection closed or refused with
``Overloaded``; nothing raises out of the connection's tasks, and a well-behaved peer is still served in time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

from borough import errors
from borough.wire import codec as c
from borough.wire.mux import IncomingCall, MuxConnection, handshake, make_hello, open_mux
from borough.wire.settings import WireSettings

SETTINGS = WireSettings(max_inbound_calls=4, max_open_streams=4, max_control_frames=64)


class RawPeer:
    """The hostile end: a bare codec on a stream, writing whatever frames it likes."""

    def __init__(self, stream: trio.abc.Stream, codec: c.FrameCodec) -> None:
        self.stream = stream
        self.codec = codec

    async def send_raw(self, sid: int, kind: int, payload_cbor: bytes) -> None:
        body = b"\x83" + cbor2.dumps(sid) + cbor2.dumps(kind) + payload_cbor
        await self.stream.send_all(len(body).to_bytes(4, "big") + body)

    async def events(self, n: int) -> list[c.Event]:
        out: list[c.Event] = []
        while len(out) < n:
            ev = self.codec.next_event()
            if isinstance(ev, c.NeedData):
                self.codec.receive_data(await self.stream.receive_some(65536))
                continue
            if isinstance(ev, c.ConnectionClosed):
                break
            out.append(ev)
        return out


@asynccontextmanager
async def hostile_pair(
    *, we_dial: bool, peer_max_frame: int = 1024 * 1024, lockstep: bool = False, on_call: Any = None
) -> AsyncIterator[tuple[MuxConnection, RawPeer]]:
    ours, theirs = trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
    our_role = c.Role.DIALER if we_dial else c.Role.ACCEPTOR
    their_role = c.Role.ACCEPTOR if we_dial else c.Role.DIALER
    peer_codec = c.FrameCodec(their_role, max_frame_size=1024 * 1024)
    peer_hello = c.Hello(cluster_id="c1", node_id="evil", address="e:1", window=65536, max_frame_size=peer_max_frame)
    codecs: dict[str, c.FrameCodec] = {}

    async def ours_side() -> None:
        codecs["ours"] = await handshake(
            ours,
            role=our_role,
            local=make_hello(SETTINGS, cluster_id="c1", node_id="good", address="g:1"),
            settings=SETTINGS,
        )

    async def their_side() -> None:
        if their_role is c.Role.DIALER:
            await theirs.send_all(peer_codec.send(peer_hello))
        while peer_codec.peer_hello is None:
            ev = peer_codec.next_event()
            if isinstance(ev, c.NeedData):
                peer_codec.receive_data(await theirs.receive_some(65536))
        if their_role is c.Role.ACCEPTOR:
            await theirs.send_all(peer_codec.send(peer_hello))

    async with trio.open_nursery() as n:
        n.start_soon(ours_side)
        n.start_soon(their_side)
    async with open_mux(ours, codecs["ours"], settings=SETTINGS, on_call=on_call, on_stream=stall_stream) as conn:
        yield conn, RawPeer(theirs, peer_codec)


async def stall_stream(_st: Any) -> None:
    await trio.sleep_forever()


async def stall_call(_call: IncomingCall) -> Any:
    await trio.sleep_forever()


def protocol_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "protocol error" in r.getMessage()]


async def test_a_ping_whose_pong_would_exceed_the_peers_frame_limit_closes_only_that_dialled_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="borough.wire")
    with trio.fail_after(5):
        async with hostile_pair(we_dial=True, peer_max_frame=1024) as (conn, peer):
            await peer.send_raw(0, c.Kind.PING, cbor2.dumps(7))
            assert await peer.events(1) == [c.Pong(nonce=7)]
            # Before: a bignum nonce made a PONG over the peer's 1024-byte limit, and LocalProtocolError killed the
            # node. Now the nonce is bounded to 64 bits, so no PONG we owe can be too big.
            await peer.send_raw(0, c.Kind.PING, cbor2.dumps(2**8000))
            await conn.wait_closed()
            assert isinstance(conn.close_reason, errors.RemoteProtocolError)
    assert protocol_errors(caplog)


async def test_error_replies_with_huge_integers_fail_the_call_not_the_node(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="borough.wire")
    with trio.fail_after(5):
        async with hostile_pair(we_dial=True) as (conn, peer):
            async with trio.open_nursery() as n:
                results: list[BaseException] = []

                async def call() -> None:
                    try:
                        await conn.call("hi")
                    except errors.BoroughError as exc:
                        results.append(exc)

                n.start_soon(call)
                [first] = await peer.events(1)
                assert isinstance(first, c.Call)
                # A NotFound whose key is a 64-byte bignum (the most allowed) arrives and prints ...
                key = 2**511 + 1
                err = {"type": "NotFound", "message": "m", "fields": {"key": key, "partition": "p"}}
                await peer.send_raw(first.stream_id, c.Kind.RESET, cbor2.dumps(err))
            assert isinstance(results[0], errors.NotFound) and str(key) in str(results[0])
            async with trio.open_nursery() as n:
                n.start_soon(call)
                [second] = await peer.events(1)
                # ... a bigger one is refused: the connection closes and the call fails as Unavailable.
                err["fields"] = {"key": 2**100_000}
                await peer.send_raw(second.stream_id, c.Kind.RESET, cbor2.dumps(err))
            assert isinstance(results[1], errors.Unavailable)
            assert isinstance(conn.close_reason, errors.RemoteProtocolError)
    assert any("big integer" in m for m in protocol_errors(caplog))


async def test_a_ping_flood_is_answered_up_to_the_control_bound_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="borough.wire")
    with trio.fail_after(10):
        async with hostile_pair(we_dial=False, lockstep=True) as (conn, peer):
            pings = b"".join(
                len(body).to_bytes(4, "big") + body
                for body in [cbor2.dumps([0, c.Kind.PING, i]) for i in range(20_000)]
            )
            await peer.stream.send_all(pings)  # never reading a PONG back
            await trio.testing.wait_all_tasks_blocked()  # the reader has handled every PING
            assert conn.pongs_dropped > 0
            assert len(conn._ctrl) <= SETTINGS.max_control_frames
            assert not conn.closed
    warnings = [r.getMessage() for r in caplog.records if "PINGs faster" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_call_flood_gets_overloaded_and_a_peer_that_never_reads_is_cut_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="borough.wire")
    with trio.fail_after(10):
        async with hostile_pair(we_dial=False, on_call=stall_call) as (conn, peer):
            for _ in range(10):
                await peer.send_raw(peer.codec.new_stream_id(), c.Kind.CALL, cbor2.dumps(["x", {}]))
            events = await peer.events(6)  # 6 refused calls: a RESET each (they attach no streams)
            resets = [ev for ev in events if isinstance(ev, c.Reset)]
            assert len(resets) == 6
            assert all(ev.error is not None and ev.error["type"] == "Overloaded" for ev in resets)
    with trio.fail_after(10):
        async with hostile_pair(we_dial=False, on_call=stall_call, lockstep=True) as (conn, peer):
            flood = b"".join(
                len(body).to_bytes(4, "big") + body
                for body in [cbor2.dumps([2 * i + 1, c.Kind.CALL, ["x", {}]]) for i in range(300)]
            )
            async with trio.open_nursery() as n:
                n.start_soon(peer.stream.send_all, flood)  # never reading the refusals
                await conn.wait_closed()
                n.cancel_scope.cancel()
            assert isinstance(conn.close_reason, errors.RemoteProtocolError)
    assert any("faster than it reads" in m for m in protocol_errors(caplog))


async def test_a_stream_flood_gets_overloaded() -> None:
    with trio.fail_after(10):
        async with hostile_pair(we_dial=False) as (conn, peer):
            for _ in range(8):
                await peer.send_raw(peer.codec.new_stream_id(), c.Kind.OPEN, cbor2.dumps(None))
            events = await peer.events(8)  # 4 refused streams: a RESET and a STOP each
            resets = [ev for ev in events if isinstance(ev, c.Reset)]
            assert [ev.stream_id for ev in resets] == [9, 11, 13, 15]
            assert all(ev.error is not None and ev.error["type"] == "Overloaded" for ev in resets)
            assert not conn.closed


# ---------------------------------------------------------------------------------------------------- a real node


@pytest.mark.e2e
async def test_a_node_under_hostile_frames_keeps_serving_a_good_client_within_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from borough.wire.network import TcpNetwork, parse_address
    from borough.wire.transport import Identity, open_transport

    caplog.set_level(logging.WARNING, logger="borough.wire")
    settings = WireSettings(max_control_frames=256)

    async def echo(_peer: Any, call: IncomingCall) -> Any:
        return call.body

    async with (
        open_transport(
            TcpNetwork(),
            identity=Identity(node_id="srv", cluster_id="c1"),
            listen="127.0.0.1:0",
            on_call=echo,
            settings=settings,
        ) as server,
        open_transport(
            TcpNetwork(), identity=Identity(node_id="cli", cluster_id="c1"), listen="127.0.0.1:0", settings=settings
        ) as client,
    ):
        addr = server.listen_address
        assert addr is not None
        slowest = 0.0
        served = 0
        stop = trio.Event()

        async def good_client() -> None:
            nonlocal slowest, served
            while not stop.is_set():
                start = trio.current_time()
                with trio.fail_after(1.0):  # the good client's deadline
                    assert (await client.call(addr, {"n": served})).body == {"n": served}
                slowest = max(slowest, trio.current_time() - start)
                served += 1
                await trio.sleep(0.002)

        async def offender(*frames: bytes) -> None:
            host, port = parse_address(addr)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                codec = c.FrameCodec(c.Role.DIALER, max_frame_size=settings.max_frame_size)
                await stream.send_all(codec.send(make_hello(settings, cluster_id="c1", node_id="x", address=None)))
                with trio.move_on_after(3):
                    try:
                        for f in frames:
                            await stream.send_all(f)
                        while await stream.receive_some(65536):
                            pass
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

        def frame(body: bytes) -> bytes:
            return len(body).to_bytes(4, "big") + body

        def bignum(n: int, seed: int) -> bytes:
            return b"\xc2" + c._uint_header(2, n) + bytes((seed + i * 7) % 251 + 1 for i in range(n))

        fraction = b"\xd8\x1e\x82" + bignum(128 * 1024, 1) + bignum(128 * 1024, 2)
        n_maps = 8 * 1024 * 1024 - 64
        pings = b"".join(frame(cbor2.dumps([0, c.Kind.PING, i])) for i in range(50_000))
        calls = b"".join(frame(cbor2.dumps([2 * i + 1, c.Kind.CALL, [{"n": i}, {}]])) for i in range(5000))
        async with trio.open_nursery() as n:
            n.start_soon(good_client)
            await trio.sleep(0.05)
            async with trio.open_nursery() as attacks:
                for _ in range(8):  # the eight tag-30 handshakes, here just after the handshake
                    attacks.start_soon(offender, frame(b"\x83\x00\x09" + fraction))
                attacks.start_soon(offender, frame(b"\x83\x00\x09" + c._uint_header(4, n_maps) + b"\xa0" * n_maps))
                attacks.start_soon(offender, pings)
                attacks.start_soon(offender, calls)
            await trio.sleep(0.05)
            stop.set()
        assert served > 10
        print(f"\ngood client: {served} calls served, slowest {slowest * 1000:.1f} ms while under attack")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("big integer (tag 2)" in m for m in messages) == 8
    assert any("data items" in m for m in messages)


# --- connections to a listener ------------------------------------------------------------------------------------


async def test_a_flood_of_connections_that_never_speak_is_bounded_and_a_good_client_still_gets_in() -> None:
    from borough.client import open_client
    from borough.node.node import open_node
    from borough.wire.network import TcpNetwork

    async with open_node(listen="127.0.0.1:0", data_dir=None, max_handshaking=8, max_connections=64) as node:
        address = node.address
        silent = [await TcpNetwork().connect(address) for _ in range(40)]  # open TCP, never say HELLO
        try:
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert node.transport.refused_connections >= 40 - 8  # closed at once, not queued
            async with open_client([address], request_timeout=10.0) as client:
                # The silent ones hold their handshake slots until connect_timeout (5 s) ends them; then a good
                # client gets in (and they cannot hold more than max_handshaking slots meanwhile).
                with trio.fail_after(10):
                    await client.partition("p").put("k", 1)
                    assert await client.partition("p").get("k") == 1
        finally:
            for stream in silent:
                await stream.aclose()


async def test_connections_that_fail_their_handshake_are_counted_and_their_log_lines_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from borough.node.node import open_node
    from borough.wire.network import TcpNetwork

    async with open_node(listen="127.0.0.1:0", data_dir=None) as node:
        with caplog.at_level(logging.WARNING, logger="borough.wire.transport"):
            for _ in range(50):
                stream = await TcpNetwork().connect(node.address)
                await stream.send_all(b"\x00\x00\x00\x05garbage and more")
                with trio.move_on_after(2):
                    while await stream.receive_some(1024):
                        pass
                await stream.aclose()  # the node closed it first: its refusal was counted by then
        lines = [r for r in caplog.records if "closing the connection from" in r.getMessage()]
        assert len(lines) <= 10  # fifty refused; at most ten said so within the window
        assert node.transport.failed_handshakes == 50
        await node.partition("p").put("k", 1)  # and it serves on
