"""The node API beyond the ported scenarios: joining later, settings, errors, handler streams, serve()."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import borough
from borough.store import MemoryStore
from borough.testing import SimCluster
from borough.wire.simnet import SimNetwork


def sim_node(net: SimNetwork, name: str, **settings: Any) -> Any:
    return borough.open_node(
        listen=f"{name}:7000",
        data_dir=None,
        network=net.host(name),
        store=MemoryStore(),
        offload=False,
        seed=hash(name) % 1000,
        **settings,
    )


async def test_a_node_started_without_bootstrap_joins_later(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(1)
    async with sim_node(net, "a") as a, sim_node(net, "b", bootstrap=False) as b:
        assert b.cluster_id is None
        with pytest.raises(borough.ConfigError, match="already belongs"):
            await a.join(b.address)
        await b.join(a.address)
        assert b.cluster_id == a.cluster_id
        await b.partition("p").put("k", "v")
        assert await a.partition("p").get("k") == "v"
        members = await b.members()
        assert {m.node_id for m in members} == {a.node_id, b.node_id}


async def test_serve_starts_a_node_in_a_nursery(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(2)
    async with trio.open_nursery() as nursery:
        node = await nursery.start(
            lambda task_status: borough.serve(
                task_status=task_status,
                listen="s:7000",
                data_dir=None,
                network=net.host("s"),
                store=MemoryStore(),
                offload=False,
                seed=3,
            )
        )
        assert isinstance(node, borough.Node)
        await node.partition("x").put("a", 1)
        assert await node.partition("x").get("a") == 1
        nursery.cancel_scope.cancel()


async def test_bad_input_fails_fast_and_writes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with SimCluster(1, seed=3, max_value_bytes=1000) as sim:
        p = sim[0].partition("p")
        with pytest.raises(TypeError):
            await p.put(42, "v")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await p.put("", "v")
        with pytest.raises(TypeError):
            await p.put("k", object())
        with pytest.raises(ValueError, match="max_value_bytes"):
            await p.put("k", "x" * 2000)
        with pytest.raises(ValueError):
            await p.batch([("put", "a", 1), ("frobnicate", "b")])
        with pytest.raises(ValueError):
            sim[0].partition("_system")
        with pytest.raises(TypeError):
            sim[0].partition("")
        assert [kv async for kv in p.iterator()] == []
        with pytest.raises(ValueError):
            p.iterator(keys=False, values=False)


async def test_no_handler_is_a_clear_error_not_a_hang(autojump_clock: trio.testing.MockClock) -> None:
    async with SimCluster(2, seed=4) as sim:
        with trio.fail_after(5), pytest.raises(borough.RemoteError, match="no request handler"):
            await sim[1].request("p", {"x": 1})


async def test_a_partition_without_quorum_times_out_by_the_callers_deadline_and_the_default(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(3, seed=5, request_timeout=3.0) as sim:
        p = sim[0].partition("q")
        await p.put("a", 1)
        record = await sim[0].directory.record("q", create=True)
        others = [i for i, sn in enumerate(sim.nodes) if sn.node and sn.node.node_id in record.voters and i != 0]
        for i in others[:2]:
            sim.isolate(i)
        if len(others) < 2:  # node 0 is a voter: isolate it from the rest instead
            sim.heal()
            sim.isolate(0)
        start = trio.current_time()
        with pytest.raises((borough.Timeout, trio.TooSlowError)):
            with trio.fail_after(2):
                await p.put("b", 2)
        assert trio.current_time() - start == pytest.approx(2, abs=0.01)
        start = trio.current_time()
        with pytest.raises(borough.Timeout):
            await p.put("c", 3)
        assert trio.current_time() - start == pytest.approx(3, abs=0.01)


async def test_handler_receives_streams_from_the_caller(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(request: borough.Request) -> Any:
        total = 0
        stream = request.body["streams"]["upload"]
        while chunk := await stream.receive_some():
            total += len(chunk)
        await request.partition.put("uploaded", total)
        return {"bytes": total}

    async def upload() -> Any:
        for _ in range(100):
            yield b"x" * 10_000

    async with SimCluster(3, seed=6, handler=handler) as sim:
        for caller in range(3):
            reply = await sim[caller].request("files", {"streams": {"upload": upload()}})
            assert reply == {"bytes": 1_000_000}
        async with sim.client() as client:
            assert await client.request("files", {"streams": {"upload": upload()}}) == {"bytes": 1_000_000}
            assert await client.partition("files").get("uploaded") == 1_000_000


async def test_info_reports_replicas_leader_term_and_indexes(autojump_clock: trio.testing.MockClock) -> None:
    async with SimCluster(5, seed=7) as sim:
        p = sim[2].partition("inf")
        for i in range(5):
            await p.put(f"k{i}", i)
        await trio.sleep(1)  # heartbeats carry the commit index to every replica
        info = await p.info()
        assert info.name == "inf" and info.term >= 1
        assert info.commit_index == info.applied_index >= 6
        roles = sorted(r.role for r in info.peers)
        assert roles == ["leader", "voter", "voter"]
        assert all(r.connected and r.address and r.match_index == info.commit_index for r in info.peers)
        assert info.leader in {r.node_id for r in info.peers}
