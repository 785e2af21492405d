"""Shared fakes for the node-layer replica tests: a recording ``ReplicaHost`` over a ``MemoryStore`` with the
real group committer, a tiny in-memory Raft network between ``Replica`` drivers, and helpers to bootstrap,
run, tick and wait (in virtual time: every test that uses them runs under ``autojump_clock``).

The host's event log interleaves what the replica sent (``Sent``) with what reached the store (``Written``,
recorded by the store itself when the group committer writes), so a test can check the order the driver
carried a Ready out in: appends before the write, votes after it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

from borough.errors import StorageError
from borough.kv import encode_value
from borough.node.incarnations import Stamp
from borough.node.replica import Replica
from borough.node.rounds import Rounds
from borough.node.statemachine import StateMachine
from borough.raft.config import RaftConfig
from borough.raft.messages import AppendResponse, InstallSnapshot, Message, VoteResponse
from borough.raft.records import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from borough.store.batch import WriteBatch
from borough.store.group_commit import Done, GroupCommit, open_group_commit
from borough.store.memory import MemoryStore

PARTITION = "p"
TICK = 0.1


# --- what the host records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """``send_raft`` was called with these messages."""

    partition: str
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class Written:
    """The group committer wrote a batch to the store; the partition's state right after it."""

    sync: bool
    last_index: int
    hard_state: HardState


Event = Sent | Written


class RecordingStore(MemoryStore):
    """A MemoryStore that appends a ``Written`` event to ``events`` after every batch written to it."""

    def __init__(self, events: list[Event], partition: str = PARTITION) -> None:
        self.events = events
        self.partition = partition
        super().__init__()

    def write(self, batch: WriteBatch, *, sync: bool = True) -> None:
        super().write(batch, sync=sync)
        p = self.partition
        if p in self.replicas():
            self.events.append(Written(sync, self.last_index(p), self.hard_state(p)))


class HoldableCommitter:
    """The real group committer, with a gate in front: while held, commits wait (a slow disk under our control)."""

    def __init__(self, inner: GroupCommit) -> None:
        self.inner = inner
        self.store = inner.store
        self._gate: trio.Event | None = None
        self.waiting = 0  # commits (and submissions) waiting at the gate
        self.syncs: list[bool] = []  # the sync flag of every commit and submission, in order
        self._held: list[tuple[list[WriteBatch], bool, Done]] = []  # submissions waiting at the gate

    def hold(self) -> None:
        if self._gate is None:
            self._gate = trio.Event()

    def release(self) -> None:
        gate, self._gate = self._gate, None
        held, self._held = self._held, []
        for batches, sync, done in held:
            self.waiting -= 1
            try:
                self.inner.submit(batches, sync=sync, done=done)
            except StorageError as exc:
                done([exc] * len(batches))
        if gate is not None:
            gate.set()

    def submit(self, batches: list[WriteBatch], *, sync: bool, done: Done) -> None:
        self.syncs.append(sync)
        if self._gate is not None:  # it waits for the gate that was closed when it arrived
            self.waiting += 1
            self._held.append((batches, sync, done))
            return
        self.inner.submit(batches, sync=sync, done=done)

    async def room(self) -> None:
        await self.inner.room()

    @property
    def has_room(self) -> bool:
        return self.inner.has_room

    @property
    def writes_at_once(self) -> bool:
        return self._gate is None and self.inner.writes_at_once

    async def step(self) -> None:
        """Let the commits waiting now through, keep holding later ones, and let everything run."""
        self.release()
        self.hold()
        await settle()

    async def commit(self, batch: WriteBatch, *, sync: bool = True) -> None:
        self.syncs.append(sync)
        gate = self._gate  # a commit waits for the gate that was closed when it arrived
        if gate is not None:
            self.waiting += 1
            try:
                await gate.wait()
            finally:
                self.waiting -= 1
        await self.inner.commit(batch, sync=sync)


@dataclass(eq=False)
class FakeHost:
    """A ``ReplicaHost`` that records what its replicas ask of it (and routes it through ``net`` if set)."""

    node_id: str
    store: RecordingStore
    committer: Any  # HoldableCommitter (duck-typed as the GroupCommit the protocol names)
    fsync: bool = True
    events: list[Event] = field(default_factory=list)
    leaders: list[tuple[str, str | None, int]] = field(default_factory=list)
    snapshot_requests: list[InstallSnapshot] = field(default_factory=list)
    net: Net | None = None
    on_snapshot: Callable[[Replica, InstallSnapshot], None] | None = None
    rounds: Any = None  # the node's rounds (``borough.node.rounds``), where replicas' Raft work is done

    def send_raft(self, partition: str, messages: Sequence[Message], stamp: Stamp | None = None) -> None:
        sent = Sent(partition, tuple(messages))
        self.events.append(sent)
        if self.net is not None:
            self.net.route(sent.messages, stamp)

    def send_snapshot(self, replica: Replica, message: InstallSnapshot) -> None:
        self.snapshot_requests.append(message)
        if self.on_snapshot is not None:
            self.on_snapshot(replica, message)
        elif self.net is not None:
            self.net.stream_snapshot(replica, message)

    def leader_changed(self, partition: str, leader: str | None, term: int) -> None:
        self.leaders.append((partition, leader, term))

    def sent(self, kind: type | None = None) -> list[Message]:
        """Every message sent so far (of ``kind``), in order."""
        return [
            m for e in self.events if isinstance(e, Sent) for m in e.messages if kind is None or isinstance(m, kind)
        ]


@asynccontextmanager
async def open_host(node_id: str, partition: str = PARTITION, *, fsync: bool = True) -> AsyncIterator[FakeHost]:
    events: list[Event] = []
    store = RecordingStore(events, partition)
    async with open_group_commit(store, offload=False) as gc, trio.open_nursery() as nursery:
        committer = HoldableCommitter(gc)
        rounds = Rounds(committer)  # type: ignore[arg-type]
        nursery.start_soon(rounds.run, name="rounds")
        yield FakeHost(node_id, store, committer, fsync=fsync, events=events, rounds=rounds)
        nursery.cancel_scope.cancel()


# --- state machines -------------------------------------------------------------------------------------------


class KeyMachine:
    """Each normal entry's data is a key: applying it puts ``key -> index`` and returns ``(key, index)``."""

    def __init__(self) -> None:
        self.applied: list[Entry] = []
        self.reloads = 0

    def apply(self, entries: Sequence[Entry]) -> tuple[list[Any], dict[int, Any]]:
        ops: list[Any] = []
        results: dict[int, Any] = {}
        for entry in entries:
            self.applied.append(entry)
            if entry.kind == EntryKind.NORMAL and entry.data:
                key = entry.data.decode()
                ops.append(("put", key, encode_value(entry.index)))
                results[entry.index] = (key, entry.index)
        return ops, results

    def reload(self) -> None:
        self.reloads += 1

    def record_changes(self) -> list[tuple[bytes, bytes | None]]:
        return []


# --- bootstrapping and running --------------------------------------------------------------------------------


async def bootstrap(host: FakeHost, voters: Iterable[str], partition: str = PARTITION) -> None:
    """Write a new group's initial configuration, as ``Replicas.bootstrap`` does."""
    batch = host.store.write_batch()
    batch.set_snapshot_meta(partition, SnapshotMeta(index=0, term=0, conf_state=ConfState(voters=list(voters))))
    await host.committer.commit(batch)


async def prefill(host: FakeHost, count: int, voters: Iterable[str] = ("a",), partition: str = PARTITION) -> None:
    """A group's store as its leader would leave it: entries 1..count of term 1 (data ``k<i>``) committed and
    applied (each puts ``k<i> -> i``), with the leader's vote."""
    await bootstrap(host, voters, partition)
    batch = host.store.write_batch()
    entries = [Entry(term=1, index=i, data=f"k{i}".encode()) for i in range(1, count + 1)]
    batch.append(partition, entries)
    batch.set_hard_state(partition, HardState(term=1, vote=next(iter(voters)), commit=count))
    batch.apply(partition, [("put", f"k{i}", encode_value(i)) for i in range(1, count + 1)], count)
    await host.committer.commit(batch)


def make_replica(
    host: FakeHost,
    partition: str = PARTITION,
    *,
    machine: StateMachine | None = None,
    snapshot_every: int = 0,
    seed: int = 0,
    **raft: Any,
) -> Replica:
    config = RaftConfig(id=host.node_id, group=partition, **raft)  # type: ignore[arg-type]
    return Replica(
        host, partition, config, machine if machine is not None else KeyMachine(), random.Random(seed),
        snapshot_every=snapshot_every, rounds=host.rounds,
    )  # fmt: skip


async def run_replica(
    replica: Replica, *, task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
) -> None:
    """``replica.run()`` in its own cancel scope (handed to ``nursery.start``), so a test can stop one driver."""
    with trio.CancelScope() as scope:
        task_status.started(scope)
        await replica.run()


async def wait_until(predicate: Callable[[], bool], *, within: float = 60.0, step: float = 0.01) -> None:
    """Poll ``predicate`` in virtual time; fail the test if it does not hold within ``within`` seconds."""
    with trio.fail_after(within):
        while True:
            if predicate():
                return
            await trio.sleep(step)


async def settle() -> None:
    """Let every task run until all are blocked, without virtual time passing."""
    await trio.testing.wait_all_tasks_blocked()


@dataclass(eq=False)
class Running:
    """One replica whose driver runs in ``scope`` (cancel it to stop the driver alone)."""

    host: FakeHost
    replica: Replica
    nursery: trio.Nursery
    scope: trio.CancelScope

    @property
    def committer(self) -> HoldableCommitter:
        committer = self.host.committer
        assert isinstance(committer, HoldableCommitter)
        return committer


@asynccontextmanager
async def open_replica(
    voters: Sequence[str], node_id: str = "a", *, fsync: bool = True, snapshot_every: int = 0, **raft: Any
) -> AsyncIterator[Running]:
    """A replica of a group of ``voters`` on ``node_id``, with its driver running and no network: the test
    delivers the other voters' messages by hand (and nothing ticks unless the test does)."""
    async with open_host(node_id, fsync=fsync) as host, trio.open_nursery() as nursery:
        await bootstrap(host, voters)
        replica = make_replica(host, snapshot_every=snapshot_every, **raft)
        scope = await nursery.start(run_replica, replica)
        yield Running(host, replica, nursery, scope)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def single_leader(node_id: str = "a", **kwargs: Any) -> AsyncIterator[Running]:
    """A one-voter group on ``node_id`` that elected itself (and applied its no-op), with its driver running."""
    async with open_replica([node_id], node_id, **kwargs) as running:
        replica = running.replica
        replica.campaign()
        await wait_until(lambda: replica.is_leader and replica.applied >= 1)
        yield running


async def elect_by_hand(replica: Replica, voter: str = "b") -> None:
    """Make ``replica`` (a follower at term 0 of a three-voter group) leader of term 1 with ``voter``'s votes,
    and commit its no-op with ``voter``'s acknowledgement."""
    me = replica.host.node_id
    for _ in range(10):  # an election timeout (the default election_tick): a lease-mode replica starts as if
        replica.tick()  # it had just heard from a leader, and campaigns only once that lease has run out
    replica.campaign()
    await settle()
    replica.deliver(VoteResponse(frm=voter, to=me, term=1, pre_vote=True))
    await settle()
    replica.deliver(VoteResponse(frm=voter, to=me, term=1))
    await settle()
    assert replica.is_leader and replica.term == 1
    replica.deliver(AppendResponse(frm=voter, to=me, term=1, index=1))
    await settle()
    assert replica.applied == 1


# --- a group of drivers on an in-memory network ----------------------------------------------------------------


class Net:
    """Delivers ``send_raft`` messages straight to the addressed replica's ``deliver`` (synchronously: it only
    queues). ``cut`` nodes are isolated both ways; ``drop`` may veto single messages (both kinds are kept in
    ``dropped``). Snapshot requests are served by copying the leader's applied data (``stream_snapshot``)."""

    def __init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self.cut: set[str] = set()
        self.drop: Callable[[Message], bool] | None = None
        self.dropped: list[Message] = []
        self.snapshots_sent = 0

    def blocked(self, frm: str, to: str) -> bool:
        return frm in self.cut or to in self.cut

    def route(self, messages: Iterable[Message], stamp: Stamp | None = None) -> None:
        for m in messages:
            if self.blocked(m.frm, m.to) or (self.drop is not None and self.drop(m)):
                self.dropped.append(m)
                continue
            target = self.replicas.get(m.to)
            if target is not None:
                target.deliver(m, *(stamp(m.to) if stamp is not None else (0, 0)))

    def stream_snapshot(self, leader: Replica, message: InstallSnapshot) -> None:
        """What ``Snapshots`` does, in one go: stage the leader's applied data in the follower and offer it."""
        target = self.replicas.get(message.to)
        if target is None or self.blocked(message.frm, message.to):
            leader.report_snapshot(message.to, False)
            return
        reader = leader.host.store.snapshot_chunks(leader.name)
        meta = leader.snapshot_meta_at(reader.applied_index)
        install = target.begin_install()
        for chunk in reader:
            install.add_chunk(chunk)
        target.offer_snapshot(install, InstallSnapshot(frm=message.frm, to=message.to, term=message.term, meta=meta))
        self.snapshots_sent += 1
        leader.report_snapshot(message.to, True)


@dataclass(eq=False)
class Group:
    hosts: dict[str, FakeHost]
    replicas: dict[str, Replica]
    net: Net
    scopes: dict[str, trio.CancelScope]
    nursery: trio.Nursery
    ticking: set[str]

    def leaders(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.is_leader]

    def leader(self) -> Replica | None:
        """The leader of the highest term, if any."""
        leaders = sorted(self.leaders(), key=lambda r: r.term)
        return leaders[-1] if leaders else None

    async def wait_leader(self, *, among: Iterable[str] | None = None, within: float = 60.0) -> Replica:
        names = set(among) if among is not None else set(self.replicas)

        def found() -> bool:
            r = self.leader()
            return r is not None and r.host.node_id in names and r.applied >= r.status().commit > 0

        await wait_until(found, within=within)
        leader = self.leader()
        assert leader is not None
        return leader


async def _ticker(group: Group) -> None:
    while True:
        await trio.sleep(TICK)
        for name in sorted(group.ticking):
            group.replicas[name].tick()


@asynccontextmanager
async def open_group(
    nodes: Sequence[str],
    *,
    voters: Sequence[str] | None = None,
    snapshot_every: int = 0,
    seed: int = 1,
    **raft: Any,
) -> AsyncIterator[Group]:
    """Replicas of one partition on ``nodes`` (each with its own store and committer), wired through a ``Net``
    and ticked every ``TICK`` seconds. ``voters`` (default: every node) are bootstrapped with the initial
    configuration; the other nodes start empty, as a replica created to receive a snapshot does."""
    voters = list(nodes) if voters is None else list(voters)
    net = Net()
    async with AsyncExitStack() as stack:
        hosts: dict[str, FakeHost] = {}
        for node in nodes:
            host = await stack.enter_async_context(open_host(node))
            host.net = net
            if node in voters:
                await bootstrap(host, voters)
            hosts[node] = host
        replicas = {
            node: make_replica(hosts[node], snapshot_every=snapshot_every, seed=seed + i, **raft)
            for i, node in enumerate(nodes)
        }
        net.replicas.update(replicas)
        nursery = await stack.enter_async_context(trio.open_nursery())
        group = Group(hosts, replicas, net, {}, nursery, set(nodes))
        for node, replica in replicas.items():
            group.scopes[node] = await nursery.start(run_replica, replica)
        nursery.start_soon(_ticker, group)
        try:
            yield group
        finally:
            nursery.cancel_scope.cancel()
