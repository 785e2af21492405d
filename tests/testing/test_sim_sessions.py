"""Session records in a whole simulated cluster: a follower that was down while the log was compacted catches
up by snapshot, then leads, and still answers a duplicate of a write applied before as a no-op; a restart keeps
the records too; and the records of a session stay within their bounds."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from borough.errors import RemoteError
from borough.node.protocol import Write
from borough.node.records import Put
from borough.node.session_table import SessionRef
from borough.node.statemachine import KvStateMachine
from borough.store import encode_value
from borough.testing import SimCluster


async def test_a_duplicate_is_suppressed_after_snapshot_install_leader_change_and_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(3, seed=5, snapshot_entries=8) as sim, sim.client(request_timeout=30) as client:
        part = client.partition("s")
        # Seq 1 of a session that then stays quiet (so its result is kept), sent as a client would send it.
        first = SessionRef(b"q" * 16, 1, 1)
        await client.session.run("s", Write((Put("x", encode_value(1)),), first))
        leader = sim.leader_replica("s")
        follower = next(i for i, n in enumerate(sim.nodes) if n.node and n.node.node_id != leader.host.node_id)
        behind = sim.nodes[follower].node.replicas.get("s").applied  # type: ignore[union-attr]
        await sim.crash(follower)
        for i in range(40):  # enough for the log to be compacted past everything the follower has
            await part.put(f"k{i}", i)
        await part.put("x", 2)
        lead = sim.leader_replica("s")
        assert lead.host.store.first_index("s") > behind + 1  # the follower's next entry is gone: a snapshot
        await sim.restart(follower)
        with trio.fail_after(30):
            while True:  # caught up (by snapshot: its log was compacted meanwhile)
                replica = sim.nodes[follower].node.replicas.get("s")  # type: ignore[union-attr]
                if replica is not None and replica.applied >= sim.leader_replica("s").applied:
                    break
                await trio.sleep(0.1)
        machine = replica.machine
        assert isinstance(machine, KvStateMachine)
        assert b"q" * 16 in machine.sessions._sessions  # the snapshot carried the records
        # The client's own seq 1 is long finished (its later writes raised low): a copy of it is refused.
        with pytest.raises(RemoteError, match="StaleWrite"):
            mine = SessionRef(client.session.sequencer.session, 1, 1)
            await client.session.run("s", Write((Put("x", encode_value(0)),), mine))
        # A leader change (the old leader dies), then seq 1 again: a duplicate, a no-op on every replica,
        # the one caught up by snapshot included.
        old = sim.index_of(sim.leader_replica("s").host.node_id)
        await sim.crash(old)
        await client.session.run("s", Write((Put("x", encode_value(1)),), first))
        assert await part.get("x") == 2  # not 1: the duplicate was a no-op
        with trio.fail_after(30):
            while True:
                if replica.applied >= sim.leader_replica("s").applied:
                    break
                await trio.sleep(0.1)
        assert replica.host.store.get("s", "x") == 2
        await sim.restart(old)
        new_leader = sim.index_of(sim.leader_replica("s").host.node_id)
        await sim.crash(new_leader)
        await sim.restart(new_leader)  # a restart reloads the records from the store
        await client.session.run("s", Write((Put("x", encode_value(1)),), first))
        assert await part.get("x") == 2
