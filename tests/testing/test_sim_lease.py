"""``read_mode="lease"`` under a pause: a leader stopped (SIGSTOP, a long GC, a stalled event loop) for longer than
its lease must not answer a read from that lease when it resumes, however its ticker lagged.

The dangerous case, reached on purpose: the leader is paused and cut off from the other nodes, so nothing tells it
of the newer term when it resumes. The others elect a new leader and commit a newer write; a client that can only
reach the old leader (it learnt the leader from a write, so its reads go there first) sends it a read while it is
still paused, so the read is waiting when it resumes. Pausing alone reaches it only sometimes: the new leader's
messages, queued while the old one was stopped, make it step down if its core is fed them before the read (a turn
feeds messages ahead of reads), and which comes first depends on the order its tasks run in after the pause (the
read and the peers' frames arrive on different connections).
Before elapsed-time ticks the old leader resumed with one tick counted for the whole pause, its lease looked valid
and it answered with the overwritten value.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import borough
from borough.testing import SimCluster
from borough.testing.scenario import random_scenario, run_scenario


@pytest.mark.parametrize("cut_off", [True, False])
async def test_a_paused_lease_leader_does_not_serve_a_stale_read_when_it_resumes(
    autojump_clock: trio.testing.MockClock, cut_off: bool
) -> None:
    """``cut_off``: the leader is also cut off from the other nodes (the dangerous case reached on purpose); else
    it keeps its links, and with this seed its core takes the read before the new leader's queued messages."""
    async with (
        SimCluster(3, seed=5, read_mode="lease", quiesce_ticks=0) as sim,
        sim.client(host="writer") as writer,
        sim.client(host="reader", request_timeout=5.0) as reader,
    ):
        await writer.partition("p").put("a", 1)
        old = await sim.leader_index("p")
        old_term = sim.leader_replica("p").term
        # A write teaches the reader where the leader is, so its reads go there first; then a lease read on the
        # old leader, served from its lease with no heartbeat round.
        await reader.partition("p").put("b", 0)
        assert await reader.partition("p").get("a") == 1
        others = [i for i in range(3) if i != old]
        if cut_off:
            for i in others:
                sim.cut_client(i, "reader")  # from now on the reader reaches the old leader only
        raft = sim[old].replicas["p"]._raw._raft
        assert raft.ticks < raft.readonly.lease_until

        sim.pause(old)
        if cut_off:
            sim.partition([old], others)
        with trio.fail_after(30):  # the other two elect a leader (once their vote hold ran out) and write
            while True:
                try:
                    await writer.partition("p").put("a", 2)
                    break
                except borough.BoroughError:
                    await trio.sleep(0.1)
        new = await sim.leader_index("p")
        assert new != old and sim.leader_replica("p").term > old_term

        outcome: list[object] = []

        async def read() -> None:
            try:
                outcome.append(await reader.partition("p").get("a"))
            except borough.BoroughError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.5)  # the read waits in the paused node's inbox
            assert not outcome
            sim.resume(old)
        # It must not have used its old lease: cut off, it cannot confirm its leadership (the read fails); else the
        # read is answered by a leader of the new term (or fails).
        assert outcome and outcome[0] != 1, f"the old leader answered a stale read: {outcome[0]!r}"
        assert isinstance(outcome[0], borough.BoroughError) or outcome[0] == 2
        if cut_off:
            assert isinstance(outcome[0], borough.BoroughError)

        sim.heal()
        with trio.fail_after(30):
            await sim.wait_converged(["p"])
        assert await writer.partition("p").get("a") == 2


@pytest.mark.parametrize("seed", [48, 83])
def test_lease_fuzz_scenarios_that_read_a_stale_value_before_elapsed_time_ticks(seed: int) -> None:
    # Found by ``python -m borough.testing fuzz --read-mode lease --clients 6 --ops 30 --faults 10`` before the fix:
    # a ``stall`` step paused a leader and cut it off; once resumed, it answered a get from its lease with a value
    # the new leader had overwritten (not linearizable).
    result = run_scenario(random_scenario(seed, clients=6, ops=30, faults=10, read_mode="lease"))
    assert result.ok, result.report()
