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
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import trio

from borough.errors import BoroughError, NotLeader, Overloaded, StorageError, Unavailable
from borough.node.statemachine import StateMachine
from borough.raft.confchange import ConfChange
from borough.raft.config import RaftConfig
from borough.raft.messages import AppendRequest, Heartbeat, InstallSnapshot, Message
from borough.raft.rawnode import RawNode, Status
from borough.raft.ready_plan import ReadyPlan, plan_ready
from borough.raft.records import Entry, EntryKind, SnapshotMeta, Tombstone
from borough.raft.role import Role
from borough.store.base import Store
from borough.store.group_commit import GroupCommit
from borough.store.snapshot import SnapshotInstall

__all__ = ["Replica", "ReplicaHost"]

logger = logging.getLogger(__name__)

#: Inbound Raft messages queued per replica; beyond this they are dropped (Raft retransmits).
INBOX_LIMIT = 4096
#: Proposals, reads and commands queued for the driver; beyond this callers get Overloaded (nothing ran).
QUEUE_LIMIT = 4096
#: What only a leader sends: receiving one means the replica is in touch with its group.
_FROM_LEADER = (AppendRequest, Heartbeat, InstallSnapshot)


class ReplicaHost(Protocol):
    """What a replica needs from its node."""

    node_id: str
    store: Store
    committer: GroupCommit
    #: False only when the operator turned fsync off (acknowledged writes may then be lost on power loss).
    fsync: bool

    def send_raft(self, partition: str, messages: Sequence[Message]) -> None:
        """Queue messages for their recipients (never blocks; may drop: Raft retransmits)."""
        ...

    def send_snapshot(self, replica: Replica, message: InstallSnapshot) -> None:
        """Start streaming this replica's applied state to ``message.to`` (in a task of the node's)."""
        ...

    def leader_changed(self, partition: str, leader: str | None, term: int) -> None: ...


class _Waiter:
    """A caller waiting for its proposal to be applied, its read to become servable or its command to run."""

    __slots__ = ("abandoned", "error", "event", "result", "term")

    def __init__(self) -> None:
        self.term = 0
        self.event = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False  # the caller stopped waiting before the driver took it up

    def succeed(self, result: Any = None) -> None:
        if not self.event.is_set():
            self.result = result
            self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()

    async def wait(self) -> Any:
        try:
            await self.event.wait()
        finally:
            if not self.event.is_set():
                self.abandoned = True
        if self.error is not None:
            raise self.error
        return self.result


@attrs.define
class _ReadBatch:
    """Reads that share one ReadIndex round."""

    waiters: list[_Waiter]
    index: int | None = None


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
    ) -> None:
        self.host = host
        self.name = name
        self.machine = machine
        store = host.store
        self.applied = store.applied_index(name)
        self._raw = RawNode(
            raft_config, store.log_storage(name), rng, applied=self.applied, tombstone=store.tombstone(name)
        )
        self._snapshot_every = snapshot_every
        self._inbox: deque[Message] = deque()
        self._ticks = 0
        self._dirty = False
        self._lot = trio.lowlevel.ParkingLot()
        self._queued: list[tuple[bytes | ConfChange, _Waiter]] = []  # proposals for the driver
        self._commands: list[tuple[Callable[[RawNode], Any], _Waiter | None]] = []
        self._proposals: dict[int, _Waiter] = {}  # proposed, by log index
        self._read_queue: list[_Waiter] = []
        self._reads_in_flight: dict[bytes, _ReadBatch] = {}
        self._reads_ready: list[_ReadBatch] = []
        self._read_seq = 0
        self._install: SnapshotInstall | None = None
        self._install_meta: SnapshotMeta | None = None
        self._offered: InstallSnapshot | None = None  # the staged snapshot's message, once offered to the core
        self._offer_stepped = False  # the core has seen the offer: the next Ready says whether it took it
        self._stopped: BaseException | None = None
        self.last_leader_contact = trio.current_time()
        self.dropped_messages = 0
        #: Counters for status pages and benchmarks: Readies handled, entries persisted and applied, and the
        #: seconds spent waiting for the group commit.
        self.readies = 0
        self.entries_persisted = 0
        self.entries_applied = 0
        self.commit_wait = 0.0
        self.conf_change_in_flight = False
        #: Set once a committed configuration no longer holds this node: the replica then stops for good.
        self.removed = False

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
    def leader(self) -> str | None:
        """The leader this replica knows of (a hint on followers), or None."""
        return self._raw.leader

    def status(self) -> Status:
        return self._raw.status()

    def snapshot_meta_at(self, index: int) -> SnapshotMeta:
        """The snapshot meta describing this replica's state at applied ``index`` (for a snapshot stream)."""
        return self._raw.snapshot_meta_at(index)

    def tombstone(self) -> Tombstone:
        """What a deleted replica leaves behind (term, vote, log end), so a re-created one never votes back."""
        return self._raw.tombstone()

    def hears_from_leader(self, within: float) -> bool:
        """Whether this replica leads, or got a message from a leader within the last ``within`` seconds."""
        return self.is_leader or trio.current_time() - self.last_leader_contact <= within

    def check_leader(self) -> None:
        """NotLeader unless this replica leads and runs (nothing was proposed: the caller may try elsewhere)."""
        if self._stopped is not None or self._raw.role is not Role.LEADER:
            raise NotLeader(self.name, self._raw.leader)

    # --- inputs from other tasks ------------------------------------------------------------------------

    def _wake(self) -> None:
        self._dirty = True
        self._lot.unpark_all()

    def tick(self) -> None:
        self._ticks += 1
        self._wake()

    def deliver(self, message: Message) -> None:
        """An inbound Raft message; dropped when the inbox is full (the sender retransmits)."""
        if len(self._inbox) >= INBOX_LIMIT:
            self.dropped_messages += 1
            return
        self._inbox.append(message)
        if type(message) in _FROM_LEADER:
            self.last_leader_contact = trio.current_time()
        self._wake()

    def _queue_room(self) -> None:
        if len(self._queued) + len(self._read_queue) + len(self._commands) >= QUEUE_LIMIT:
            raise Overloaded(f"partition {self.name!r} has {QUEUE_LIMIT} operations queued on {self.host.node_id}")

    def _command(self, fn: Callable[[RawNode], Any], waiter: _Waiter | None = None) -> None:
        self._commands.append((fn, waiter))
        self._wake()

    def campaign(self) -> None:
        """Start an election now (a freshly created group's first replica, to skip one election timeout)."""
        self._command(RawNode.campaign)

    def report_snapshot(self, to: str, ok: bool) -> None:
        """The snapshot stream to ``to`` ended (``ok``) or failed: replication resumes by probing."""
        self._command(lambda raw: raw.report_snapshot(to, ok))

    async def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to`` (raises like ``RawNode.transfer_leadership``)."""
        self.check_leader()
        waiter = _Waiter()
        self._command(lambda raw: raw.transfer_leadership(to), waiter)
        await waiter.wait()

    async def propose(self, data: bytes) -> Any:
        """Append a command on the leader and wait until it is applied; returns the state machine's result.

        Raises NotLeader (routing retries elsewhere) when this replica does not lead, or when the entry was
        provably lost to a leader change (another entry was committed in its place), so a retry can never
        apply a command twice; Overloaded when too much is queued. Cancellation leaves the outcome unknown, as
        with any timeout."""
        return await self._propose(data)

    async def propose_conf_change(self, change: ConfChange) -> None:
        """Propose a membership change and wait until it is applied (one at a time per group)."""
        self.conf_change_in_flight = True
        try:
            await self._propose(change)
        finally:
            self.conf_change_in_flight = False

    async def _propose(self, data: bytes | ConfChange) -> Any:
        self.check_leader()
        self._queue_room()
        waiter = _Waiter()
        self._queued.append((data, waiter))
        self._wake()
        return await waiter.wait()

    async def read_barrier(self) -> None:
        """Return once this replica's applied state reflects every write that completed before the call
        (ReadIndex, §6.4 of Ongaro's thesis; served by the leader)."""
        self.check_leader()
        self._queue_room()
        waiter = _Waiter()
        self._read_queue.append(waiter)
        self._wake()
        await waiter.wait()

    def remove(self) -> None:
        """This node is no longer in the group (its leader says so): stop, and let the node delete the data."""
        self.removed = True
        self._wake()

    # --- snapshots received -----------------------------------------------------------------------------

    def begin_install(self) -> SnapshotInstall:
        """Stage a snapshot streamed from the leader (replacing any earlier unfinished one)."""
        if self._install is not None:
            self._install.abort()
        self._install = self.host.store.begin_snapshot_install(self.name)
        self._install_meta = None
        self._offered = None
        return self._install

    def offer_snapshot(self, install: SnapshotInstall, message: InstallSnapshot) -> None:
        """All chunks are staged: let the core decide whether to install them."""
        if self._install is not install:
            install.abort()
            return
        self._install_meta = message.meta
        self._offered = message
        self._inbox.append(message)  # never dropped: the staged data waits on it
        self._wake()

    # --- the driver loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        raw = self._raw
        try:
            while True:
                if not self._dirty:
                    await self._lot.park()
                self._dirty = False
                self._feed()
                while raw.has_ready():
                    rd = raw.ready()
                    await self._carry_out(plan_ready(rd))
                    raw.advance(rd)
                    self._serve_ready_reads()
                if self.removed:
                    logger.info("partition %r: this node left the group; removing its replica", self.name)
                    self._stop(NotLeader(self.name, raw.leader))
                    return
                if self._dirty:
                    # More input arrived while we worked: let other tasks run before the next round.
                    await trio.lowlevel.checkpoint()
        except BaseException as exc:
            self._stop(exc)
            raise

    def _stop(self, exc: BaseException) -> None:
        error: BaseException
        if isinstance(exc, BoroughError):
            error = exc
        else:
            error = Unavailable(f"the replica of partition {self.name!r} on {self.host.node_id} stopped")
        self._stopped = error
        waiters = [w for _, w in self._queued] + [w for _, w in self._commands if w is not None]
        waiters += list(self._proposals.values())
        for waiter in waiters:
            waiter.fail(error)
        self._queued.clear()
        self._commands.clear()
        self._proposals.clear()
        self._fail_reads(error)
        if self._install is not None:
            self._install.abort()
            self._install = None

    def _feed(self) -> None:
        """Hand the core everything queued since the last round: ticks, commands, messages, proposals, reads."""
        raw = self._raw
        ticks, self._ticks = self._ticks, 0
        for _ in range(ticks):
            raw.tick()
        if self._commands:
            commands, self._commands = self._commands, []
            for fn, waiter in commands:
                try:
                    result = fn(raw)
                except BoroughError as exc:
                    if waiter is None:
                        logger.info("partition %r: a command failed: %s", self.name, exc)
                    else:
                        waiter.fail(exc)
                else:
                    if waiter is not None:
                        waiter.succeed(result)
        inbox = self._inbox
        while inbox:
            msg = inbox.popleft()
            if msg is self._offered:
                self._offered = None
                self._offer_stepped = True
            try:
                raw.step(msg)
            except BoroughError as exc:
                logger.warning("partition %r: dropped a message from %s: %s", self.name, msg.frm, exc)
        if self._queued:
            queued, self._queued = self._queued, []
            for data, waiter in queued:
                if waiter.abandoned:
                    continue  # the caller gave up before it was proposed: it never will be
                try:
                    index = raw.propose(data) if isinstance(data, bytes) else raw.propose_conf_change(data)
                except BoroughError as exc:
                    waiter.fail(exc)
                    continue
                waiter.term = raw.term
                self._proposals[index] = waiter
        if self._read_queue:
            waiters, self._read_queue = self._read_queue, []
            self._read_seq += 1
            context = self._read_seq.to_bytes(8, "big")
            try:
                raw.read_index(context)
            except BoroughError as exc:
                for waiter in waiters:
                    waiter.fail(exc)
            else:
                self._reads_in_flight[context] = _ReadBatch(waiters)

    async def _carry_out(self, plan: ReadyPlan) -> None:
        """One Ready, in the order of its plan (see ``borough.raft.ready_plan``)."""
        host = self.host
        name = self.name
        batch = host.store.write_batch()
        if plan.install is not None:
            install, self._install = self._install, None
            if install is None or self._install_meta != plan.install:
                raise StorageError(f"partition {name!r}: the core accepted a snapshot whose data was not staged")
            install.finish(batch, plan.install)
        elif self._offer_stepped and self._install is not None:
            # The core did not take the staged snapshot (stale or from an old term): drop the data.
            self._install.abort()
            self._install = None
        self._offer_stepped = False
        if plan.entries:
            batch.append(name, list(plan.entries))
        if plan.hard_state is not None:
            batch.set_hard_state(name, plan.hard_state)
        if plan.compaction is not None:
            batch.set_snapshot_meta(name, plan.compaction)
            batch.compact(name, plan.compaction.index)
        committed = plan.apply
        results: dict[int, Any] = {}
        if committed:
            ops, results = self.machine.apply(committed)
            batch.apply(name, ops, committed[-1].index)
        self.readies += 1
        self.entries_persisted += len(plan.entries)
        self.entries_applied += len(committed)
        if plan.send_before:
            # A leader replicates while it writes: its followers' syncs overlap its own. Safe because nothing
            # is stepped into the core until this Ready is advanced (see ``RawNode``).
            host.send_raft(name, plan.send_before)
        if len(batch):
            # Entries, a snapshot or a new term/vote must be durable before the messages that depend on them
            # leave; a commit index or applied state alone need not be (both are recovered from the synced log).
            started = trio.current_time()
            await host.committer.commit(batch, sync=plan.must_sync and host.fsync)
            self.commit_wait += trio.current_time() - started
        if plan.install is not None:
            self.applied = plan.install.index
            self.machine.reload()
        if plan.send_after:
            host.send_raft(name, plan.send_after)
        for message in plan.stream_snapshots:
            host.send_snapshot(self, message)
        if committed:
            self.applied = committed[-1].index
        self._settle(plan, results)
        if committed:
            self._check_removed(committed)
        if plan.soft_state is not None:
            self._leader_changed(plan.soft_state.leader, plan.soft_state.role)
        for read in plan.read_states:
            ready = self._reads_in_flight.pop(read.context, None)
            if ready is not None:
                ready.index = read.index
                self._reads_ready.append(ready)
        for context in plan.failed_reads:
            failed = self._reads_in_flight.pop(context, None)
            if failed is not None:
                error = NotLeader(name, self._raw.leader)
                for waiter in failed.waiters:
                    waiter.fail(error)
        self._maybe_compact()

    def _settle(self, plan: ReadyPlan, results: dict[int, Any]) -> None:
        """Resolve the proposals this Ready decides: applied ones succeed, provably lost ones fail with
        NotLeader (see ``ReadyPlan.settle`` for the rule), so the caller may safely retry."""
        proposals = self._proposals
        if not proposals or plan.settle is None:
            return
        for entry in plan.apply:
            waiter = proposals.get(entry.index)
            if waiter is not None and waiter.term == entry.term:
                del proposals[entry.index]
                waiter.succeed(results.get(entry.index))
        index, term = plan.settle
        lost = [i for i, w in proposals.items() if i <= index or w.term < term]
        for i in lost:
            proposals.pop(i).fail(NotLeader(self.name, self._raw.leader))

    def _check_removed(self, committed: Sequence[Entry]) -> None:
        """A committed configuration without this node: the replica stops and its data is deleted (a removed
        replica is never told so by Raft itself, §4.2.2 of Ongaro's thesis). Only the newest configuration
        counts, and only once it is committed: a replica catching up replays configurations from before it was
        added, which do not list it."""
        if not any(entry.kind == EntryKind.CONF_CHANGE for entry in committed):
            return
        current = self._raw.status().conf_state
        if self.host.node_id not in current.members() and self._raw.conf_state_at(self.applied) == current:
            self.removed = True

    def _leader_changed(self, leader: str | None, role: Role) -> None:
        if role is not Role.LEADER:
            # Reads queued on a former leader cannot be confirmed here any more.
            self._fail_reads(NotLeader(self.name, leader))
        self.host.leader_changed(self.name, leader, self._raw.term)

    def _fail_reads(self, error: BaseException) -> None:
        waiters = list(self._read_queue)
        for batch in (*self._reads_in_flight.values(), *self._reads_ready):
            waiters += batch.waiters
        for waiter in waiters:
            waiter.fail(error)
        self._read_queue = []
        self._reads_in_flight.clear()
        self._reads_ready = []

    def _serve_ready_reads(self) -> None:
        if not self._reads_ready:
            return
        still: list[_ReadBatch] = []
        for batch in self._reads_ready:
            assert batch.index is not None
            if batch.index <= self.applied:
                for waiter in batch.waiters:
                    waiter.succeed()
            else:
                still.append(batch)
        self._reads_ready = still

    def _maybe_compact(self) -> None:
        every = self._snapshot_every
        if every <= 0:
            return
        first = self.host.store.first_index(self.name)
        if self.applied - first + 1 >= every:
            # Keep half a window of log behind the applied index, so a follower that lags a little catches up
            # from the log instead of needing a whole snapshot.
            target = self.applied - every // 2
            if target >= first:
                self._raw.compact(target)
