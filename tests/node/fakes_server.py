"""Fakes for testing ``borough.node.server.Server`` without a Raft cluster: a replica that applies proposals at
once through the real state machines into a real ``MemoryStore``, a replica registry, an address book and a
snapshot receiver, each recording what the server asked of it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import cbor2
import trio

from borough.config import NodeConfig
from borough.errors import NotLeader
from borough.ids import NodeId
from borough.kv import encode_value
from borough.node.protocol import Op, SendSnapshot, encode_call
from borough.node.roles import Roles
from borough.node.server import InvokeHandler, Server
from borough.node.statemachine import KvStateMachine, StateMachine, SystemStateMachine, encode_command
from borough.node.system_state import SYSTEM, join_command
from borough.raft.progress import ProgressState
from borough.raft.rawnode import PeerStatus, Status
from borough.raft.records import ConfState, Entry
from borough.raft.role import Role
from borough.ring.members import Member, MemberTable
from borough.store.memory import MemoryStore
from borough.wire.records import IncomingCall, PeerInfo

__all__ = [
    "CALLER",
    "ME",
    "FakeAddresses",
    "FakeReplica",
    "FakeReplicas",
    "FakeSnapshots",
    "Rig",
    "incoming",
    "make_rig",
    "put_data",
    "ring_voters",
]

ME = "n1"


@attrs.define
class FakeHost:
    node_id: str


class FakeReplica:
    """The part of ``borough.node.replica.Replica`` the server uses. A proposal is recorded (decoded) and then
    either answered from ``script`` (a result, or an exception to raise) or applied at once through the real
    state machine into the store, returning the state machine's result for it."""

    def __init__(
        self,
        store: MemoryStore,
        name: str,
        *,
        node_id: str = ME,
        is_leader: bool = True,
        leader: str | None = None,
        voters: Sequence[str] = (ME, "n2", "n3"),
    ) -> None:
        self.host = FakeHost(node_id)
        self.name = name
        self.store = store
        self.machine: StateMachine = (
            SystemStateMachine(store, name) if name == SYSTEM else KvStateMachine(name, store, now=trio.current_time)
        )
        self.applied = store.applied_index(name)
        self.is_leader = is_leader
        self.leader = node_id if is_leader else leader
        self.term = 4
        self.voters = tuple(voters)
        self.barriers = 0
        self.proposed: list[Any] = []
        self.script: deque[Any] = deque()

    async def read_barrier(self, *, anywhere: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        if not anywhere and not self.is_leader:
            raise NotLeader(self.name, self.leader)
        self.barriers += 1

    async def propose(self, data: bytes) -> Any:
        await trio.lowlevel.checkpoint()
        self.proposed.append(cbor2.loads(data))
        if self.script:
            answer = self.script.popleft()
            if isinstance(answer, BaseException):
                raise answer
            return answer
        index = self.applied + 1
        ops, results = self.machine.apply([Entry(term=self.term, index=index, data=data)])
        batch = self.store.write_batch()
        batch.apply(self.name, ops, index, self.machine.record_changes())
        self.store.write(batch)
        self.applied = index
        return results.get(index)

    def status(self) -> Status:
        progress = {
            NodeId(ME): PeerStatus(
                match=self.applied,
                next=self.applied + 1,
                state=ProgressState.REPLICATE,
                recent_active=True,
                learner=False,
                inflight=0,
            ),
            NodeId("n2"): PeerStatus(
                match=self.applied - 1,
                next=self.applied,
                state=ProgressState.REPLICATE,
                recent_active=True,
                learner=False,
                inflight=1,
            ),
            NodeId("n3"): PeerStatus(
                match=0,
                next=1,
                state=ProgressState.PROBE,
                recent_active=False,
                learner=False,
                inflight=0,
            ),
        }
        return Status(
            id=NodeId(self.host.node_id),
            role=Role.LEADER if self.is_leader else Role.FOLLOWER,
            term=self.term,
            vote=NodeId(self.host.node_id),
            leader=None if self.leader is None else NodeId(self.leader),
            commit=self.applied + 2,
            applied=self.applied,
            last_index=self.applied + 2,
            learner=False,
            conf_state=ConfState(voters=[NodeId(v) for v in self.voters]),
            lead_transferee=None,
            progress={k: v for k, v in progress.items() if k in self.voters},
        )


class FakeReplicas:
    """The server's ``ServedReplicas``: hosted replicas by name; ``leader`` refuses with the leader's address
    (looked up with the server's ``address_of``) on a replica that does not lead, as the real registry does."""

    def __init__(self) -> None:
        self.hosted: dict[str, FakeReplica] = {}
        self.local_calls: list[str] = []
        self.leader_calls: list[str] = []

    def add(self, replica: FakeReplica) -> FakeReplica:
        self.hosted[replica.name] = replica
        return replica

    def _find(self, name: str) -> FakeReplica:
        replica = self.hosted.get(name)
        if replica is None:
            raise NotLeader(name, None)
        return replica

    async def local(self, name: str, *, empty_ok: bool = False) -> Any:
        await trio.lowlevel.checkpoint()
        self.local_calls.append(name)
        return self._find(name)

    async def leader(self, name: str, address_of: Callable[[str], str | None], *, electing_ok: bool = False) -> Any:
        await trio.lowlevel.checkpoint()
        self.leader_calls.append(name)
        replica = self._find(name)
        if not replica.is_leader:
            leader = replica.leader
            raise NotLeader(name, leader, address_of(leader) if leader else None)
        return replica


class FakeAddresses:
    """The server's ``AddressBook``: fixed addresses plus the ones it learned."""

    def __init__(self, known: Mapping[str, str] | None = None) -> None:
        self.known = dict(known or {})
        self.learned: dict[str, str] = {}

    def learn_address(self, node_id: str | None, address: str | None) -> None:
        if node_id and address:
            self.learned[node_id] = address

    def address_of(self, node_id: str) -> str | None:
        return self.known.get(node_id) or self.learned.get(node_id)


class FakeSnapshots:
    def __init__(self) -> None:
        self.received: list[tuple[str, SendSnapshot, Mapping[str, Any] | None]] = []

    async def receive(
        self, partition: str, op: SendSnapshot, streams: Mapping[str, trio.abc.ReceiveStream] | None
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.received.append((partition, op, streams))

    def sending_to(self, partition: str) -> list[str]:
        return []


def ring_voters(partition: str, table: MemberTable) -> list[str]:
    """A stand-in placement: the first three ACTIVE members by node id."""
    return [str(m.node_id) for m in table.ring_members()][:3]


@attrs.define
class Rig:
    server: Server
    store: MemoryStore
    replicas: FakeReplicas
    addresses: FakeAddresses
    snapshots: FakeSnapshots
    placed: list[tuple[str, int]]

    def replica(self, name: str) -> FakeReplica:
        return self.replicas.hosted[name]

    def host(self, name: str, **kwargs: Any) -> FakeReplica:
        return self.replicas.add(FakeReplica(self.store, name, **kwargs))

    async def join_members(self, members: Iterable[tuple[str, str]]) -> None:
        """Put members in the ``_system`` replica's table (then forget the proposals: they are set-up)."""
        system = self.replica(SYSTEM)
        for node_id, address in members:
            await system.propose(encode_command(join_command(node_id, address)))
        system.proposed.clear()


def make_rig(
    *,
    invoke_handler: InvokeHandler | None = None,
    request_timeout: float = 10.0,
    max_key_bytes: int = 64,
    max_value_bytes: int = 1024,
    known: Mapping[str, str] | None = None,
    replica_set: Callable[[str, MemberTable], Sequence[str]] = ring_voters,
) -> Rig:
    store = MemoryStore()
    replicas = FakeReplicas()
    addresses = FakeAddresses(known if known is not None else {ME: "n1:1", "n2": "n2:1"})
    snapshots = FakeSnapshots()
    placed: list[tuple[str, int]] = []

    def place(partition: str, table: MemberTable) -> Sequence[str]:
        placed.append((partition, table.version))
        return replica_set(partition, table)

    members = MemberTable(members=[Member(node_id=n, address=f"{n}:1") for n in (ME, "n2", "n9")])
    server = Server(
        node_id=ME,
        roles=Roles(members=lambda: members, unknown_member=lambda: None),
        config=NodeConfig(
            data_dir=None,
            request_timeout=request_timeout,
            max_key_bytes=max_key_bytes,
            max_value_bytes=max_value_bytes,
        ),
        store=store,
        replicas=replicas,
        addresses=addresses,
        snapshots=snapshots,
        replica_set=place,
        cluster_id=lambda: "cluster-7",
        invoke_handler=invoke_handler,
    )
    return Rig(server, store, replicas, addresses, snapshots, placed)


def put_data(store: MemoryStore, partition: str, items: Mapping[str | bytes, Any]) -> None:
    """Write ``items`` (values encoded here) into ``partition`` as applied data."""
    batch = store.write_batch()
    batch.apply(partition, [("put", k, encode_value(v)) for k, v in items.items()], store.applied_index(partition) + 1)
    store.write(batch)


CALLER = PeerInfo(node_id="n9", address="n9:7", cluster_id="cluster-7", is_client=False)


def incoming(
    partition: str,
    op: Op | list[Any] | Any,
    seconds_left: float | None = 5.0,
    *,
    peer: PeerInfo = CALLER,
    streams: Mapping[str, trio.abc.ReceiveStream] | None = None,
) -> IncomingCall:
    """An ``IncomingCall`` as the wire hands it over: ``op`` encoded and sent through CBOR, or a raw body."""
    body = encode_call(partition, op, seconds_left) if isinstance(op, Op) else op
    return IncomingCall(peer=peer, body=cbor2.loads(cbor2.dumps(body)), streams=dict(streams or {}))
