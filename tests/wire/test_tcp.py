"""Over real loopback TCP: calls and streams, a 64 MiB stream in bounded memory, many streams with a stalled
reader, and a server fed garbage while a well-behaved client is served the whole time."""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from borough import errors
from borough.wire import codec as c
from borough.wire.mux import IncomingCall, PeerInfo, Reply, make_hello
from borough.wire.network import TcpNetwork, parse_address
from borough.wire.settings import WireSettings
from borough.wire.transport import Identity, Transport, open_transport

from .helpers import chunks, collect

pytestmark = pytest.mark.e2e

SETTINGS = WireSettings(connect_timeout=5.0)


class Inbox(list[Any]):
    """A list that wakes a waiter once it holds ``n`` items."""

    def __init__(self) -> None:
        super().__init__()
        self._want = 0
        self._event = trio.Event()

    def append(self, item: Any) -> None:
        super().append(item)
        if len(self) >= self._want:
            self._event.set()

    async def wait_for(self, n: int) -> None:
        self._want, self._event = n, trio.Event()
        if len(self) >= n:
            return
        await self._event.wait()


async def serve_handler(peer: PeerInfo, call: IncomingCall) -> Any:
    body = call.body
    if isinstance(body, dict) and body.get("op") == "count":
        total = 0
        st = call.streams["s"]
        while chunk := await st.receive_some():
            total += len(chunk)
        return total
    if isinstance(body, dict) and body.get("op") == "stall":
        await trio.sleep_forever()
    if isinstance(body, dict) and body.get("op") == "missing":
        raise errors.NotFound(body["key"], partition="p")
    if isinstance(body, dict) and body.get("op") == "download":
        return Reply("ok", streams={"d": chunks(b"d" * body["n"], 50_000)})
    return body


@asynccontextmanager
async def server_and_client(
    settings: WireSettings = SETTINGS, on_message: Any = None
) -> AsyncIterator[tuple[Transport, Transport]]:
    async with (
        open_transport(
            TcpNetwork(),
            identity=Identity(node_id="srv", cluster_id="c1"),
            listen="127.0.0.1:0",
            on_call=serve_handler,
            on_message=on_message,
            settings=settings,
        ) as server,
        open_transport(
            TcpNetwork(), identity=Identity(node_id="cli", cluster_id="c1"), listen="127.0.0.1:0", settings=settings
        ) as client,
    ):
        yield server, client


async def test_calls_messages_and_streams_over_tcp() -> None:
    got = Inbox()
    async with server_and_client(on_message=lambda peer, m: got.append((peer.node_id, m))) as (server, client):
        addr = server.listen_address
        assert addr is not None and parse_address(addr)[1] != 0
        assert (await client.call(addr, {"x": [1, 2]})).body == {"x": [1, 2]}
        with pytest.raises(errors.NotFound) as exc_info:
            await client.call(addr, {"op": "missing", "key": b"k"})
        assert exc_info.value.key == b"k"
        reply = await client.call(addr, {"op": "count"}, streams={"s": chunks(b"u" * 3_000_000, 100_000)})
        assert reply.body == 3_000_000
        reply = await client.call(addr, {"op": "download", "n": 2_000_000})
        assert await collect(reply.streams["d"]) == b"d" * 2_000_000
        for i in range(100):
            assert client.send(addr, i)
        with trio.fail_after(5):
            await got.wait_for(100)
        assert got == [("cli", i) for i in range(100)]


async def test_64_mib_stream_in_memory_bounded_by_windows() -> None:
    size, piece = 64 * 1024 * 1024, 256 * 1024
    seen_max_buffered = 0

    async def measure(peer: PeerInfo, call: IncomingCall) -> Any:
        nonlocal seen_max_buffered
        st = call.streams["s"]
        total = 0
        while chunk := await st.receive_some():
            total += len(chunk)
        seen_max_buffered = st.max_buffered  # type: ignore[attr-defined]
        return total

    async def source() -> AsyncIterator[bytes]:
        block = bytes(piece)
        for _ in range(size // piece):
            yield block

    async with server_and_client() as (server, client):
        server._on_call = measure
        assert server.listen_address is not None
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            reply = await client.call(server.listen_address, "upload", streams={"s": source()})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert reply.body == size
        assert seen_max_buffered <= SETTINGS.window
        # Both ends live in this process: windows, frames in flight and socket reads, never the whole 64 MiB.
        assert peak < 12 * 1024 * 1024, f"peak traced memory {peak} bytes"


async def test_hundred_streams_with_one_stalled_reader_over_tcp() -> None:
    settings = WireSettings(window=32 * 1024)
    got = Inbox()
    async with server_and_client(settings, on_message=lambda peer, m: got.append(m)) as (server, client):
        addr = server.listen_address
        assert addr is not None
        results = Inbox()
        async with trio.open_nursery() as n:
            n.start_soon(lambda: client.call(addr, {"op": "stall"}, streams={"s": chunks(bytes(1_000_000), 8192)}))

            async def one() -> None:
                results.append(
                    (await client.call(addr, {"op": "count"}, streams={"s": chunks(bytes(200_000), 8192)})).body
                )

            await trio.sleep(0.05)
            for _ in range(99):
                n.start_soon(one)
            for k in range(50):
                client.send(addr, k)
            with trio.fail_after(30):
                await results.wait_for(99)
                await got.wait_for(50)
            n.cancel_scope.cancel()
        assert results == [200_000] * 99
        assert got == list(range(50))


async def raw_connect(address: str) -> trio.SocketStream:
    host, port = parse_address(address)
    return await trio.open_tcp_stream(host, port)


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    with trio.fail_after(5):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass
    return bytes(data)


async def test_server_survives_garbage_while_serving_a_good_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="borough.wire")
    async with server_and_client() as (server, client):
        addr = server.listen_address
        assert addr is not None
        good_calls = 0
        stop = trio.Event()

        async def good_client() -> None:
            nonlocal good_calls
            while not stop.is_set():
                assert (await client.call(addr, {"n": good_calls})).body == {"n": good_calls}
                good_calls += 1
                await trio.sleep(0.001)

        async def offender(payload: bytes, *, handshake_first: bool = False, eof: bool = True) -> bytes:
            stream = await raw_connect(addr)
            async with stream:
                if handshake_first:
                    codec = c.FrameCodec(c.Role.DIALER, max_frame_size=SETTINGS.max_frame_size)
                    await stream.send_all(codec.send(make_hello(SETTINGS, cluster_id="c1", node_id="x", address=None)))
                await stream.send_all(payload)
                if eof:
                    await stream.send_eof()
                return await read_until_closed(stream)

        hello_frame = c.FrameCodec(c.Role.DIALER, max_frame_size=SETTINGS.max_frame_size).send(
            make_hello(SETTINGS, cluster_id="c1", node_id="x", address=None)
        )
        wrong_cluster = c.FrameCodec(c.Role.DIALER, max_frame_size=SETTINGS.max_frame_size).send(
            make_hello(SETTINGS, cluster_id="evil", node_id="x", address="x:1")
        )
        async with trio.open_nursery() as n:
            n.start_soon(good_client)
            await offender(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 10)
            await offender(hello_frame[: len(hello_frame) // 2])  # half a frame, then EOF
            await offender(b"\xff\xff\xff\xf0" + b"x" * 100, handshake_first=True)  # oversized length prefix
            reply = await offender(wrong_cluster, eof=False)  # the server answers HELLO + GOAWAY, then closes
            assert b"belongs to cluster" in reply
            await offender(b"\x00\x00\x00\x05\x83\x01\x02\x41x", handshake_first=True)  # DATA on an unopened stream
            await trio.sleep(0.05)
            stop.set()
        assert good_calls > 0
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        for needle in [
            "over our maximum frame size",
            "middle of a frame",
            "belongs to cluster 'evil'",
            "never opened",
        ]:
            assert sum(needle in m for m in messages) >= 1, (needle, messages)
        # Every offending connection was closed; only the good client's connection is left.
        await trio.sleep(0.05)
        assert len(server.connections()) == 1
