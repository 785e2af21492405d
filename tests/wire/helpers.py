"""Test helpers: two ``MuxConnection``s joined by an in-memory stream pair, with the handshake done."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from borough.wire import codec as c
from borough.wire.mux import CallHandler, MessageHandler, MuxConnection, StreamHandler, handshake, make_hello, open_mux
from borough.wire.records import DispatchHooks, QuickCallHandler
from borough.wire.settings import WireSettings


@asynccontextmanager
async def mux_pair(
    *,
    settings: WireSettings | None = None,
    a_on_call: CallHandler | None = None,
    b_on_call: CallHandler | None = None,
    a_on_message: MessageHandler | None = None,
    b_on_message: MessageHandler | None = None,
    b_on_stream: StreamHandler | None = None,
    a_on_stream: StreamHandler | None = None,
    stream_pair: tuple[trio.abc.Stream, trio.abc.Stream] | None = None,
    b_on_quick_call: QuickCallHandler | None = None,
    b_hooks: DispatchHooks | None = None,
) -> AsyncIterator[tuple[MuxConnection, MuxConnection]]:
    """``a`` dialled ``b``."""
    settings = settings or WireSettings()
    sa, sb = stream_pair or trio.testing.memory_stream_pair()
    ha = make_hello(settings, cluster_id="c1", node_id="a", address="a:1")
    hb = make_hello(settings, cluster_id="c1", node_id="b", address="b:1")
    codecs: dict[str, c.FrameCodec] = {}

    async def do(name: str, stream: trio.abc.Stream, role: c.Role, hello: c.Hello) -> None:
        codecs[name] = await handshake(stream, role=role, local=hello, settings=settings)

    async with trio.open_nursery() as n:
        n.start_soon(do, "a", sa, c.Role.DIALER, ha)
        n.start_soon(do, "b", sb, c.Role.ACCEPTOR, hb)
    async with (
        open_mux(
            sa, codecs["a"], settings=settings, on_call=a_on_call, on_message=a_on_message, on_stream=a_on_stream
        ) as a,
        open_mux(
            sb,
            codecs["b"],
            settings=settings,
            on_call=b_on_call,
            on_message=b_on_message,
            on_stream=b_on_stream,
            on_quick_call=b_on_quick_call,
            hooks=b_hooks,
        ) as b,
    ):
        yield a, b


async def collect(stream: trio.abc.ReceiveStream, max_bytes: int | None = None) -> bytes:
    out = bytearray()
    while chunk := await stream.receive_some(max_bytes):
        out += chunk
    return bytes(out)


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def echo_body(call: Any) -> Any:
    return call.body
