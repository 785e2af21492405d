"""Partitions follow the ring (issue 13): as nodes join and die, every group moves to the ring's replica set,
one placement step at a time, while clients keep reading and writing; the ring owner ends up leading."""

from __future__ import annotations

import trio
import trio.testing

import borough
from borough.ring.members import MemberState
from borough.testing import SimCluster
from borough.testing.checks import check_placement, check_replicas

PARTITIONS = [f"p{i}" for i in range(12)]


async def _writer(client: borough.Client, acked: dict[tuple[str, str], int], stop: trio.Event) -> None:
    """Write increasing values until told to stop; remember the last acknowledged value of each key."""
    n = 0
    while not stop.is_set():
        n += 1
        name = PARTITIONS[n % len(PARTITIONS)]
        key = f"k{n % 5}"
        try:
            with trio.fail_after(5):
                await client.partition(name).put(key, n)
            acked[(name, key)] = n
        except (borough.Unavailable, borough.Timeout, trio.TooSlowError):
            pass  # outcome unknown: a later acknowledged write of the key decides
        await trio.sleep(0.05)


async def _write_all_and_settle(sim: SimCluster, client: borough.Client) -> None:
    """Write ``k0 = 0`` into every partition and wait until each sits on its ring replica set."""
    for name in PARTITIONS:
        await client.partition(name).put("k0", 0)
    assert await check_placement(sim, bound=60) == []


async def _read_back(client: borough.Client, acked: dict[tuple[str, str], int]) -> list[str]:
    lost = []
    for (name, key), value in sorted(acked.items()):
        got = await client.partition(name).get(key)
        if got < value:
            lost.append(f"{name}/{key}: acknowledged {value}, read {got}")
    return lost


async def test_partitions_written_on_one_node_grow_to_three_replicas_as_nodes_join(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(1, seed=3) as sim, sim.client() as client:
        for name in PARTITIONS:
            await client.partition(name).put("k0", 0)
        acked: dict[tuple[str, str], int] = {}
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, client, acked, stop)
            for _ in range(2):
                await sim.add_node()
                await trio.sleep(5)
            assert await check_placement(sim, bound=90) == []
            stop.set()
        assert await check_replicas(sim) == []
        assert await _read_back(client, acked) == []
        for name in PARTITIONS:
            info = await client.partition(name).info()
            assert sorted(p.role for p in info.peers) == ["leader", "voter", "voter"]
            # info() says where the ring wants it, and that it is there: no change under way, no learner.
            assert set(info.voters) == set(info.targets) and not info.learners and not info.joint
            assert info.leader == info.targets[0] and info.snapshots_to == ()
            assert {p.progress for p in info.peers if p.role == "voter"} == {"replicate"}


async def test_a_joining_node_receives_its_share_and_the_others_let_go(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(3, seed=4) as sim, sim.client() as client:
        await _write_all_and_settle(sim, client)
        new = await sim.add_node()
        assert await check_placement(sim, bound=120) == []
        node = sim[new.index]
        hosted = [name for name in PARTITIONS if name in node.replicas]
        ring = node.directory.ring()
        assert hosted == [name for name in PARTITIONS if node.node_id in ring.replica_set(name)]
        assert hosted, "with 4 nodes and 12 partitions the new node holds some"
        for name in PARTITIONS:
            assert await client.partition(name).get("k0") == 0


async def test_a_dead_nodes_partitions_are_re_replicated_on_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(4, seed=5, dead_after=10.0) as sim, sim.client() as client:
        await _write_all_and_settle(sim, client)
        acked: dict[tuple[str, str], int] = {}
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, client, acked, stop)
            await sim.crash(3)  # for good: never restarted
            assert await check_placement(sim, bound=120) == []
            stop.set()
        dead = sim.nodes[3].node_id
        for name in PARTITIONS:
            info = await client.partition(name).info()
            assert dead not in {p.node_id for p in info.peers} and len(info.peers) == 3
        assert await _read_back(client, acked) == []


async def test_a_node_that_leaves_hands_over_its_partitions_and_stays_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(4, seed=6) as sim, sim.client() as client:
        await _write_all_and_settle(sim, client)
        leaving = sim[2]
        held_before = [name for name in PARTITIONS if name in leaving.replicas]
        assert held_before
        acked: dict[tuple[str, str], int] = {}
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, client, acked, stop)
            with trio.fail_after(180):
                await leaving.leave()
            stop.set()
        assert [name for name in PARTITIONS if name in leaving.replicas] == []
        table = await client.members()
        assert table.get(leaving.node_id).state is MemberState.DEAD  # type: ignore[union-attr]
        await trio.sleep(10)  # it does not announce itself back
        table = await client.members()
        assert table.get(leaving.node_id).state is MemberState.DEAD  # type: ignore[union-attr]
        await sim.stop(2)
        sim.nodes[2].removed = True
        assert await check_placement(sim, bound=60) == []
        assert await _read_back(client, acked) == []


async def test_a_dead_member_is_decommissioned_from_outside_without_waiting_for_dead_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(4, seed=7, dead_after=3600.0) as sim, sim.client() as client:
        await _write_all_and_settle(sim, client)
        gone = sim.nodes[1].node_id
        assert gone is not None
        await sim.crash(1)
        sim.nodes[1].removed = True
        with trio.fail_after(180):
            await client.decommission(gone)
        assert await check_placement(sim, bound=60) == []
        assert sorted(await client.partitions()) == sorted(PARTITIONS)
        for name in PARTITIONS:
            info = await client.partition(name).info()
            assert gone not in {p.node_id for p in info.peers}
            assert await client.partition(name).get("k0") == 0


async def test_a_member_declared_dead_comes_back_and_gets_its_share_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(4, seed=8, dead_after=10.0) as sim, sim.client() as client:
        await _write_all_and_settle(sim, client)
        back = sim.nodes[0].node_id
        await sim.crash(0)
        assert await check_placement(sim, bound=120) == []  # re-replicated on the other three
        assert (await client.members()).get(back).state is MemberState.DEAD  # type: ignore[arg-type,union-attr]
        await sim.restart(0)  # on its own disk: it announces itself, ACTIVE again, and the ring counts it
        assert await check_placement(sim, bound=180) == []
        assert (await client.members()).get(back).state is MemberState.ACTIVE  # type: ignore[arg-type,union-attr]
        assert any(name in sim[0].replicas for name in PARTITIONS)
        for name in PARTITIONS:
            assert await client.partition(name).get("k0") == 0


async def test_member_status_shows_what_each_member_holds_and_leads(autojump_clock: trio.testing.MockClock) -> None:
    async with SimCluster(4, seed=9) as sim, sim.client() as client:
        await _write_all_and_settle(sim, client)
        await sim.stop(3)

        def leads(i: int) -> tuple[str, ...]:
            return tuple(n for n in sorted(sim[i].replicas) if sim[i].replicas[n].is_leader)

        # The groups node 3 led elect new leaders meanwhile, and placement hands leaderships back to their ring
        # owners: a status is what a member held and led when it answered, so ask again if a leadership moved
        # between its answer and our look (it settles once the moves are done).
        for _ in range(20):
            statuses = {s.node_id: s for s in await client.member_status()}
            if all(statuses[sim.nodes[i].node_id].leaderships == leads(i) for i in range(3)):
                break
        assert set(statuses) == {n.node_id for n in sim.nodes}
        down = statuses[sim.nodes[3].node_id]
        assert down.replicas is None and down.leaderships is None  # it did not answer
        for i in range(3):
            status = statuses[sim.nodes[i].node_id]
            assert status.state == "ACTIVE"
            assert status.replicas == tuple(sorted(sim[i].replicas))
            assert status.leaderships == leads(i)
        leaders = [name for s in statuses.values() for name in (s.leaderships or ()) if name in PARTITIONS]
        assert len(leaders) == len(set(leaders))  # at most one leader each


async def test_tiny_snapshot_windows_compact_only_what_the_core_knows_is_applied(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A Ready that applies more than half a snapshot window used to compact past the core's applied index
    # (before advance) and kill the node. With a window of 4 entries, bursts of concurrent writes do that.
    async with SimCluster(3, seed=10, snapshot_entries=4) as sim, sim.client() as client:
        p = client.partition("burst")

        async def put(i: int) -> None:
            await p.put(f"k{i}", i)

        for round_ in range(5):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(put, round_ * 20 + i)
        await sim.add_node()  # the new member catches up by snapshot
        assert await check_placement(sim, bound=120) == []
        assert [v async for v in p.iterator(keys=False)] == sorted(range(100), key=lambda i: f"k{i}")


async def test_a_learner_caught_up_by_snapshot_through_a_leader_change_and_broken_links_ends_equal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The log is compacted early, so the fourth node can only catch up by snapshot; while the snapshot streams
    # (slowly: high latency to the new node) the links break, the leader changes, and writes go on.
    async with SimCluster(3, seed=12, snapshot_entries=16) as sim, sim.client() as client:
        p = client.partition("big")
        for i in range(120):
            await p.put(f"k{i:03}", "x" * 2000)
        acked: dict[tuple[str, str], int] = {}
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, client, acked, stop)
            new = await sim.add_node()
            for other in range(3):
                sim.set_latency(other, new.index, 0.05)
            await trio.sleep(2)
            sim.kill_connections(new.index)
            leader = sim.leader_replica("big")
            if leader is not None:
                old = sim.index_of(leader.host.node_id)
                await sim.crash(old)
                await trio.sleep(3)
                await sim.restart(old)
            sim.kill_connections(new.index)
            sim.reset_latency()
            assert await check_placement(sim, bound=120) == []
            stop.set()
        assert await check_replicas(sim) == []
        assert await _read_back(client, acked) == []
        states = sim.replica_states("big")
        assert len({repr(items) for _, items in states.values()}) == 1  # every replica holds the same data
        assert new.index in states and sim[new.index].snapshots.received >= 1  # it came by snapshot
