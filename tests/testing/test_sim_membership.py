"""Membership under long partitions: the member table must agree with the cluster once the network heals.

Found by the simulator (issue 7): random scenario seed 163 (``python -m borough.testing replay --seed 163``)
left two running nodes DEAD in the member table and ``_system`` with one voter. Two faults were involved: a
``_system`` leader elected right after a partition healed acted on the stale failure-detector view it had
built while cut off (fixed: only unreachability seen while leading counts), and a live node that was rightly
declared dead during a long partition becomes ACTIVE again after it heals (it announces itself once it sees it
was declared dead).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from borough.node.system_state import SYSTEM
from borough.testing import SimCluster
from borough.testing.checks import check_members, member_problems


@pytest.mark.parametrize(("seed", "crashed"), [(0, 0), (1, 2), (2, 2)])
async def test_a_leader_elected_as_a_long_partition_heals_does_not_declare_the_healthy_nodes_dead(
    autojump_clock: trio.testing.MockClock, seed: int, crashed: int
) -> None:
    # Every node cut off from every other for longer than dead_after, one of them down meanwhile: each node's
    # failure detector believes the others dead. When the partition heals, whoever wins the election must not
    # mark them DEAD from that stale view. (Seeds and nodes from a sweep where each failed before the fix.)
    async with SimCluster(3, seed=seed) as sim:
        sim.partition([0], [1], [2])
        await sim.crash(crashed)
        await trio.sleep(40)
        sim.heal()
        await sim.restart(crashed)
        await trio.sleep(40)
        assert member_problems(sim) == []
        leader = sim.leader_replica(SYSTEM)
        assert leader is not None and len(leader.status().conf_state.voters) == 3


async def test_a_node_declared_dead_during_a_long_partition_is_active_again_after_it_heals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(3, seed=0) as sim:
        sim.isolate(2)
        await trio.sleep(40)  # > dead_after (30 s): the majority rightly marks node 2 DEAD
        sim.heal()
        assert await check_members(sim, bound=60) == []
