"""Retries after an ambiguous failure must not apply a write twice.

Found while building the simulator (issue 7): the router used to retry a call whose connection failed after
the request was sent (``Unavailable`` from the transport, or a ``Timeout`` answered by the node), so a write
whose reply was lost was proposed again once the link was back. The second application landed after later
writes by other clients: a value already overwritten came back, and the history was not linearizable. The same
held for requests: a handler that already wrote ran again on the next leader. Now only answers that prove the
operation did not take effect are retried; a write or request cut off after it was sent raises ``Unavailable``
(outcome unknown) and the application decides.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import borough
from borough.testing import History, SimCluster, check
from borough.testing.workload import ClientOps


async def test_a_put_whose_reply_was_lost_is_not_applied_again_after_later_writes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    history = History()
    async with (
        SimCluster(3, seed=1) as sim,
        sim.client(request_timeout=60) as client_a,  # host client1
        sim.client() as client_b,
    ):
        a = ClientOps(client_a, history, "A", timeout=60)
        b = ClientOps(client_b, history, "B", timeout=60)
        await a.put("p", "k", "first")  # both clients connected, leader known
        await b.get("p", "k")
        leader = sim.leader_replica("p")
        leader_host = sim.nodes[sim.index_of(leader.host.node_id)].host
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.put, "p", "k", "a")
            sim.net.cut(leader_host, "client1", one_way=True)  # A's put arrives and commits; its reply is lost
            await trio.sleep(0.5)
            await b.get("p", "k")  # -> "a"
            await b.put("p", "k", "b")
            await b.get("p", "k")  # -> "b"
            await trio.sleep(6)  # A's connection times out; the router retries the put once the link heals
            sim.heal()
        await b.get("p", "k")  # "a" again: the put was applied a second time, after "b"
    result = check(history)
    assert result.ok, f"{result.explanation}\n{history.describe()}"


async def _counter(request: borough.Request) -> Any:
    n = await request.partition.get("n", default=0)
    await request.partition.put("n", n + 1)
    if request.body.get("slow"):
        await trio.sleep(1)  # work after the write: the reply leaves a second later
    return n + 1


async def test_a_request_whose_leader_crashed_after_writing_runs_once(autojump_clock: trio.testing.MockClock) -> None:
    async with SimCluster(3, seed=0, handler=_counter) as sim, sim.client() as client:
        assert await client.request("counter", {}) == 1
        leader = sim.index_of(sim.leader_replica("counter").host.node_id)

        async def crash_leader_meanwhile() -> None:
            await trio.sleep(0.5)
            await sim.crash(leader)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash_leader_meanwhile)
            # The leader died after the handler wrote: the caller learns the outcome is unknown ...
            with pytest.raises(borough.Unavailable, match="may or may not have taken effect"):
                await client.request("counter", {"slow": True})
        # ... and the handler ran exactly once (it is not replayed on the next leader).
        assert await client.partition("counter").get("n") == 2
