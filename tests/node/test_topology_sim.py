"""The issue's whole topology story on one simulated cluster, with clients checked for linearizability.

Start 1 node; add nodes one at a time up to 9 while clients run put/get/delete on 20 partitions; decommission
nodes one at a time down to 4 (then 3 live after a kill); kill one for good; bring a dead one back. Throughout:
linearizable, no acknowledged write lost. At the end: every partition has exactly its ring replica set as
voters, no learners, the ring owner leads, and nodes that left hold no replica data.
"""

from __future__ import annotations

import random
import sys

import pytest
import trio
import trio.testing

from borough.testing import SimCluster, check
from borough.testing.checks import check_placement
from borough.testing.history import History
from borough.testing.workload import ClientOps

PARTITIONS = [f"p{i}" for i in range(20)]


async def _client(ops: ClientOps, rng: random.Random, stop: trio.Event, counter: list[int]) -> None:
    while not stop.is_set():
        name, key = rng.choice(PARTITIONS), f"k{rng.randrange(3)}"
        kind = rng.random()
        if kind < 0.45:
            counter[0] += 1
            await ops.put(name, key, counter[0])
        elif kind < 0.55:
            await ops.delete(name, key)
        else:
            await ops.get(name, key)
        await trio.sleep(rng.uniform(0.01, 0.2))


@pytest.mark.parametrize("seed", [21, 22])
async def test_one_to_nine_and_back_with_a_death_and_a_return(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    rng = random.Random(seed)
    history = History()
    counter = [0]
    async with SimCluster(1, seed=seed, dead_after=8.0) as sim:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for c in range(3):
                client = await nursery.start(_open_client, sim, stop)
                ops = ClientOps(client, history, c, record=sim.record)
                nursery.start_soon(_client, ops, random.Random(rng.getrandbits(32)), stop, counter)
            for _ in range(8):  # up to 9 nodes
                await sim.add_node()
                await trio.sleep(4)
            assert await placed(sim)
            for index in (8, 7, 6, 5, 4):  # decommission down to 4
                node = sim[index]
                with trio.fail_after(240):
                    await node.leave()
                assert [name for name in PARTITIONS if name in node.replicas] == []
                await sim.stop(index)
                sim.nodes[index].removed = True
            await sim.crash(3)  # for good: declared dead after dead_after, its partitions re-replicated
            assert await placed(sim)
            await sim.restart(3)  # ...and back after all: ACTIVE again, it gets its share
            assert await placed(sim)
            stop.set()
        result = check(history)
        assert result.ok, result.explanation
        for index in (4, 5, 6, 7, 8):  # nodes that left hold no replica data
            assert not set(sim.nodes[index].store.replicas()) & set(PARTITIONS)


async def _open_client(sim: SimCluster, stop: trio.Event, task_status: trio.TaskStatus[object]) -> None:
    async with sim.client() as client:
        task_status.started(client)
        await stop.wait()


async def placed(sim: SimCluster) -> bool:
    """Every partition where the ring puts it, within 180 simulated seconds; else print what is not."""
    problems = await check_placement(sim, bound=180)
    if problems:
        print("\n".join(problems), sim.describe(), file=sys.stderr)
    return not problems
