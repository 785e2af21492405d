"""Peer links over the simulated network: lazy dialling, one connection per pair, refusal, reconnect and
backoff, idle close, partitions, and many streams with one stalled reader."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from borough import errors
from borough.errors import NotDelivered
from borough.wire.mux import IncomingCall, PeerInfo, Reply
from borough.wire.network import TcpNetwork
from borough.wire.settings import WireSettings
from borough.wire.simnet import SimNetwork
from borough.wire.transport import Identity, Transport, open_transport

from .helpers import chunks, collect

FAST = WireSettings(keepalive_interval=0.5, liveness_timeout=2.0, idle_timeout=30.0, connect_timeout=1.0)


class Node:
    """A transport plus what it received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.address = f"{name}:7000"
        self.messages: list[tuple[PeerInfo, Any]] = []
        self.transport: Transport

    def on_message(self, peer: PeerInfo, message: Any) -> None:
        self.messages.append((peer, message))

    async def on_call(self, peer: PeerInfo, call: IncomingCall) -> Any:
        body = call.body
        if body == "whoami":
            return {"me": self.name, "you": peer.node_id, "client": peer.is_client}
        if isinstance(body, dict) and body.get("op") == "sleep":
            await trio.sleep(body["for"])
            return "slept"
        if isinstance(body, dict) and body.get("op") == "upload":
            return {name: len(await collect(st)) for name, st in call.streams.items()}
        if isinstance(body, dict) and body.get("op") == "download":
            return Reply("here", streams={"blob": chunks(b"z" * body["n"], 65536)})
        return body


@asynccontextmanager
async def cluster(
    sim: SimNetwork,
    names: list[str],
    *,
    settings: WireSettings = FAST,
    cluster_ids: dict[str, str | None] | None = None,
) -> AsyncIterator[dict[str, Node]]:
    nodes = {name: Node(name) for name in names}
    async with AsyncExitStack() as stack:
        for i, (name, node) in enumerate(nodes.items()):
            cid = (cluster_ids or {}).get(name, "c1")
            node.transport = await stack.enter_async_context(
                open_transport(
                    sim.host(name),
                    identity=Identity(node_id=name, cluster_id=cid),
                    listen=node.address,
                    on_message=node.on_message,
                    on_call=node.on_call,
                    settings=settings,
                    rng=random.Random(i),
                )
            )
        yield nodes


async def test_messages_and_calls_dial_lazily_one_connection_per_pair(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=1)
    async with cluster(sim, ["n1", "n2", "n3"]) as nodes:
        n1, n2 = nodes["n1"], nodes["n2"]
        assert sim.connection_count() == 0
        assert n1.transport.listen_address == "n1:7000"
        for i in range(5):
            assert n1.transport.send(n2.address, {"i": i})
        await trio.sleep(0.1)
        assert [m for _, m in n2.messages] == [{"i": i} for i in range(5)]
        peer = n2.messages[0][0]
        assert (peer.node_id, peer.address, peer.cluster_id, peer.is_client) == ("n1", "n1:7000", "c1", False)
        assert (await n2.transport.call(n1.address, "whoami")).body == {"me": "n1", "you": "n2", "client": False}
        assert n2.transport.send(n1.address, "hi")
        await trio.sleep(0.1)
        assert [m for _, m in n1.messages] == ["hi"]
        assert sim.connection_count("n1", "n2") == 1  # n2 reused the connection n1 dialled
        assert sim.connection_count() == 1


async def test_simultaneous_dial_converges_to_one_connection(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=2)
    async with cluster(sim, ["n1", "n2"]) as nodes:
        n1, n2 = nodes["n1"], nodes["n2"]
        n1.transport.send(n2.address, "from n1")
        n2.transport.send(n1.address, "from n2")
        await trio.sleep(0.1)
        assert sim.connection_count("n1", "n2") == 2
        for _ in range(100):  # keep both directions busy past the idle timeout
            n1.transport.send(n2.address, "x")
            n2.transport.send(n1.address, "y")
            await trio.sleep(0.5)
        assert sim.connection_count("n1", "n2") == 1
        assert len(n1.messages) == len(n2.messages) == 101


async def test_call_with_streams_both_ways(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=3)
    async with cluster(sim, ["n1", "n2"]) as nodes:
        t = nodes["n1"].transport
        reply = await t.call(
            "n2:7000", {"op": "upload"}, streams={"a": chunks(b"a" * 300_000, 1000), "b": chunks(b"", 1)}
        )
        assert reply.body == {"a": 300_000, "b": 0}
        reply = await t.call("n2:7000", {"op": "download", "n": 1_000_000})
        assert reply.body == "here"
        assert await collect(reply.streams["blob"]) == b"z" * 1_000_000


async def test_wrong_cluster_is_refused_and_logged(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    sim = SimNetwork(seed=4)
    caplog.set_level(logging.INFO, logger="borough.wire")
    async with cluster(sim, ["n1", "n2", "n3"], cluster_ids={"n3": "other"}) as nodes:
        with pytest.raises(errors.ConfigError, match="cluster"):
            await nodes["n1"].transport.call("n3:7000", "whoami")
        assert nodes["n3"].transport.send("n1:7000", "spam")
        await trio.sleep(1)
        assert nodes["n1"].messages == []
        assert any("belongs to cluster" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        assert (await nodes["n1"].transport.call("n2:7000", "whoami")).body["me"] == "n2"


async def test_node_without_cluster_id_connects_and_learns_it(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=5)
    async with cluster(sim, ["n1", "new"], cluster_ids={"new": None}) as nodes:
        new = nodes["new"]
        assert (await new.transport.call("n1:7000", "whoami")).body["me"] == "n1"
        assert nodes["n1"].messages == []
        n1_peer_seen_by_new = None

        async def remember(peer: PeerInfo, call: IncomingCall) -> Any:
            nonlocal n1_peer_seen_by_new
            n1_peer_seen_by_new = peer
            return "ok"

        new.transport._on_call = remember
        await nodes["n1"].transport.call("new:7000", "x")
        assert n1_peer_seen_by_new is not None and n1_peer_seen_by_new.cluster_id == "c1"
        new.transport.set_cluster_id("c1")
        assert new.transport.identity.cluster_id == "c1"


async def test_client_identity_is_seen_as_client(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=6)
    async with (
        cluster(sim, ["n1"]) as nodes,
        open_transport(sim.host("cli"), identity=Identity(node_id=None), settings=FAST) as client,
    ):
        assert (await client.call("n1:7000", "whoami")).body == {"me": "n1", "you": None, "client": True}
        assert client.listen_address is None
        assert len(nodes["n1"].transport.connections()) == 1


async def test_unreachable_peer_backs_off_exponentially_with_jitter(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=7)
    settings = WireSettings(backoff_initial=0.1, backoff_max=1.6, backoff_jitter=0.2, connect_timeout=1.0)
    attempts: list[float] = []
    async with cluster(sim, ["n1"], settings=settings) as nodes:
        t = nodes["n1"].transport
        real_connect = t.network.connect

        async def counting_connect(address: str) -> trio.abc.Stream:
            attempts.append(trio.current_time())
            return await real_connect(address)

        t.network.connect = counting_connect  # type: ignore[method-assign]
        with pytest.raises(errors.Unavailable, match="ghost:7000"):
            await t.call("ghost:7000", "x")
        with pytest.raises(errors.Unavailable, match="next attempt"):
            await t.call("ghost:7000", "x")  # fails fast while backing off
        for _ in range(60):
            t.send("ghost:7000", "keep trying")
            await trio.sleep(0.1)
        gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
        assert len(attempts) >= 5
        for i, gap in enumerate(gaps[:4]):
            nominal = min(1.6, 0.1 * 2**i)
            assert nominal * 0.8 - 0.01 <= gap <= nominal * 1.2 + 0.11, (i, gaps)
        assert max(gaps) <= 1.6 * 1.2 + 0.11


async def test_reconnects_after_kill_and_after_peer_restart(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=8)
    async with cluster(sim, ["n1"]) as nodes:
        n1 = nodes["n1"]
        async with cluster(sim, ["n2"]) as n2s:
            assert (await n1.transport.call("n2:7000", "whoami")).body["me"] == "n2"
            sim.kill_connections("n1", "n2")
            await trio.sleep(0.01)
            assert (await n1.transport.call("n2:7000", "whoami")).body["me"] == "n2"
            assert n2s["n2"].transport.listen_address == "n2:7000"
        # n2 is gone: calls fail with Unavailable
        await trio.sleep(0.01)
        with pytest.raises(errors.Unavailable):
            await n1.transport.call("n2:7000", "whoami")
        async with cluster(sim, ["n2"]):
            await trio.sleep(5)  # past the backoff
            assert (await n1.transport.call("n2:7000", "whoami")).body["me"] == "n2"


async def test_partition_fails_calls_then_heals(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=9)
    async with cluster(sim, ["n1", "n2"]) as nodes:
        t = nodes["n1"].transport
        assert (await t.call("n2:7000", "whoami")).body["me"] == "n2"
        sim.partition(["n1"], ["n2"])
        start = trio.current_time()
        with pytest.raises(errors.Unavailable, match="n2"):
            await t.call("n2:7000", {"op": "sleep", "for": 0.1})
        assert trio.current_time() - start <= FAST.liveness_timeout + 0.5
        sim.heal()
        await trio.sleep(3)
        with trio.fail_after(5):
            while True:
                try:
                    assert (await t.call("n2:7000", "whoami")).body["me"] == "n2"
                    break
                except errors.Unavailable:
                    await trio.sleep(0.5)


async def test_idle_links_close_and_are_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=10)
    async with cluster(sim, ["n1", "n2"]) as nodes:
        t = nodes["n1"].transport
        t.send("n2:7000", "hello")
        await trio.sleep(1)
        assert sim.connection_count() == 1 and t.is_connected("n2:7000")
        await trio.sleep(FAST.idle_timeout + 2 * FAST.keepalive_interval)
        assert sim.connection_count() == 0
        assert not t.is_connected("n2:7000")
        assert t._links == {} and nodes["n2"].transport._links == {}


async def test_call_cancel_scope_bounds_call_and_cancels_handler(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=11)
    async with cluster(sim, ["n1", "n2"]) as nodes:
        t = nodes["n1"].transport
        with trio.move_on_after(1) as cs:
            await t.call("n2:7000", {"op": "sleep", "for": 100})
        assert cs.cancelled_caught
        await trio.sleep(0.1)
        (conn,) = nodes["n2"].transport.connections()
        assert conn._inbound_busy == 0


async def test_hundred_streams_one_stalled_reader(autojump_clock: trio.testing.MockClock) -> None:
    """99 streams finish and priority messages keep flowing while one reader never reads."""
    sim = SimNetwork(seed=12)
    settings = WireSettings(window=64 * 1024, idle_timeout=1000, keepalive_interval=0.5, liveness_timeout=2)
    size = 512 * 1024
    stalled_open = trio.Event()

    async def on_call(peer: PeerInfo, call: IncomingCall) -> Any:
        if call.body == 0:
            stalled_open.set()
            await trio.sleep_forever()  # never reads its stream
        return len(await collect(call.streams["s"]))

    async with cluster(sim, ["n1", "n2"], settings=settings) as nodes:
        nodes["n2"].transport._on_call = on_call
        t = nodes["n1"].transport
        done: list[int] = []
        all_others_done = trio.Event()
        async with trio.open_nursery() as n:

            async def one(i: int) -> None:
                reply = await t.call("n2:7000", i, streams={"s": chunks(bytes(size), 16384)})
                assert reply.body == size
                done.append(i)
                if len(done) == 99:
                    all_others_done.set()

            for i in range(100):
                n.start_soon(one, i)
            await stalled_open.wait()
            # The priority lane is not stuck behind the bulk data.
            for k in range(20):
                assert t.send("n2:7000", {"heartbeat": k})
                await trio.sleep(0.01)
            with trio.fail_after(60):
                await all_others_done.wait()
            n.cancel_scope.cancel()
        assert sorted(done) == list(range(1, 100))
        assert [m for _, m in nodes["n2"].messages] == [{"heartbeat": k} for k in range(20)]


async def test_closing_transport_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=13)
    async with cluster(sim, ["n1", "n2"]) as nodes:
        t = nodes["n1"].transport
        await t.call("n2:7000", "x")
        start = trio.current_time()
        async with trio.open_nursery() as n:
            n.start_soon(t.call, "n2:7000", {"op": "sleep", "for": 100})
            await trio.sleep(0.1)
            n.cancel_scope.cancel()
    assert trio.current_time() - start < 3


def test_simulated_run_is_deterministic_given_a_seed() -> None:
    def run(seed: int) -> list[Any]:
        trace: list[Any] = []

        async def main() -> None:
            sim = SimNetwork(seed=seed, latency=0.002, jitter=0.0019)
            async with cluster(sim, ["n1", "n2", "n3"]) as nodes:
                for node in nodes.values():
                    node.transport._on_message = lambda peer, m, name=node.name: trace.append(
                        (name, peer.node_id, m, trio.current_time())
                    )
                for i in range(30):
                    for src in nodes.values():
                        for dst in nodes.values():
                            if src is not dst:
                                src.transport.send(dst.address, i)
                    await trio.sleep(0.001)
                await trio.sleep(1)

        # The simulation harness seeds trio's scheduler the same way; the wire adds no randomness of its own.
        trio._core._run._r.seed(seed)
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        return trace

    first = run(5)
    assert len(first) == 180
    assert run(5) == first
    assert run(6) != first


async def test_send_while_dialling_is_bounded_and_dropped_on_failure(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=14, connect_timeout=1.0)
    settings = WireSettings(priority_queue_limit=5, connect_timeout=2.0, backoff_initial=0.5, backoff_max=1.0)
    async with cluster(sim, ["n1", "n2"], settings=settings) as nodes:
        t = nodes["n1"].transport
        sim.cut("n1", "n2")
        assert [t.send("n2:7000", i) for i in range(8)] == [True] * 5 + [False] * 3
        await trio.sleep(1.5)  # the dial timed out: the queued messages were dropped (Raft retransmits)
        assert not t._links["n2:7000"].pending
        sim.heal()
        await trio.sleep(1.5)
        assert t.send("n2:7000", "after heal")
        await trio.sleep(3)
        assert [m for _, m in nodes["n2"].messages] == ["after heal"]


async def test_messages_ride_the_inbound_connection_and_flush_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = SimNetwork(seed=15)
    async with cluster(sim, ["n1", "n2"]) as nodes:
        t1, t2 = nodes["n1"].transport, nodes["n2"].transport
        await t1.call("n2:7000", "x")  # n1 dialled n2
        for i in range(50):
            assert t2.send("n1:7000", i)
        await trio.sleep(0.1)
        assert [m for _, m in nodes["n1"].messages] == list(range(50))
        assert sim.connects == 1


async def test_a_raising_message_handler_is_logged_and_drops_the_connection(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    sim = SimNetwork(seed=16)

    def bad(peer: PeerInfo, message: Any) -> None:
        if message == "boom":
            raise ValueError(f"cannot handle {message!r}")
        got.append(message)

    got: list[Any] = []
    async with (
        open_transport(sim.host("n1"), identity=Identity(node_id="n1"), listen="n1:1", on_message=bad) as t1,
        open_transport(sim.host("n2"), identity=Identity(node_id="n2"), listen="n2:1", on_message=bad) as t2,
    ):
        assert t2.send("n1:1", "boom")
        await trio.sleep(1)
        assert sim.connects == 2  # n1 dropped the connection; n2, still using the link, dialled again
        assert any(r.levelname == "ERROR" and r.exc_info and "n2" in r.getMessage() for r in caplog.records)
        assert t2.send("n1:1", "fine")  # redials
        assert t1.send("n2:1", "also fine")
        await trio.sleep(1)
        assert sorted(got) == ["also fine", "fine"]


async def test_goaway_makes_the_link_redial(autojump_clock: trio.testing.MockClock) -> None:
    sim = SimNetwork(seed=17)
    async with cluster(sim, ["n1", "n2"]) as nodes:
        t1 = nodes["n1"].transport
        await t1.call("n2:7000", "x")
        (conn,) = nodes["n2"].transport.connections()
        await conn.aclose("maintenance")
        await trio.sleep(0.1)
        assert (await t1.call("n2:7000", "whoami")).body["me"] == "n2"
        assert sim.connects == 2


async def test_malformed_address_is_unavailable_not_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    async with open_transport(TcpNetwork(), identity=Identity(node_id="n1"), settings=FAST) as t:
        with pytest.raises(errors.Unavailable, match="not of the form host:port"):
            await t.call("no-port-here", "x")
        assert t.send("no-port-here", "x")  # queued, then dropped when the dial fails
        await trio.sleep(1)


async def test_a_call_that_never_left_is_not_delivered_and_one_that_left_is_ambiguous(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = SimNetwork(seed=21)
    async with (
        cluster(sim, ["n1"]),
        open_transport(sim.host("cli"), identity=Identity(node_id=None), settings=FAST) as client,
    ):
        assert (await client.call("n1:7000", "whoami")).body["me"] == "n1"
        # The connection dies before the writer task ever sends the call: certainly not delivered.
        sim.kill_connections("cli")
        with pytest.raises(NotDelivered):
            await client.call("n1:7000", "whoami")
        # The link comes back; now the call leaves, and the connection dies while it waits for the reply:
        # the peer may have run it, so the error is a plain Unavailable.
        with trio.fail_after(10):
            while not client.is_connected("n1:7000"):
                try:
                    await client.call("n1:7000", "whoami")
                except NotDelivered:
                    await trio.sleep(0.5)

        async def kill_soon() -> None:
            await trio.sleep(0.2)
            sim.kill_connections("cli")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_soon)
            with pytest.raises(errors.Unavailable) as info:
                await client.call("n1:7000", {"op": "sleep", "for": 5})
        assert not isinstance(info.value, NotDelivered)


@pytest.mark.parametrize("dialler", ["n1", "n2"])
async def test_a_peer_whose_connection_breaks_and_cannot_be_redialled_is_reported_at_once(
    autojump_clock: trio.testing.MockClock, dialler: str
) -> None:
    """How a killed process shows up (issue 16): its connection closes and the redial is refused. The transport
    redials a connection in use at once (dialled or accepted) and reports the address; a reset with the peer
    still there reports nothing."""
    sim = SimNetwork(seed=18)
    async with cluster(sim, ["n1"]) as nodes:
        n1 = nodes["n1"]
        reported: list[tuple[float, str]] = []
        n1.transport.on_unreachable = lambda address: reported.append((trio.current_time(), address))
        async with cluster(sim, ["n2"]) as n2s:
            n2 = n2s["n2"]
            if dialler == "n1":
                assert n1.transport.send("n2:7000", "hello")
            else:
                assert n2.transport.send("n1:7000", "hello")
                await trio.sleep(0.01)
                assert n1.transport.send("n2:7000", "hello back")  # rides n2's connection: n1 dialled nothing
            await trio.sleep(0.01)
            sim.kill_connections("n1", "n2")  # a reset, the peer still listening: redialled, not reported
            await trio.sleep(1.0)  # (a connection dropped younger than keepalive_interval is redialled after a backoff)
            assert reported == []
            assert n1.transport.send("n2:7000", "still there")
            stopped = trio.current_time()
        await trio.sleep(0.1)
        assert reported and reported[0][1] == "n2:7000"
        assert reported[0][0] - stopped < 0.01  # one round trip to be refused, not a timeout
