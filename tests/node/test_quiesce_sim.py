"""Quiescence and fail-over in the simulator: idle groups cost nothing, and a quiet group whose leader is gone
elects another one within the failure detector's bound plus an election (issues 15 and 16).

Whole nodes run the production code on virtual time (``SimCluster``). "Quiesced" is read off each replica's core;
costs are counted as the node sees them: Raft messages its outbox sent, Readies its replicas handled, tick rounds
its ticker ran (the ``tick`` trace events) and clocks it keeps running.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from borough.node.system_state import SYSTEM
from borough.ring.membership import DETECTION_BOUND
from borough.testing import SimCluster
from borough.testing.checks import check_placement

#: Defaults of NodeConfig: 100 ms ticks, elections after 10 to 20 of them.
ELECTION = 2.0


def quiet(sim: SimCluster, names: Iterable[str], nodes: Iterable[int] | None = None) -> bool:
    """Whether every running replica of ``names`` (on ``nodes``, default all) is quiesced."""
    chosen = None if nodes is None else set(nodes)
    for sim_node in sim.running():
        if chosen is not None and sim_node.index not in chosen:
            continue
        node = sim_node.node
        assert node is not None
        for name in names:
            replica = node.replicas.get(name)
            if replica is not None and not replica.quiesced:
                return False
    return True


async def wait_quiet(
    sim: SimCluster, names: Iterable[str], within: float = 30.0, nodes: Iterable[int] | None = None
) -> None:
    names = list(names)
    chosen = None if nodes is None else list(nodes)
    with trio.fail_after(within):
        while True:  # polled: quiescence happens inside the replicas, with no event to wait on
            if quiet(sim, names, chosen):
                return
            await trio.sleep(0.1)


class TickCounter:
    """Counts the ``tick`` rounds the nodes' tickers record in the trace."""

    def __init__(self, sim: SimCluster, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rounds = 0
        record = sim.trace.record

        def counting(kind: str, *details: Any) -> None:
            if kind == "tick":
                self.rounds += 1
            record(kind, *details)

        monkeypatch.setattr(sim.trace, "record", counting)


def costs(sim: SimCluster) -> tuple[int, int]:
    """(Raft messages sent, Readies handled) over the running nodes."""
    messages = readies = 0
    for sim_node in sim.running():
        node = sim_node.node
        assert node is not None
        messages += node.outbox.messages_sent
        readies += sum(replica.stats.readies for _, replica in node.replicas.items())
    return messages, readies


async def test_a_thousand_idle_partitions_schedule_no_timer_and_send_no_message_once_quiesced(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"p{i}" for i in range(1000)]
    async with SimCluster(3, seed=31, keep_trace=0) as sim:
        async with sim.client() as client:
            async with trio.open_nursery() as nursery:
                for i, name in enumerate(names):
                    nursery.start_soon(client.partition(name).put, "k", i)
            await wait_quiet(sim, [*names, SYSTEM])
            await trio.sleep(0.1)  # a ticker asleep when its last clock stopped wakes once more, then parks
            ticks = TickCounter(sim, monkeypatch)
            before = costs(sim)
            await trio.sleep(60)
            # A minute of idleness: not one Raft message, Ready or tick round, on any node.
            assert costs(sim) == before
            assert ticks.rounds == 0
            assert [len(sim[i].replicas.clocks) for i in range(3)] == [0, 0, 0]
            assert all(len(sim[i].replicas) == 1001 for i in range(3))
            # A write wakes its own group only, which goes quiet again afterwards.
            await client.partition("p7").put("k", "again")
        assert sum(len(sim[i].replicas.clocks) for i in range(3)) == 3
        await wait_quiet(sim, ["p7"])
        assert all(dict(sim[i].store.iterate("p7"))["k"] == "again" for i in range(3))


async def test_nodes_outside_system_poll_the_member_table_without_waking_it(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five nodes: two hold no `_system` replica and ask a `_system` member for the member table every couple of
    # seconds. Those asks used to wake `_system` (a ReadIndex round) before it could quiesce, so it never did and
    # the idle cluster kept ticking and heartbeating (the simulator ran it at ~30x real time instead of ~90x).
    async with SimCluster(5, seed=33, keep_trace=0) as sim:
        async with sim.client() as client:
            await client.partition("p").put("k", 1)
        outside = [i for i in range(5) if sim[i].replicas.get(SYSTEM) is None]
        assert len(outside) == 2
        # Placement first hands each lead to its ring owner (a transfer wakes the group once); then all is idle.
        assert await check_placement(sim, bound=30, partitions=["p", SYSTEM]) == []
        await wait_quiet(sim, ["p", SYSTEM])
        await trio.sleep(0.1)
        ticks = TickCounter(sim, monkeypatch)
        before = costs(sim)
        polls = [sim[i].directory.members.version for i in outside]
        await trio.sleep(30)
        assert costs(sim) == before and ticks.rounds == 0
        assert quiet(sim, ["p", SYSTEM])
        # ...while the outside nodes still know the current table.
        assert [sim[i].directory.members.version for i in outside] == polls
        assert all(sim[i].directory.members.version == sim[0].directory.members.version for i in range(5))


async def elect_after(sim: SimCluster, name: str, fault: str) -> tuple[float, str]:
    """Quiet partition ``name``, apply ``fault`` to its leader's node, and return the virtual seconds until a
    new leader that a quorum recognises leads it (and that leader's node id)."""
    await wait_quiet(sim, [name, SYSTEM])
    leader = sim.leader_replica(name)
    assert leader is not None and leader.quiesced
    index = sim.index_of(leader.host.node_id)
    start = trio.current_time()
    if fault == "crash":
        await sim.crash(index)
    elif fault == "partition":
        sim.partition([index], [i for i in range(len(sim.nodes)) if i != index])
    elif fault == "pause":
        sim.pause(index)
    with trio.fail_after(60):
        while True:
            new = sim.leader_replica(name)
            if new is not None and new.host.node_id != leader.host.node_id:
                return trio.current_time() - start, new.host.node_id
            await trio.sleep(0.01)


@pytest.mark.parametrize("fault", ["crash", "partition", "pause"])
async def test_a_quiesced_group_whose_leader_is_gone_elects_another_within_detection_plus_an_election(
    autojump_clock: trio.testing.MockClock, fault: str
) -> None:
    async with SimCluster(3, seed=41) as sim:
        await sim[0].partition("q").put("k", 1)
        took, _ = await elect_after(sim, "q", fault)
        # The followers heard nothing (they were quiet): the failure detector, or the reset connection when the
        # process died, told them. A crash is seen at once; a partition or a pause within the detector's bound.
        assert took < DETECTION_BOUND + ELECTION, f"{fault}: no new leader for {took:.2f} s"
        if fault == "crash":
            assert took < ELECTION / 2, f"a crashed leader's followers waited {took:.2f} s"
        async with sim.client() as client:
            with trio.fail_after(10):
                assert await client.partition("q").get("k") == 1
                await client.partition("q").put("k", 2)


async def test_a_busy_group_fails_over_in_under_a_second_when_its_leader_process_dies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fail-over under load (issue 16): clients keep putting while the leader's node is killed; the first put
    acknowledged after the kill comes in well under a second (the connection reset tells the followers)."""
    async with SimCluster(3, seed=43) as sim:
        await sim[0].partition("busy").put("n", 0)
        leader = sim.leader_replica("busy")
        assert leader is not None
        victim = sim.index_of(leader.host.node_id)
        survivors = [i for i in range(3) if i != victim]
        acked: list[float] = []
        killed_at: list[float] = []

        async def writer(i: int) -> None:
            async with sim.client(seeds=survivors) as client:
                n = 0
                while trio.current_time() < start + 6:
                    try:
                        with trio.fail_after(5):
                            await client.partition("busy").put(f"w{i}", n)
                        acked.append(trio.current_time())
                    except Exception:
                        pass
                    n += 1
                    await trio.sleep(0.01)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(writer, i)
            await trio.sleep(2)
            killed_at.append(trio.current_time())
            await sim.crash(victim)
        kill = killed_at[0]
        acked.sort()
        assert acked[-1] > kill + 1, "puts stopped after the leader's node was killed"
        # The longest pause in acknowledged puts around the kill (a put in flight may still be acknowledged
        # just after it; what the user sees is the gap).
        gap = max(b - a for a, b in zip(acked, acked[1:], strict=False) if b > kill)
        sim.record("fail-over gap", gap)
        assert gap < 1.0, f"puts paused for {gap:.3f} s when the leader's node was killed"


async def test_a_quiesced_follower_that_missed_entries_catches_up_when_woken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(3, seed=47) as sim:
        await sim[0].partition("m").put("k", 0)
        await wait_quiet(sim, ["m", SYSTEM])
        leader = sim.leader_replica("m")
        assert leader is not None
        lead = sim.index_of(leader.host.node_id)
        lagging = next(i for i in range(3) if i != lead)
        sim.partition([lagging], [i for i in range(3) if i != lagging])
        async with sim.client(seeds=[i for i in range(3) if i != lagging]) as client:
            for n in range(1, 20):
                await client.partition("m").put("k", n)
        # The rest of the group goes quiet without the member it cannot reach.
        await wait_quiet(sim, ["m"], nodes=[i for i in range(3) if i != lagging])
        assert dict(sim[lagging].store.iterate("m"))["k"] == 0
        sim.heal()
        # Woken (by the leader, once the detector sees the member again, or by its own campaign), the follower
        # catches up; then the whole group is quiet again.
        with trio.fail_after(DETECTION_BOUND + 4 * ELECTION):
            await sim.wait_converged(["m"])
        await wait_quiet(sim, ["m"])
        assert dict(sim[lagging].store.iterate("m"))["k"] == 19
        states = sim.replica_states("m")
        assert len(states) == 3 and len({tuple(items) for _, items in states.values()}) == 1


async def test_quiet_groups_still_move_when_a_node_joins(autojump_clock: trio.testing.MockClock) -> None:
    """Quiescence must not freeze placement: a node joins a cluster whose partitions are all quiet, and every
    partition ends up where the ring puts it (the groups wake for their configuration changes, and go quiet
    again afterwards)."""
    from borough.testing.checks import check_placement

    names = [f"m{i}" for i in range(12)]
    async with SimCluster(3, seed=53) as sim:
        async with sim.client() as client:
            for i, name in enumerate(names):
                await client.partition(name).put("k", i)
        await wait_quiet(sim, [*names, SYSTEM])
        await sim.add_node()
        assert await check_placement(sim, bound=120) == []
        assert any(sim[3].replicas.get(name) is not None for name in names)  # the new node took some
        await wait_quiet(sim, names)
        async with sim.client() as client:
            for i, name in enumerate(names):
                assert await client.partition(name).get("k") == i


async def test_an_idle_node_never_walks_every_replica_it_hosts(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work proportional to the groups that have work: once every group is quiet, the node's periodic duties
    (placement, the stray sweep, the effects pump, fail-over bookkeeping) visit no replica at all, rather than
    walking the whole table every round (at 10,000 partitions such walks were most of an idle node's CPU)."""
    from borough.node.registry import Replicas

    names = [f"w{i}" for i in range(60)]
    async with SimCluster(3, seed=59, keep_trace=0) as sim:
        async with sim.client() as client, trio.open_nursery() as nursery:
            for i, name in enumerate(names):
                nursery.start_soon(client.partition(name).put, "k", i)
        await wait_quiet(sim, [*names, SYSTEM])
        await trio.sleep(10)  # every periodic duty has made its first (full) pass
        walks: list[str] = []
        items, iterate = Replicas.items, Replicas.__iter__

        def counting_items(self: Replicas) -> Any:
            walks.append("items")
            return items(self)

        def counting_iter(self: Replicas) -> Any:
            walks.append("iter")
            return iterate(self)

        monkeypatch.setattr(Replicas, "items", counting_items)
        monkeypatch.setattr(Replicas, "__iter__", counting_iter)
        await trio.sleep(30)
        assert walks == []
        # A write wakes its group: the next passes look at it (and only it), then it goes quiet again.
        async with sim.client() as client:
            await client.partition("w7").put("k", "again")
        await wait_quiet(sim, ["w7"])
        await trio.sleep(10)
        assert walks == []


async def test_creating_a_partition_takes_no_election_and_its_group_goes_quiet_at_the_next_tick(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new partition's first leader is appointed, not elected (no vote request), its first append carries the
    write that created it, and the group goes quiet at the next tick with one heartbeat that its followers do not
    answer: six Raft messages in all, counted per partition as its replicas hand them to the wire."""
    names = [f"c{i}" for i in range(20)]
    async with SimCluster(3, seed=41, keep_trace=0) as sim, sim.client() as client:
        await client.partition("warm").put("k", 0)
        await wait_quiet(sim, ["warm", SYSTEM])
        sent: Counter[tuple[str, str]] = Counter()
        for sim_node in sim.running():
            node = sim_node.node
            assert node is not None
            send = node.send_raft

            def counting(partition: str, messages: Sequence[Any], stamp: Any, send: Any = send) -> None:
                for message in messages:
                    sent[partition, type(message).__name__] += 1
                send(partition, messages, stamp)

            monkeypatch.setattr(node, "send_raft", counting)
        async with trio.open_nursery() as nursery:
            for i, name in enumerate(names):
                nursery.start_soon(client.partition(name).put, "k", i)
        await wait_quiet(sim, names)
        for name in names:
            kinds = {kind: n for (partition, kind), n in sent.items() if partition == name}
            assert kinds == {"AppendRequest": 2, "AppendResponse": 2, "Heartbeat": 2}, (name, kinds)
            assert all(sim[i].replicas[name].term == 1 for i in range(3))
