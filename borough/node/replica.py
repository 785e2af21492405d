"""One hosted replica: a partition's Raft core, its queues, its waiters, and the task that lives as long as it.

This module owns a replica's state and what other tasks may ask of it: proposals wait until their entry is
applied (or provably lost), linearizable reads wait for a ReadIndex (batched: one round serves every read that
arrived meanwhile) and for the apply to catch up. The Raft work itself (feed the core, carry out each Ready around
the write) is done in the replica's turns in the node's rounds (``borough.node.turns``, ``borough.node.rounds``):
the Readies of every replica with work share one pass, one write and one frame per peer.

The core is private and only a turn changes it: proposals, reads, configuration changes, leadership transfers,
campaigns and snapshot reports are queued and carried out at the start of the replica's next turn. Other tasks
may *read* the core's state through this class's queries (``status``, ``term``, ``leader``, ``snapshot_meta_at``,
``tombstone``): trio runs one task at a time, so a read is never torn. It does not know how messages travel or
how snapshots are streamed: the ``ReplicaHost`` does that.
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
from borough.node.persist import ReplicaStats
from borough.node.rounds import Rounds
from borough.node.staging import SnapshotStaging
from borough.node.statemachine import StateMachine
from borough.node.turns import Turns
from borough.node.waiters import Proposals, Reads, Waiter
from borough.raft.confchange import ConfChange
from borough.raft.config import RaftConfig
from borough.raft.messages import InstallSnapshot, Message
from borough.raft.rawnode import RawNode, Status
from borough.raft.records import SnapshotMeta, Tombstone
from borough.raft.role import Role
from borough.store.base import Store
from borough.store.group_commit import GroupCommit
from borough.store.snapshot import SnapshotInstall

__all__ = ["Replica", "ReplicaHost"]

logger = logging.getLogger(__name__)

#: Proposals, reads and commands queued for the replica's next turn; beyond this callers get Overloaded (nothing ran).
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


class Replica(Turns):
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
        rounds: Rounds,
        clocks: Clocks | None = None,
    ) -> None:
        self.host = host
        self._rounds = rounds
        self.name = name
        self.machine = machine
        store = host.store
        self.applied = store.applied_index(name)
        tombstone = store.tombstone(name)
        self._raw = RawNode(raft_config, store.log_storage(name), rng, applied=self.applied, tombstone=tombstone)
        self.incarnations = Incarnations(host.node_id, self._raw.conf_state, tombstone)
        self.incarnations.observe(self._raw.conf_state_at(self.applied))
        self._snapshot_every = snapshot_every
        self._inbox = Inbox(name, lambda: rounds.want(self), clocks)  # the ticker ticks it while its core is awake
        self._proposals = Proposals()
        self._reads = Reads(self._inbox.wake)
        self._staging = SnapshotStaging(store, name)
        self._stopped: BaseException | None = None
        self._ended = trio.Event()  # set when the replica's life ends: removed, or a turn failed (``_failure``)
        self._failure: BaseException | None = None
        self.stats = ReplicaStats()
        self.conf_change_in_flight = False
        self.removed = False  # set once this node is out of the group: the replica then stops for good
        self._first_campaign = False  # ``campaign`` was called and the election may not have ended (``electing``)
        self._campaign_queued = False  # ``campaign`` was called and the core has not been told yet

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
            # (An answer that only records a follower's progress asks for no turn of its own: ``can_wait``.)
            self._inbox.deliver(message, urgent=not self._raw.can_wait(message))

    def _queue_room(self) -> None:
        if len(self._proposals) + len(self._reads) + self._inbox.commands() >= QUEUE_LIMIT:
            raise Overloaded(f"partition {self.name!r} has {QUEUE_LIMIT} operations queued on {self.host.node_id}")

    def campaign(self) -> None:
        """Start a freshly created group's first term now: at once when this replica is appointed its first
        leader, else with an election that skips one election timeout (and pre-vote while at term 0):
        ``RawNode.campaign(first=True)``. Writes proposed until it ends wait for its outcome (``electing``)."""
        self._first_campaign = self._campaign_queued = True

        def start(raw: RawNode) -> None:
            self._campaign_queued = False
            raw.campaign(first=True)

        self._inbox.command(start)

    def command(self, fn: Callable[[RawNode], object]) -> None:
        """Run ``fn`` on the core at the replica's next turn (``RawNode.forget_leader``, ``RawNode.wake``)."""
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
        """Queue a command as ``propose`` does, now, and return its waiter (``await waiter.wait()``). On a replica
        electing itself its group's first leader (``electing``) it waits for the outcome (NotLeader if it lost)."""
        electing = self._stopped is None and self.electing
        if not electing:
            self.check_leader()
        self._queue_room()
        waiter = self._proposals.queue(data)
        if not electing:  # (electing: the turn that ends the election, on a vote's answer or a tick, proposes it)
            self._inbox.wake()
        return waiter

    async def read_barrier(self, *, anywhere: bool = False) -> None:
        """Return once this replica's applied state reflects every write that completed before the call (ReadIndex,
        §6.4 of Ongaro's thesis): on the leader, or with ``anywhere`` on a follower too (it asks its leader, §6.4.1)."""
        await self.read_nowait(anywhere=anywhere).wait()

    def read_nowait(self, *, anywhere: bool = False) -> Waiter:
        """Queue a read as ``read_barrier`` does, now, and return its waiter (``wait()`` or ``then(callback)``)."""
        if not anywhere or self._stopped is not None:
            self.check_leader()
        self._queue_room()
        waiter = self._reads.queue()
        self._inbox.wake()
        return waiter

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

    # --- turns in the node's rounds (``borough.node.rounds``) -----------------------------------------------

    async def run(self) -> None:
        """The replica's life. Its Raft work is done in turns of the node's rounds; this task waits for its end:
        it returns once this node left the group, raises what failed the replica, and stops it when cancelled."""
        try:
            # A turn now only if the core has work of its own (entries to apply after a restart, say): what
            # arrived since the replica was made asked for its turn already, and may have had it before this
            # task started (a voter makes its replica as the first message for it arrives); an empty turn here
            # was a third of the turns a new partition cost (``bench/sim_cost.py --only create --kinds``).
            if self._raw.has_ready():
                self._rounds.want(self)
            await self._ended.wait()
            if self._failure is not None:
                raise self._failure
        except BaseException as exc:
            self._stop(exc)
            raise
        logger.info("partition %r: this node left the group; removing its replica", self.name)
        self._stop(NotLeader(self.name, self._raw.leader))

    def _stream_snapshot(self, message: InstallSnapshot) -> None:
        self.host.send_snapshot(self, message)

    def _stop(self, exc: BaseException) -> None:
        stopped = Unavailable(f"the replica of partition {self.name!r} on {self.host.node_id} stopped")
        error = self._stopped = exc if isinstance(exc, BoroughError) else stopped
        self._inbox.fail_all(error)
        self._proposals.fail_all(error)
        self._reads.fail_all(error)
        self._staging.abort()
