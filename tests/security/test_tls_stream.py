"""``TlsStream`` is a conforming ``trio.abc.Stream`` (trio's own checks, over in-memory streams), carries bulk and
many small writes intact, reports the verified peer certificate, and breaks on a tampered record."""

from __future__ import annotations

import os
import ssl

import pytest
import trio
import trio.testing

from borough.wire.tls import load_contexts, peer_certificate
from borough.wire.tls_stream import TlsStream

from .conftest import Dirs


async def _pair(dirs: Dirs, a: trio.abc.Stream, b: trio.abc.Stream) -> tuple[TlsStream, TlsStream]:
    node = load_contexts(dirs.node, "node")
    client = load_contexts(dirs.client, "client")
    assert node.server is not None
    server = TlsStream(a, node.server, server_side=True)
    dialer = TlsStream(b, client.client, server_hostname="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(dialer.do_handshake)
    return server, dialer


async def test_conforms_to_trio_stream_checks(dirs: Dirs) -> None:
    async def make() -> tuple[TlsStream, TlsStream]:
        return await _pair(dirs, *trio.testing.memory_stream_pair())

    async def make_clogged() -> tuple[TlsStream, TlsStream]:
        return await _pair(dirs, *trio.testing.lockstep_stream_pair())

    await trio.testing.check_two_way_stream(make, make_clogged)


async def test_bulk_and_small_writes_arrive_intact_with_the_peer_certificate(dirs: Dirs) -> None:
    server, dialer = await _pair(dirs, *trio.testing.memory_stream_pair())
    assert server.version() == "TLSv1.3"
    seen = peer_certificate(server)
    assert seen is not None and seen.role == "client" and seen.name == "alice"
    seen = peer_certificate(dialer)
    assert seen is not None and seen.role == "node"
    blob = os.urandom(300_000)  # many records: one receive returns every whole record already received
    small = [os.urandom(n) for n in range(1, 200)]
    expected = blob + b"".join(small)
    got = bytearray()

    async def send() -> None:
        await dialer.send_all(blob)
        for part in small:
            await dialer.send_all(part)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while len(got) < len(expected):
            chunk = await server.receive_some(256 * 1024)
            assert 0 < len(chunk) <= 256 * 1024
            got += chunk
    assert bytes(got) == expected
    await dialer.aclose()
    assert await server.receive_some() == b""  # close_notify reads as end of stream


async def test_a_tampered_record_breaks_the_stream(dirs: Dirs) -> None:
    a, b = trio.testing.memory_stream_pair()
    server, dialer = await _pair(dirs, a, b)
    # A record whose ciphertext was changed on the way fails authentication: broken, with the SSL error as cause.
    await dialer.send_all(b"hello")
    assert await server.receive_some() == b"hello"
    header = b"\x17\x03\x03\x00\x20"
    await b.send_all(header + bytes(32))
    with pytest.raises(trio.BrokenResourceError) as info:
        await server.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLError)
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()
