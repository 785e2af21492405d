"""Creating many partitions (issue 15), in the simulator: registrations share ``_system`` entries, and a first
write to a new partition waits for its group's first election where it landed instead of bouncing between
replicas that know no leader yet."""

from __future__ import annotations

import trio
import trio.testing

from borough.node.system_state import MAX_REGISTER_BATCH, SYSTEM
from borough.testing import SimCluster


async def test_partitions_created_at_once_share_a_few_system_entries(autojump_clock: trio.testing.MockClock) -> None:
    names = [f"bulk{i:04d}" for i in range(400)]
    async with SimCluster(3, seed=61, keep_trace=0) as sim:
        async with sim.client() as client:
            await client.partition("first").put("k", 0)  # (the cluster is up, _system has its leader)
            entries_before = sum(sim[i].server.registrar.entries for i in range(3))  # type: ignore[union-attr]
            async with trio.open_nursery() as nursery:
                for i, name in enumerate(names):
                    nursery.start_soon(client.partition(name).put, "k", i)
            registrars = [sim[i].server.registrar for i in range(3)]
            entries = sum(r.entries for r in registrars if r is not None) - entries_before
            registered = sum(r.registered for r in registrars if r is not None)
            # 400 creations at once: a few entries, each holding many registrations (at most MAX_REGISTER_BATCH).
            assert registered >= len(names)
            assert len(names) / MAX_REGISTER_BATCH <= entries <= 20, f"{entries} _system entries for 400 partitions"
            for name in names[:: len(names) // 8]:
                assert await client.partition(name).get("k") == names.index(name)
        system = sim.leader_replica(SYSTEM)
        assert system is not None and set(names) <= set(system.machine.state.directory)


async def test_a_first_write_waits_for_the_first_election_without_retrying_elsewhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(3, seed=67, keep_trace=0) as sim, sim.client() as client:
        await client.partition("first").put("k", 0)
        router = client.session.router
        retries = router.retries
        for i in range(30):
            await client.partition(f"new{i}").put("k", i)
        # Each one: the group's first replica campaigned at once and the put waited for the outcome there,
        # rather than answering "no leader yet" and sending the client round the replicas with backoffs.
        assert router.retries == retries
        assert [await client.partition(f"new{i}").get("k") for i in range(30)] == list(range(30))


async def test_members_learn_a_new_partitions_record_from_their_own_system_replica(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``_system`` broadcasts each commit (``RaftConfig.commit_broadcast``): the ring owner that takes a new
    partition's first write, and the other voters its election reaches, find the directory record in their own
    ``_system`` replica, so creating a partition looks it up once (the client's registration), not once per node."""
    async with SimCluster(3, seed=71, keep_trace=0) as sim, sim.client() as client:
        await client.partition("first").put("k", 0)
        lookups: list[str] = []
        for i in range(3):
            server = sim[i].server
            observe = server.on_op

            def counting(op: str, seconds: float, observe: object = observe) -> None:
                if op == "sys.dir":
                    lookups.append(op)
                if callable(observe):
                    observe(op, seconds)

            server.on_op = counting
        for i in range(30):
            await client.partition(f"new{i}").put("k", i)
        assert len(lookups) <= 33, f"{len(lookups)} directory lookups served to create 30 partitions"
        assert [await client.partition(f"new{i}").get("k") for i in range(30)] == list(range(30))
