"""Hostile peers against a simulated cluster: a client speaking member messages, a process that is not a member
speaking for one, forged Raft terms and appends, made-up partitions, the snapshot paths and values no reader could
decode. Each attack fails, and the cluster keeps serving a legitimate client within its deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import cbor2
import pytest
import trio
import trio.testing

from borough.errors import BoroughError, Forbidden, RemoteProtocolError
from borough.node.protocol import Join, SendSnapshot, encode_call
from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    InstallSnapshot,
    TimeoutNow,
    VoteRequest,
    encode_message,
)
from borough.raft.records import Entry, SnapshotMeta
from borough.testing import SimCluster
from borough.wire.transport import Identity, Transport, open_transport

P = "accounts"


@asynccontextmanager
async def mallory(sim: SimCluster, node_id: str | None) -> AsyncIterator[Transport]:
    """A process on its own host that dials the cluster's nodes as ``node_id`` (None: as a client)."""
    identity = Identity(node_id=node_id, cluster_id=sim[0].cluster.cluster_id)
    async with open_transport(sim.net.host("mallory"), identity=identity) as transport:
        yield transport


async def still_serving(sim: SimCluster, expected: int) -> None:
    """A legitimate client reads the partition and writes to it within its deadline."""
    async with sim.client(request_timeout=5.0) as client:
        with trio.fail_after(5):
            assert await client.partition(P).get("balance") == expected
            await client.partition(P).put("after", 1)
            assert await client.partition(P).get("after") == 1


def forged_raft(sim: SimCluster, leader_id: str, term: int) -> list[object]:
    """A frame of Raft messages that, were they believed, would overwrite the partition and wedge its term."""
    members = [n.node.node_id for n in sim.nodes if n.node is not None]
    frm = next(m for m in members if m != leader_id)
    entry = Entry(term=term + 5, index=1, data=b"\x81\x83cputgbalanceA\x00")
    items: list[object] = [
        [
            P,
            encode_message(
                AppendRequest(
                    frm=frm, to=leader_id, term=term + 5, prev_index=0, prev_term=0, commit=1, entries=[entry]
                )
            ),
            0,
            0,
        ],  # fmt: skip
        [P, encode_message(Heartbeat(frm=frm, to=leader_id, term=(1 << 63) - 1, commit=0)), 0, 0],
        [
            P,
            encode_message(VoteRequest(frm=frm, to=leader_id, term=term + 9, last_index=10**9, last_term=10**9)),
            0,
            0,
        ],  # fmt: skip
    ]
    items += [[f"junk-{i}", encode_message(Heartbeat(frm=frm, to=leader_id, term=3)), 0, 0] for i in range(20)]
    return ["raft", items]


@pytest.mark.parametrize("who", [None, "not-a-member"], ids=["client", "non-member"])
async def test_raft_and_swim_frames_from_a_client_or_a_stranger_are_refused(
    autojump_clock: trio.testing.MockClock, who: str | None
) -> None:
    async with SimCluster(3, seed=11) as sim:
        await sim[0].partition(P).put("balance", 100)
        await sim.wait_for_leaders([P])
        leader = sim.leader_replica(P)
        term = leader.term
        leader_node = sim.nodes[sim.index_of(leader.host.node_id)]
        async with mallory(sim, who) as evil:
            for _ in range(3):
                evil.send(leader_node.address, forged_raft(sim, leader.host.node_id, term))
                evil.send(leader_node.address, ["swim", [0, 1, "n0", 99, 99, []]])
                await trio.sleep(0.5)
        assert sim.leader_replica(P).term == term  # neither the forged append nor the huge term was believed
        for sn in sim.running():
            assert sn.node is not None
            assert not [name for name in sn.node.replicas if name.startswith("junk-")]
        assert sim[sim.index_of(leader.host.node_id)].roles.refused >= 3
        await still_serving(sim, 100)


async def test_a_client_cannot_join_or_send_a_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    async with SimCluster(3, seed=12) as sim:
        await sim[0].partition(P).put("balance", 7)
        await sim.wait_for_leaders([P])
        leader = sim.leader_replica(P)
        address = sim.nodes[sim.index_of(leader.host.node_id)].address
        snapshot = InstallSnapshot(frm="n1", to=leader.host.node_id, term=leader.term + 1, meta=SnapshotMeta(index=99))
        async with mallory(sim, None) as evil:
            with pytest.raises(Forbidden):
                await evil.call(address, encode_call("_system", Join("n9", "mallory:1"), 5.0))
            with pytest.raises(Forbidden):
                call = SendSnapshot(encode_message(snapshot), 0, 0)
                await evil.call(address, encode_call(P, call, 5.0), streams={"data": _empty()})
        async with mallory(sim, "not-a-member") as evil:
            with pytest.raises(Forbidden):
                call = SendSnapshot(encode_message(snapshot), 0, 0)
                await evil.call(address, encode_call(P, call, 5.0), streams={"data": _empty()})
            # `_system` takes a non-member's snapshot (a node with a stale table may need one), in its own name only.
            system = sim[0].replicas.get("_system")
            assert system is not None
            own = system.incarnations.own()
            forged = InstallSnapshot(frm="n1", to=sim[0].node_id, term=system.term + 1, meta=SnapshotMeta(index=99))
            with pytest.raises(Forbidden, match="in its own name only"):
                call = SendSnapshot(encode_message(forged), 0, 0)
                await evil.call(sim.nodes[0].address, encode_call("_system", call, 5.0), streams={"data": _empty()})
            # And what it says of incarnations is not believed (whatever comes of the snapshot itself).
            forged = InstallSnapshot(
                frm="not-a-member", to=sim[0].node_id, term=system.term, meta=SnapshotMeta(index=1)
            )
            with trio.move_on_after(10):
                try:
                    call = SendSnapshot(encode_message(forged), (1 << 63) - 1, 2)
                    await evil.call(sim.nodes[0].address, encode_call("_system", call, 5.0), streams={"data": _empty()})
                except BoroughError:
                    pass  # (an empty stream: the install fails)
            assert system.incarnations.own() == own
            victim = sim[1].node_id  # a join naming another member would move its address to mallory
            with pytest.raises(Forbidden, match="joins only as itself"):
                await evil.call(address, encode_call("_system", Join(victim, "mallory:1"), 5.0))
        assert sim[0].directory.members.address_of(sim[1].node_id) == sim.nodes[1].address
        await still_serving(sim, 7)


async def test_a_strangers_system_frames_neither_depose_its_leader_nor_deafen_its_replicas(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``_system`` takes Raft frames from node ids the member table does not list (``roles``: a node with a
    stale table may be needed to elect its leader), so anyone who reaches the port can send them. The live-port
    fuzzer's non-members (issue 16) sent such frames, and `_system` was left without a leader: a replica told
    "you are incarnation 2**63-1" dropped every message of its real peers for good (a learner was never
    promoted; a voter went deaf), and made-up heartbeats, higher-term answers and TimeoutNow deposed the leader.
    Now none of that is believed: the leader keeps its term, every replica keeps its incarnation and keeps
    applying its leader's entries."""
    async with SimCluster(3, seed=15) as sim:
        await sim[0].partition(P).put("balance", 9)
        with trio.fail_after(30):
            await sim.wait_system_replicated()
        await trio.sleep(5)  # placement settles (it may hand the lead to the ring owner)
        system = sim.leader_replica("_system")
        term, leader_id = system.term, system.host.node_id
        replicas = {sn.address: sn.node.replicas.get("_system") for sn in sim.running() if sn.node is not None}
        own = {address: r.incarnations.own() for address, r in replicas.items()}
        async with mallory(sim, "mallory") as evil:
            for _ in range(3):
                for address, replica in replicas.items():
                    to = replica.host.node_id
                    forged = [
                        Heartbeat(frm="mallory", to=to, term=term + 4, commit=3, seq=9),
                        AppendResponse(frm="mallory", to=to, term=term + 4, index=0),
                        VoteRequest(
                            frm="mallory", to=to, term=term + 5, last_index=10**6, last_term=term + 4, transfer=True
                        ),
                        TimeoutNow(frm="mallory", to=to, term=term),
                    ]
                    # (In another node's name the frame is dropped: the stranger speaks only as itself.)
                    forged.append(Heartbeat(frm=leader_id, to=to, term=term + 6, commit=3, seq=9))
                    evil.send(address, ["raft", [["_system", encode_message(m), (1 << 63) - 1, 2] for m in forged]])
                await trio.sleep(0.5)
        now = sim.leader_replica("_system")
        assert now is not None and (now.term, now.host.node_id) == (term, leader_id)
        assert {address: r.incarnations.own() for address, r in replicas.items()} == own
        await sim[0].partition("fresh").put("k", 1)  # a `_system` entry (registering the partition)
        with trio.fail_after(2):  # within one heartbeat or so: every replica hears its leader
            while True:
                if all(r.applied >= now.applied for r in replicas.values()):
                    break
                await trio.sleep(0.05)
        await still_serving(sim, 9)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def test_a_value_no_reader_could_decode_is_refused_at_write_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(1, seed=13) as sim:
        await sim[0].partition(P).put("balance", 5)
        with pytest.raises(ValueError, match="cannot be stored"):
            await sim[0].partition(P).put("ip", IPv4Address("10.0.0.1"))  # a tag off the allow-list
        await still_serving(sim, 5)


async def test_forty_concurrent_one_megabyte_puts_into_one_partition_are_all_applied(
    autojump_clock: trio.testing.MockClock,
) -> None:
    value = b"v" * (1024 * 1024 - 16)  # each value just under the 1 MiB limit
    async with SimCluster(3, seed=14) as sim:
        await sim[0].partition(P).put("balance", 3)
        async with sim.client(request_timeout=30.0) as client, trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(client.partition(P).put, f"big-{i}", value)
        async with sim.client() as client:
            assert await client.partition(P).get("big-39") == value
        assert all(sn.node is not None for sn in sim.nodes)
        await still_serving(sim, 3)


async def test_a_write_too_big_to_replicate_is_refused_before_it_is_proposed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    value = b"v" * (1024 * 1024 - 16)
    async with SimCluster(1, seed=15) as sim:
        await sim[0].partition(P).put("balance", 1)
        with pytest.raises(ValueError, match="max_write_bytes"):
            await sim[0].partition(P).batch([("put", f"k{i}", value) for i in range(5)])
        async with mallory(sim, None) as evil:  # a client that skips the check
            ops = [["put", f"k{i}", cbor2.dumps(value)] for i in range(5)]
            with pytest.raises(RemoteProtocolError, match="max_write_bytes"):
                await evil.call(sim.nodes[0].address, ["write", P, [ops], 5.0])
        await still_serving(sim, 1)


def test_the_configuration_refuses_values_too_big_to_replicate() -> None:
    from borough.config import _MAX_WRITE_BYTES, NodeConfig
    from borough.errors import ConfigError
    from borough.node.records import MAX_WRITE_BYTES

    assert _MAX_WRITE_BYTES == MAX_WRITE_BYTES
    with pytest.raises(ConfigError, match="max_value_bytes"):
        NodeConfig(data_dir=None, max_value_bytes=8 * 1024 * 1024)


async def test_a_hello_that_claims_another_members_address_gets_none_of_its_traffic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with SimCluster(3, seed=16) as sim:
        await sim[0].partition(P).put("balance", 9)
        await sim.wait_for_leaders([P, "_system"])
        stolen = sim.nodes[1].address
        received: list[object] = []
        identity = Identity(node_id="0", address=stolen, cluster_id=sim[0].cluster.cluster_id)  # sorts first
        async with open_transport(
            sim.net.host("mallory"), identity=identity, on_message=lambda peer, msg: received.append(msg)
        ) as evil:
            for sn in (sim.nodes[0], sim.nodes[2]):
                assert evil.send(sn.address, ["swim", []])  # connect, and stay connected
            async with sim.client() as client:
                for i in range(20):
                    await client.partition(P).put(f"k{i}", i)
                    await trio.sleep(0.2)
        assert received == []  # none of node 1's Raft or SWIM traffic came to the impostor
        await still_serving(sim, 9)


async def test_a_malformed_swim_message_from_a_member_is_dropped_not_treated_as_a_node_bug(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by the live-port fuzzer (issue 14, test_live_fuzz.py): the SWIM driver raises RemoteProtocolError for
    # a message it cannot decode, and the node let it escape its message handler. The connection then logged it
    # as a bug in the node, with a traceback, and dropped the member's link (and the Raft traffic on it).
    async with SimCluster(3, seed=17) as sim:
        await sim[0].partition(P).put("balance", 4)
        member = sim.nodes[1]
        identity = Identity(node_id=member.node_id, address=member.address, cluster_id=sim[0].cluster.cluster_id)
        async with open_transport(sim.net.host("mallory"), identity=identity) as evil:
            for garbage in ([2, 5, member.node_id], [1, -1, member.node_id, 1, 4, [], member.node_id], "swim"):
                assert evil.send(sim.nodes[0].address, ["swim", garbage])
            await trio.sleep(1)
            assert evil.is_connected(sim.nodes[0].address)  # the connection was not dropped
        assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]
        assert any("malformed SWIM message" in r.getMessage() for r in caplog.records)
        await still_serving(sim, 4)
