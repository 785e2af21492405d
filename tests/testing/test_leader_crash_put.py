"""docs/testing.md's "A first test" over many seeds, not only the one the page shows: a put right after its
partition's leader crashed reaches the new leader within the caller's deadline and is applied once (issue 16).
Before writes carried sessions, the put went to the dead leader's closed connection and raised ``Unavailable``
("failed after it was sent")."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from borough.testing import SimCluster


@pytest.mark.parametrize("seed", range(8))
async def test_a_put_after_the_leader_crashed_succeeds(seed: int, autojump_clock: trio.testing.MockClock) -> None:
    async with SimCluster(3, seed=seed) as sim, sim.client() as client:
        p = client.partition("counter")
        await p.put("n", 1)
        leader = sim.leader_replica("counter")
        assert leader is not None
        await sim.crash(sim.index_of(leader.host.node_id))
        with trio.fail_after(10):
            await p.put("n", 2)
            assert await p.get("n") == 2
        new = sim.leader_replica("counter")
        assert new is not None and new.host.node_id != leader.host.node_id
