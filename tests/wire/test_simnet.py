"""The simulated network: stream conformance, latency and order, refusals, cuts, kills, determinism."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from borough.wire.simnet import SimNetwork

from .helpers import collect

_accepted: dict[int, trio.MemoryReceiveChannel[trio.abc.Stream]] = {}


async def _pair(
    sim: SimNetwork, nursery: trio.Nursery, a: str = "a", b: str = "b:1"
) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """A connection from host ``a`` to ``b`` (host ``b`` listens on ``b:1``): (client end, server end)."""
    if b not in sim._listeners:
        accepted, accepted_r = trio.open_memory_channel[trio.abc.Stream](10)
        _accepted[id(sim)] = accepted_r

        async def handler(stream: trio.abc.Stream) -> None:
            await accepted.send(stream)
            await trio.sleep_forever()

        await nursery.start(sim.host(b.split(":")[0]).serve, b, handler)
    client = await sim.host(a).connect(b)
    server = await _accepted[id(sim)].receive()
    return client, server


async def test_sim_stream_is_a_conforming_half_closeable_stream(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=1, buffer_size=4096)
    async with trio.open_nursery() as n:

        async def maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
            return await _pair(sim, n)

        await trio.testing.check_half_closeable_stream(maker, None)
        n.cancel_scope.cancel()


async def test_latency_order_and_refusal(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=7)
    sim.set_latency("a", "b", 0.010, 0.005)
    async with trio.open_nursery() as n:
        client, server = await _pair(sim, n)
        t0 = trio.current_time()
        for i in range(50):
            await client.send_all(b"%03d" % i)
        await client.send_eof()
        data = await collect(server)
        assert data == b"".join(b"%03d" % i for i in range(50))
        assert 0.005 <= trio.current_time() - t0 <= 0.016
        with pytest.raises(ConnectionRefusedError):
            await sim.host("a").connect("nobody:1")
        n.cancel_scope.cancel()


async def test_cut_severs_live_connection_for_good_and_blocks_connects(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=3, connect_timeout=2.0)
    async with trio.open_nursery() as n:
        client, server = await _pair(sim, n)
        await client.send_all(b"before")
        assert await server.receive_some() == b"before"
        sim.cut("a", "b", one_way=True)
        await client.send_all(b"lost")  # succeeds, like TCP, but is dropped
        await server.send_all(b"back")  # b -> a still flows
        assert await client.receive_some() == b"back"
        with trio.move_on_after(5) as cs:
            await server.receive_some()
        assert cs.cancelled_caught
        t0 = trio.current_time()
        with pytest.raises(TimeoutError):
            await sim.host("a").connect("b:1")
        assert trio.current_time() - t0 == pytest.approx(2.0)
        sim.heal()
        await client.send_all(b"after heal")  # the severed direction never resumes mid-stream
        with trio.move_on_after(5) as cs:
            await server.receive_some()
        assert cs.cancelled_caught
        c2, s2 = await _pair(sim, n)  # a fresh connection works
        await c2.send_all(b"fresh")
        assert await s2.receive_some() == b"fresh"
        n.cancel_scope.cancel()


async def test_partition_isolate_recover(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=3)
    sim.partition({"a", "b"}, {"c"})
    assert sim.blocked("a", "c") and sim.blocked("c", "b") and not sim.blocked("a", "b")
    sim.heal()
    sim.isolate("b")
    assert sim.blocked("a", "b") and sim.blocked("b", "zzz") and not sim.blocked("a", "c")
    sim.cut("b", "c")
    sim.recover("b")
    assert not sim.blocked("a", "b") and not sim.blocked("b", "c")


async def test_kill_connections_breaks_both_ends(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=5)
    async with trio.open_nursery() as n:
        client, server = await _pair(sim, n)
        async with trio.open_nursery() as n2:

            async def reader() -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await server.receive_some()

            n2.start_soon(reader)
            await trio.sleep(1)
            assert sim.kill_connections("a", "b") == 1
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")
        n.cancel_scope.cancel()


def test_same_seed_same_timeline() -> None:
    def run(seed: int) -> list[float]:
        times: list[float] = []

        async def main() -> None:
            sim = SimNetwork(seed=seed, latency=0.01, jitter=0.009)
            async with trio.open_nursery() as n:
                client, server = await _pair(sim, n)
                for i in range(20):
                    await client.send_all(bytes([i]))
                    await server.receive_some()
                    times.append(trio.current_time())
                n.cancel_scope.cancel()

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        return times

    assert run(11) == run(11)
    assert run(11) != run(12)
