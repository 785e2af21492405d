"""The replicas a node hosts: creating, running, ticking, finding and deleting them.

This module owns the node's table of replicas and each replica's lifetime: a replica is started from the data
dir (on restart), from its partition's directory record (when this node is an initial voter), or empty (when a
leader talks to this node about a group it does not host yet: ``borough.node.arrivals`` holds the messages). Each
runs in a task of the node's nursery; one ticker drives every replica's Raft clock. A replica that fails is
restarted from disk after a backoff without touching the others; only a storage failure stops the node. A
replica removed from its group deletes its data (leaving a tombstone) before it leaves the table, so no message
can start a new replica on top of data about to disappear. It knows nothing of the wire, routing or what
operations mean.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence

import trio

from borough.config import NodeConfig
from borough.errors import NotFound, NotLeader, StorageError, Unavailable
from borough.ids import NodeId
from borough.node.arrivals import Arrivals
from borough.node.clocks import Clocks
from borough.node.leaders import Leaders
from borough.node.records import DirectoryRecord, Hosting
from borough.node.replica import Replica, ReplicaHost
from borough.node.rounds import Rounds
from borough.node.statemachine import KvStateMachine, StateMachine, SystemStateMachine
from borough.node.system_state import SYSTEM, SystemState
from borough.raft.config import RaftConfig
from borough.raft.messages import Message
from borough.raft.records import ConfState, HardState, SnapshotMeta
from borough.store.batch import WriteBatch

__all__ = ["Replicas"]

logger = logging.getLogger(__name__)

#: The most a message's term may exceed the replica's own: more elections than any group holds in practice
#: (a forged term near 2**63 would otherwise wedge the group, since no election could pass it).
MAX_TERM_GAP = 1 << 32
#: A failed replica restarts after RESTART_FIRST seconds, doubling with each failure of it up to RESTART_MAX.
RESTART_FIRST = 1.0
RESTART_MAX = 60.0

#: Looks a partition's directory record up (NotFound when the partition was never registered).
FindRecord = Callable[[str], Awaitable[DirectoryRecord]]


class Replicas:
    """This node's replicas, by partition name."""

    def __init__(
        self,
        *,
        host: ReplicaHost,
        config: NodeConfig,
        rng: random.Random,
        nursery: trio.Nursery,
        find_record: FindRecord,
        known_record: Callable[[str], DirectoryRecord | None] = lambda name: None,
        on_deleted: Callable[[str], None] = lambda name: None,
        on_tick: Callable[[int], None] | None = None,
        after_round: Callable[[], None] | None = None,
    ) -> None:
        self._host, self._config, self._rng, self._nursery = host, config, rng, nursery
        self._find_record, self._on_deleted, self._on_tick = find_record, on_deleted, on_tick
        self._replicas: dict[str, Replica] = {}
        # The replicas whose Raft clock runs (the others are quiesced); ticks follow elapsed time (``Clocks``).
        self.clocks = Clocks(config.tick_interval, most_late=config.election_ticks)
        # Every replica's Raft work, in batches: the ticks due go first, the outbox is flushed after (``after_round``).
        self.rounds = Rounds(host.committer, before=lambda: self.clocks.catch_up(self._on_tick), after=after_round)
        nursery.start_soon(self.rounds.run, name="raft rounds")
        self.leaders = Leaders(self)  # where each replica's leader is (the node reports their leader changes)
        # Raft messages for groups not hosted here yet, and the replicas made for them.
        timeout = config.request_timeout
        self.arrivals = Arrivals(host=host, maker=self, nursery=nursery, known_record=known_record, timeout=timeout)
        #: Messages dropped with a term out of reach of any group (``MAX_TERM_GAP``).
        self.dropped_terms = 0
        self._restarts: dict[str, int] = {}  # partition -> failures of its replica so far (for the backoff)
        #: Replicas that failed (and were restarted from disk).
        self.failures = 0

    # --- the table ------------------------------------------------------------------------------------

    def get(self, name: str) -> Replica | None:
        return self._replicas.get(name)

    def __getitem__(self, name: str) -> Replica:
        return self._replicas[name]

    def __contains__(self, name: object) -> bool:
        return name in self._replicas

    def __iter__(self) -> Iterator[str]:
        return iter(self._replicas)

    def __len__(self) -> int:
        return len(self._replicas)

    def items(self) -> list[tuple[str, Replica]]:
        return list(self._replicas.items())

    def hosting(self) -> Hosting:
        """The replicas this node holds, and which of them it leads."""
        names = sorted(self._replicas)
        return Hosting(replicas=tuple(names), leaderships=tuple(n for n in names if self._replicas[n].is_leader))

    def system_state(self) -> SystemState | None:
        """The member table and directory of this node's ``_system`` replica, if it hosts one."""
        replica = self._replicas.get(SYSTEM)
        if replica is None:
            return None
        machine = replica.machine
        assert isinstance(machine, SystemStateMachine)
        return machine.state

    # --- creating replicas ------------------------------------------------------------------------------

    def start(self, name: str) -> Replica:
        """Start this node's replica of ``name`` from whatever the store holds for it (possibly nothing)."""
        store = self._host.store
        machine: StateMachine = (
            SystemStateMachine(store, name)
            if name == SYSTEM
            else KvStateMachine(name, store, now=trio.current_time, expiry=self._config.session_expiry)
        )
        rng = random.Random(self._rng.getrandbits(64))
        raft = raft_config(self._host.node_id, name, self._config)
        every, rounds = self._config.snapshot_entries, self.rounds
        replica = Replica(self._host, name, raft, machine, rng, snapshot_every=every, rounds=rounds, clocks=self.clocks)
        self._replicas[name] = replica
        self._nursery.start_soon(self._run, replica, name=f"replica {name!r}")
        for message, to_inc, frm_inc in self.arrivals.take(name):
            replica.deliver(message, to_inc, frm_inc)
        return replica

    def resume(self) -> None:
        """Start every replica the data dir holds (after a restart)."""
        for name in sorted(self._host.store.replicas()):
            if name not in self._replicas:
                self.start(name)

    async def _run(self, replica: Replica) -> None:
        try:
            try:
                await replica.run()
            except StorageError:
                raise  # the data dir cannot be trusted: the whole node stops (fail-stop)
            except Exception as exc:
                # One partition's failure (a bug, or a peer's message no check foresaw) is that partition's:
                # its replica stops, its callers get Unavailable, and it restarts from its durable state.
                self.failures += 1
                tries = self._restarts[replica.name] = self._restarts.get(replica.name, 0) + 1
                delay = min(RESTART_MAX, RESTART_FIRST * 2 ** min(tries - 1, 16))
                logger.error("partition %r: replica failed; restart in %.1f s", replica.name, delay, exc_info=exc)
                self._nursery.start_soon(self._restart, replica, delay)
                return
            if replica.removed:
                # Removed from the group: delete the replica's data. It stays in the table (stopped, refusing
                # everything) until the delete is written, so no message can start a new replica on top of
                # data that is about to disappear.
                batch = self._host.store.write_batch()
                batch.destroy(replica.name, replica.tombstone())
                await self._host.committer.commit(batch)
                self._on_deleted(replica.name)
        finally:
            if self._replicas.get(replica.name) is replica:
                del self._replicas[replica.name]

    async def _restart(self, failed: Replica, delay: float) -> None:
        await trio.sleep(delay)
        if failed.name not in self._replicas and self._host.store.has_replica(failed.name):
            self.start(failed.name)

    async def bootstrap(
        self, name: str, voters: Sequence[str], *, sync: bool = True, appoint: str | None = None
    ) -> Replica:
        """Create a new group's replica with its initial configuration (a snapshot meta at index 0), and with
        ``appoint`` the group's first leader: every initial voter starts at term 1 having voted for it, so it
        leads term 1 with no election (``Raft.take_appointment``). Not ``sync``: durable with the replica's first
        synced write (its first vote or answer); lost before that, nothing depended on it."""
        await self._host.committer.commit(self.first_batch(name, voters, appoint), sync=sync)
        return self._replicas.get(name) or self.start(name)

    def first_batch(self, name: str, voters: Sequence[str], appoint: str | None) -> WriteBatch:
        """The batch that makes a new group's replica (see ``bootstrap``)."""
        batch = self._host.store.write_batch()
        batch.set_snapshot_meta(name, SnapshotMeta(index=0, term=0, conf_state=ConfState(voters=voters)))
        if appoint is not None:
            batch.set_hard_state(name, HardState(term=1, vote=NodeId(appoint), commit=0))
        return batch

    async def local(self, name: str, *, empty_ok: bool = False, wait: bool = True) -> Replica:
        """This node's replica of ``name``, created if this node is one of its initial voters (or, with
        ``empty_ok``, created empty to receive a leader's log or snapshot; raises NotFound when the directory
        has no such partition, so made-up names create nothing). Raises NotLeader when this node holds none.
        Creating the group here as its ring owner starts its first election, and (with ``wait``) waits for it."""
        replica = self._replicas.get(name)
        if replica is not None:
            return replica
        if self._host.store.has_replica(name):
            return self.start(name)
        # A group is created from its directory record only on a node that never held a replica of it. Once the
        # group has moved away from this node (a tombstone is left), the record's voters are history: creating
        # the group again from them would make a second group for the partition (the record lists this node;
        # it may even be its only voter). Here it is only ever created empty, for a leader that adds it back.
        deleted_here = self._host.store.tombstone(name) is not None
        if name != SYSTEM and (empty_ok or not deleted_here):
            try:
                record: DirectoryRecord | None = await self._find_record(name)
            except NotFound:
                if empty_ok:
                    raise
                record = None
            if record is not None and not deleted_here and self._host.node_id in record.voters:
                # (Re-made from the record if lost.) The ring owner, the record's first voter, is appointed the
                # group's first leader: it leads at once, and a write rides with its first entry.
                replica = await self.bootstrap(name, record.voters, sync=False, appoint=record.voters[0])
                if record.voters[0] == self._host.node_id:
                    replica.campaign()
                    if not wait:
                        return replica
                    with trio.move_on_after(self._config.election_ticks * self._config.tick_interval):
                        await self.leaders.wait_known(name)  # (not "no leader yet", to be retried everywhere)
                return replica
        if empty_ok:
            return self._replicas.get(name) or self.start(name)
        raise NotLeader(name, None)

    async def leader(self, name: str, address_of: Callable[[str], str | None], *, electing_ok: bool = False) -> Replica:
        """This node's replica of ``name`` if it leads the group; else NotLeader with the leader's address. With
        ``electing_ok`` (a write) also one electing itself the group's first leader (``Replica.electing``), at
        once: the write waits in its queue and rides with the new leader's first entry."""
        replica = await self.local(name, wait=not electing_ok)
        if electing_ok and replica.electing:
            return replica
        if not replica.is_leader:
            raise NotLeader(name, leader := replica.leader, address_of(leader) if leader else None)
        return replica

    # --- inbound Raft messages ----------------------------------------------------------------------------

    def deliver(
        self, partition: str, message: Message, to_inc: int = 0, frm_inc: int = 0, *, member: bool = True
    ) -> None:
        """Hand a peer's Raft message (with incarnations: ``borough.node.incarnations``) to its replica, creating
        it when a leader talks to us first (a ``member`` of the cluster: a node the table does not list creates
        nothing). A term past ``MAX_TERM_GAP`` is dropped (it would wedge the group)."""
        replica = self._replicas.get(partition)
        if message.term > (replica.term if replica is not None else 0) + MAX_TERM_GAP:
            self.dropped_terms += 1
            return
        if replica is not None or not member:  # (a non-member's message creates no replica)
            if replica is not None:
                replica.deliver(message, to_inc, frm_inc, member=member)
            return
        self.arrivals.hold(partition, message, to_inc, frm_inc)

    async def for_snapshot(self, name: str, to_inc: int) -> Replica:
        """This node's replica of ``name`` to install a snapshot meant for incarnation ``to_inc`` in, created
        empty if there is none (the replica itself then checks the incarnations, see ``Replica.deliver``)."""
        if name not in self._replicas and self.arrivals.deleted_incarnation(name, to_inc):
            raise Unavailable(f"partition {name!r}: the snapshot is for a replica {self._host.node_id} has deleted")
        return await self.local(name, empty_ok=True)

    # --- the Raft clock -----------------------------------------------------------------------------------

    async def tick_forever(self) -> None:
        await self.clocks.tick_forever(self._on_tick)


def raft_config(node_id: str, name: str, c: NodeConfig) -> RaftConfig:
    """The Raft settings of this node's replica of partition ``name``."""
    return RaftConfig(
        id=NodeId(node_id),
        group=name,
        election_tick=c.election_ticks,
        heartbeat_tick=c.heartbeat_ticks,
        read_only="lease" if c.read_mode == "lease" else "safe",
        max_msg_bytes=c.max_msg_bytes,
        max_uncommitted_bytes=c.max_uncommitted_bytes,
        quiesce_ticks=c.quiesce_ticks,
        # Every node learns a ``_system`` commit (a partition's directory record) at once, so the partition's
        # first write and its replicas' creation find the record in their own ``_system`` replica.
        commit_broadcast=name == SYSTEM,
        # Fewer, larger appends under load: with 64 clients writing into one partition, 20% fewer instructions a
        # put in the simulator, and about 5% more puts a second at 6% less CPU a put on three processes
        # (``bench/alternate.py``, 6 and 8 alternations).
        coalesce_appends=True,
    )
