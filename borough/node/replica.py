"""One hosted replica: a partition's Raft core and the trio task that drives it.

This module owns the driver loop of etcd-io/raft's contract for one group: feed ticks, commands and inbound
messages to the core, then carry out each Ready's plan (``borough.raft.ready_plan``): send what may leave
early, persist through the node's group commit (every replica's writes of one cycle share one synced LevelDB
batch), send the rest, apply committed entries, settle waiters, advance. It also owns the waiters of local
callers: proposals wait until their entry is applied (or provably lost), linearizable reads wait for a
ReadIndex (batched: one round per cycle serves every read that arrived meanwhile) and for the apply to catch up.

The core is private and only the driver task changes it: proposals, reads, configuration changes, leadership
transfers, campaigns and snapshot reports are queued and carried out at the start of the driver's next round.
Other tasks may *read* the core's state through this class's queries (``status``, ``term``, ``leader``,
``snapshot_meta_at``, ``tombstone``): trio runs one task at a time, so a read is never torn. It does not know
how messages travel or how snapshots are streamed: the ``ReplicaHost`` does that.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import trio

from borough.errors import BoroughError, NotLeader, Overloaded, Unavailable
from borough.node.clocks import Clocks
from borough.node.inbox import Inbox
from borough.node.incarnations import Incarnations, Stamp
from borough.node.persist import ReplicaStats, compaction_target, ready_batch
from borough.node.staging import SnapshotStaging
from borough.node.statemachine import StateMachine
from borough.node.waiters import Proposals, Reads
from borough.raft.confchange import ConfChange
from borough.raft.config import RaftConfig
from borough.raft.messages import InstallSnapshot, Message
from borough.raft.rawnode import RawNode, Status
from borough.raft.ready_plan import ReadyPlan, plan_ready
from borough.raft.records import EntryKind, SnapshotMeta, Tombstone
from borough.raft.role import Role
from borough.store.base import Store
from borough.store.group_commit import GroupCommit
from borough.store.snapshot import SnapshotInstall

__all__ = ["Replica", "ReplicaHost"]

logger = logging.getLogger(__name__)

#: Proposals, reads and commands queued for the driver; beyond this callers get Overloaded (nothing ran).
QUEUE_LIMIT = 4096


class ReplicaHost(Protocol):
    """What a replica needs from its node."""

    node_id: str
    store: Store
    committer: GroupCommit
    #: False only when the operator turned fsync off (acknowledged writes may then be lost on power loss).
    fsync: bool

    def send_raft(self, partition: str, messages: Sequence[Message], stamp: Stamp) -> None:
        """Queue messages for their recipients, each with ``stamp(recipient)``, the (recipient's, sender's)
        incarnations (never blocks; may drop: Raft retransmits)."""
        ...

    def send_snapshot(self, replica: Replica, message: InstallSnapshot) -> None:
        """Start streaming this replica's applied state to ``message.to`` (in a task of the node's)."""
        ...

    def leader_changed(self, partition: str, leader: str | None, term: int) -> None: ...


class Replica:
    """A partition replica hosted by this node. Create it, then run ``run()`` in a node-owned nursery."""

    def __init__(
        self,
        host: ReplicaHost,
        name: str,
        raft_config: RaftConfig,
        machine: StateMachine,
        rng: random.Random,
        *,
        snapshot_every: int = 0,
        clocks: Clocks | None = None,
    ) -> None:
        self.host = host
        self.name = name
        self.machine = machine
        store = host.store
        self.applied = store.applied_index(name)
        tombstone = store.tombstone(name)
        self._raw = RawNode(raft_config, store.log_storage(name), rng, applied=self.applied, tombstone=tombstone)
        self.incarnations = Incarnations(host.node_id, self._raw.conf_state, tombstone)
        self.incarnations.observe(self._raw.conf_state_at(self.applied))
        self._snapshot_every = snapshot_every
        self._inbox = Inbox(name, clocks)  # the ticker ticks it while its core is awake
        self._proposals = Proposals()
        self._reads = Reads()
        self._staging = SnapshotStaging(store, name)
        self._stopped: BaseException | None = None
        self.stats = ReplicaStats()
        self.conf_change_in_flight = False
        self.removed = False  # set once this node is out of the group: the replica then stops for good

    def __repr__(self) -> str:
        return f"<Replica {self.name!r} on {self.host.node_id} {self._raw.role.name.lower()} term {self.term}>"

    # --- queries (read-only) ----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._raw.role is Role.LEADER

    @property
    def term(self) -> int:
        return self._raw.term

    @property
    def leader(self) -> str | None:  # the leader this replica knows of (a hint on followers), or None
        return self._raw.leader

    def status(self) -> Status:
        return self._raw.status()

    def snapshot_meta_at(self, index: int) -> SnapshotMeta:
        """The snapshot meta describing this replica's state at applied ``index`` (for a snapshot stream)."""
        return self._raw.snapshot_meta_at(index)

    def tombstone(self) -> Tombstone:
        """What a deleted replica leaves behind (see ``Tombstone``)."""
        return attrs.evolve(self._raw.tombstone(), incarnation=self.incarnations.deleted())

    @property
    def quiesced(self) -> bool:
        return self._raw.quiesced

    def hears_from_leader(self, within: float) -> bool:
        """Whether it leads, was quiesced by its leader (the detector watches it), or heard one within ``within`` s."""
        return self.is_leader or self._raw.quiesced or trio.current_time() - self._inbox.last_leader_contact <= within

    @property
    def dropped_messages(self) -> int:  # inbound messages dropped because the inbox was full
        return self._inbox.dropped

    def check_leader(self) -> None:
        """NotLeader unless this replica leads and runs (nothing was proposed: the caller may try elsewhere)."""
        if self._stopped is not None or self._raw.role is not Role.LEADER:
            raise NotLeader(self.name, self._raw.leader)

    # --- inputs from other tasks ------------------------------------------------------------------------

    def tick(self) -> None:
        self._inbox.tick()

    def deliver(self, message: Message, to_inc: int = 0, frm_inc: int = 0, *, member: bool = True) -> None:
        """A peer's Raft message; dropped outside current incarnations (``incarnations``; a sender that is not a
        ``member`` of the cluster changes none) or on a full inbox."""
        if self.incarnations.admit(message.frm, to_inc, frm_inc, member=member):
            self._inbox.deliver(message)

    def _queue_room(self) -> None:
        if len(self._proposals) + len(self._reads) + self._inbox.commands() >= QUEUE_LIMIT:
            raise Overloaded(f"partition {self.name!r} has {QUEUE_LIMIT} operations queued on {self.host.node_id}")

    def campaign(self) -> None:
        """Start an election now (a freshly created group's first replica, to skip one election timeout)."""
        self._inbox.command(RawNode.campaign)

    def command(self, fn: Callable[[RawNode], object]) -> None:
        """Run ``fn`` on the core at the driver's next round (``RawNode.forget_leader``, ``RawNode.wake``)."""
        self._inbox.command(fn)

    def report_snapshot(self, to: str, ok: bool) -> None:
        """The snapshot stream to ``to`` ended (``ok``) or failed: replication resumes by probing."""
        self._inbox.command(lambda raw: raw.report_snapshot(to, ok))

    async def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to`` (raises like ``RawNode.transfer_leadership``)."""
        self.check_leader()
        await self._inbox.call(lambda raw: raw.transfer_leadership(to))

    async def propose(self, data: bytes) -> Any:
        """Append a command on the leader and wait until it is applied; returns the state machine's result. Raises
        NotLeader when this replica does not lead or the entry was provably lost to a leader change (another was
        committed in its place); Overloaded when too much is queued. Cancellation leaves the outcome unknown."""
        return await self.propose_nowait(data).wait()

    async def propose_conf_change(self, change: ConfChange) -> None:
        """Propose a membership change and wait until it is applied (one at a time per group)."""
        self.conf_change_in_flight = True
        try:
            await self.propose_nowait(change).wait()
        finally:
            self.conf_change_in_flight = False

    def propose_nowait(self, data: bytes | ConfChange) -> Any:
        """Queue a command as ``propose`` does, now, and return its waiter (``await waiter.wait()``)."""
        self.check_leader()
        self._queue_room()
        waiter = self._proposals.queue(data)
        self._inbox.wake()
        return waiter

    async def read_barrier(self, *, anywhere: bool = False) -> None:
        """Return once this replica's applied state reflects every write that completed before the call (ReadIndex,
        §6.4 of Ongaro's thesis): on the leader, or with ``anywhere`` on a follower too (it asks its leader, §6.4.1)."""
        if not anywhere or self._stopped is not None:
            self.check_leader()
        self._queue_room()
        waiter = self._reads.queue()
        self._inbox.wake()
        await waiter.wait()

    def remove(self) -> None:
        """This node is no longer in the group (its leader says so): stop, and let the node delete the data."""
        self.removed = True
        self._inbox.wake()

    def begin_install(self, install: SnapshotInstall | None = None) -> SnapshotInstall:
        """Stage a snapshot streamed from the leader (in ``install`` if begun), replacing any unfinished one."""
        if self._stopped is not None:
            raise self._stopped
        return self._staging.begin(install)

    def offer_snapshot(self, install: SnapshotInstall, message: InstallSnapshot) -> bool:
        """All chunks are staged: let the core decide whether to install them. False when the data was dropped
        instead (a newer stream replaced it, or it is incomplete)."""
        if not self._staging.offer(install, message):
            return False
        self._inbox.offer(message)
        return True

    # --- the driver loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        raw = self._raw
        try:
            while True:
                await self._inbox.wait(raw.quiesced)
                self._feed()
                while raw.has_ready():
                    rd = raw.ready()
                    await self._carry_out(plan_ready(rd))
                    raw.advance(rd)
                    self._reads.serve(self.applied)
                    self._maybe_compact()  # after advance: the core may compact only what it knows is applied
                if self.removed:
                    logger.info("partition %r: this node left the group; removing its replica", self.name)
                    self._stop(NotLeader(self.name, raw.leader))
                    return
                if self._inbox.pending:
                    # More input arrived while we worked: let other tasks run before the next round.
                    await trio.lowlevel.checkpoint()
        except BaseException as exc:
            self._stop(exc)
            raise

    def _stop(self, exc: BaseException) -> None:
        stopped = Unavailable(f"the replica of partition {self.name!r} on {self.host.node_id} stopped")
        error = self._stopped = exc if isinstance(exc, BoroughError) else stopped
        self._inbox.fail_all(error)
        self._proposals.fail_all(error)
        self._reads.fail_all(error)
        self._staging.abort()

    def _feed(self) -> None:
        """Hand the core everything queued since the last round: ticks, commands, messages, proposals, reads."""
        raw = self._raw
        self._inbox.feed(raw, self._staging.stepping)
        self._proposals.propose_queued(
            lambda data: raw.propose(data) if isinstance(data, bytes) else raw.propose_conf_change(data),
            lambda: raw.term,
        )
        self._reads.start_round(raw.read_index)

    async def _carry_out(self, plan: ReadyPlan) -> None:
        """One Ready, in the order of its plan (see ``borough.raft.ready_plan``)."""
        host = self.host
        name = self.name
        committed = plan.apply
        batch, results = ready_batch(host.store, name, plan, self._staging, self.machine)
        stats = self.stats
        stats.count(plan)
        if plan.send_before:
            # A leader replicates while it writes: its followers' syncs overlap its own. Safe because nothing
            # is stepped into the core until this Ready is advanced (see ``RawNode``).
            host.send_raft(name, plan.send_before, self.incarnations.stamp)
        if len(batch):
            # Entries, a snapshot or a new term/vote must be durable before the messages that depend on them
            # leave; a commit index or applied state alone need not be (both are recovered from the synced log).
            started = trio.current_time()
            await host.committer.commit(batch, sync=plan.must_sync and host.fsync)
            stats.commit_wait += trio.current_time() - started
        if plan.install is not None:
            self.applied = plan.install.index
            self.machine.reload()
        if plan.send_after:
            host.send_raft(name, plan.send_after, self.incarnations.stamp)
        for message in plan.stream_snapshots:
            host.send_snapshot(self, message)
        if committed:
            self.applied = committed[-1].index
        lost, unknown = (lambda: NotLeader(name, self._raw.leader)), (lambda: _outcome_unknown(name, host.node_id))
        self._proposals.settle(plan, results, lost=lost, unknown=unknown)
        if plan.install is not None or any(entry.kind == EntryKind.CONF_CHANGE for entry in committed):
            raw = self._raw
            self.removed |= self.incarnations.left_group(raw.conf_state_at(self.applied), raw.conf_state())
        if plan.soft_state is not None:
            self._leader_changed(plan.soft_state.leader, plan.soft_state.role)
        if plan.read_states or plan.failed_reads:
            self._reads.confirmed(plan.read_states, plan.failed_reads, NotLeader(name, self._raw.leader))

    def _leader_changed(self, leader: str | None, role: Role) -> None:
        if role is not Role.LEADER:
            # Reads queued on a former leader cannot be confirmed here any more.
            self._reads.fail_all(NotLeader(self.name, leader))
        self.host.leader_changed(self.name, leader, self._raw.term)

    def _maybe_compact(self) -> None:
        target = compaction_target(self.applied, self.host.store.first_index(self.name), self._snapshot_every)
        if target is not None:
            self._raw.compact(target)


def _outcome_unknown(partition: str, node_id: str) -> BoroughError:
    return Unavailable(
        f"partition {partition!r} on {node_id} caught up by a snapshot while a write was in flight; "
        "it may or may not have been applied: read before retrying"
    )
