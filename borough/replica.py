"""One hosted replica: a partition's Raft core and the trio task that drives it.

This module owns the driver loop of etcd-io/raft's contract, for one group: feed ticks and inbound messages
to the core, then for each Ready persist (through the node's group commit, so every replica's writes of one
cycle share one synced LevelDB batch), send, apply committed entries, advance. It also owns the waiters of
local callers: proposals wait until their entry is applied (or provably lost), linearizable reads wait for a
ReadIndex (batched: one round per cycle serves every read that arrived meanwhile) and for the apply to catch
up. It does not know how messages travel or how snapshots are streamed: the ``ReplicaHost`` does that.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import trio

from borough.errors import BoroughError, NotLeader, StorageError, Unavailable
from borough.raft.config import RaftConfig
from borough.raft.messages import AppendRequest, Heartbeat, InstallSnapshot, Message
from borough.raft.rawnode import RawNode, Ready
from borough.raft.records import Entry, EntryKind, NodeId, SnapshotMeta
from borough.raft.role import Role
from borough.statemachine import StateMachine
from borough.store import GroupCommit, SnapshotInstall, Store

__all__ = ["Replica", "ReplicaHost"]

logger = logging.getLogger(__name__)

#: Inbound Raft messages queued per replica; beyond this they are dropped (Raft retransmits).
INBOX_LIMIT = 4096
#: What only a leader sends: receiving one means the replica is in touch with its group.
_FROM_LEADER = (AppendRequest, Heartbeat, InstallSnapshot)
#: What a leader may send before its Ready is durable (``Ready.appends_first``).
_APPENDS = (AppendRequest, Heartbeat)


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
    """A caller waiting for its proposal to be applied or its read to become servable."""

    __slots__ = ("error", "event", "result", "term")

    def __init__(self, term: int = 0) -> None:
        self.term = term
        self.event = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def succeed(self, result: Any = None) -> None:
        if not self.event.is_set():
            self.result = result
            self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
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
    ) -> None:
        self.host = host
        self.name = name
        self.machine = machine
        store = host.store
        self.raw = RawNode(
            raft_config,
            store.log_storage(name),
            rng,
            applied=store.applied_index(name),
            tombstone=store.tombstone(name),
        )
        self.applied = store.applied_index(name)
        self._inbox: deque[Message] = deque()
        self._ticks = 0
        self._dirty = False
        self._lot = trio.lowlevel.ParkingLot()
        self._proposals: dict[int, _Waiter] = {}
        self._read_queue: list[_Waiter] = []
        self._reads_in_flight: dict[bytes, _ReadBatch] = {}
        self._reads_ready: list[_ReadBatch] = []
        self._read_seq = 0
        self._install: SnapshotInstall | None = None
        self._install_meta: SnapshotMeta | None = None
        self._offered: InstallSnapshot | None = None  # the staged snapshot's message, once offered to the core
        self._offer_stepped = False  # the core has seen the offer: the next Ready says whether it took it
        self._stopped: BaseException | None = None
        self.leader: str | None = self.raw.leader
        self.last_leader_contact = trio.current_time()
        self.dropped_messages = 0
        #: Counters for status pages and benchmarks: Readies handled, entries persisted and applied, and the
        #: seconds spent waiting for the group commit.
        self.readies = 0
        self.entries_persisted = 0
        self.entries_applied = 0
        self.commit_wait = 0.0
        self._snapshot_every = 0
        self.conf_change_in_flight = False
        #: Set once a committed configuration no longer holds this node: the replica then stops for good.
        self.removed = False

    def __repr__(self) -> str:
        return f"<Replica {self.name!r} on {self.host.node_id} {self.raw.role.name.lower()} term {self.raw.term}>"

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

    def hears_from_leader(self, within: float) -> bool:
        """Whether this replica leads, or got a message from a leader within the last ``within`` seconds."""
        return self.is_leader or trio.current_time() - self.last_leader_contact <= within

    def campaign(self) -> None:
        """Start an election now (a freshly created group's first replica, to skip one election timeout)."""
        self.raw.campaign()
        self._wake()

    @property
    def is_leader(self) -> bool:
        return self.raw.role is Role.LEADER

    def check_leader(self) -> None:
        if self._stopped is not None:
            # Nothing was proposed: the caller may safely try elsewhere.
            raise NotLeader(self.name, self.raw.leader)
        if self.raw.role is not Role.LEADER:
            raise NotLeader(self.name, self.raw.leader)

    async def propose(self, data: bytes) -> Any:
        """Append a command on the leader and wait until it is applied; returns the state machine's result.

        Raises NotLeader (routing retries elsewhere) when this replica does not lead, or when the entry was
        provably lost to a leader change (another entry was committed in its place), so a retry can never
        apply a command twice. Cancellation leaves the outcome unknown, as with any timeout."""
        self.check_leader()
        index = self.raw.propose(data)
        waiter = _Waiter(self.raw.term)
        self._proposals[index] = waiter
        self._wake()
        try:
            return await waiter.wait()
        finally:
            if self._proposals.get(index) is waiter:
                del self._proposals[index]

    async def propose_conf_change(self, change: Any) -> None:
        """Propose a membership change and wait until it is applied (one at a time per group)."""
        self.check_leader()
        index = self.raw.propose_conf_change(change)
        waiter = _Waiter(self.raw.term)
        self._proposals[index] = waiter
        self.conf_change_in_flight = True
        self._wake()
        try:
            await waiter.wait()
        finally:
            self.conf_change_in_flight = False
            if self._proposals.get(index) is waiter:
                del self._proposals[index]

    async def read_barrier(self) -> None:
        """Return once this replica's applied state reflects every write that completed before the call
        (ReadIndex, §6.4 of Ongaro's thesis; served by the leader)."""
        self.check_leader()
        waiter = _Waiter()
        self._read_queue.append(waiter)
        self._wake()
        await waiter.wait()

    # --- the driver loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                if not self._dirty:
                    await self._lot.park()
                self._dirty = False
                self._feed()
                while self.raw.has_ready():
                    rd = self.raw.ready()
                    await self._handle_ready(rd)
                    self.raw.advance(rd)
                    self._serve_ready_reads()
                if self.removed:
                    logger.info("partition %r: this node left the group; removing its replica", self.name)
                    self._stop(NotLeader(self.name, self.raw.leader))
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
        for waiter in self._proposals.values():
            waiter.fail(error)
        self._proposals.clear()
        self._fail_reads(error)
        if self._install is not None:
            self._install.abort()
            self._install = None

    def _feed(self) -> None:
        raw = self.raw
        ticks, self._ticks = self._ticks, 0
        for _ in range(ticks):
            raw.tick()
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

    async def _handle_ready(self, rd: Ready) -> None:
        store = self.host.store
        name = self.name
        batch = store.write_batch()
        installed = False
        if rd.snapshot is not None:
            install, self._install = self._install, None
            if install is None or self._install_meta != rd.snapshot:
                raise StorageError(f"partition {name!r}: the core accepted a snapshot whose data was not staged")
            install.finish(batch, rd.snapshot)
            installed = True
        elif self._offer_stepped and self._install is not None:
            # The core did not take the staged snapshot (stale or from an old term): drop the data.
            self._install.abort()
            self._install = None
        self._offer_stepped = False
        if rd.entries:
            batch.append(name, rd.entries)
        if rd.hard_state is not None:
            batch.set_hard_state(name, rd.hard_state)
        if rd.compaction is not None:
            batch.set_snapshot_meta(name, rd.compaction)
            batch.compact(name, rd.compaction.index)
        committed = rd.committed_entries
        results: dict[int, Any] = {}
        if committed:
            ops, results = self.machine.apply(committed)
            batch.apply(name, ops, committed[-1].index)
        self.readies += 1
        self.entries_persisted += len(rd.entries)
        self.entries_applied += len(committed)
        messages = rd.messages
        if messages and rd.appends_first and len(batch):
            # A leader replicates while it writes: its followers' syncs overlap its own. Safe because nothing
            # is stepped into the core until this Ready is advanced (see ``RawNode``).
            first: list[Message] = []
            rest: list[Message] = []
            for m in messages:
                (first if type(m) in _APPENDS else rest).append(m)
            if first:
                self.host.send_raft(name, first)
                messages = rest
        if len(batch):
            # Entries, a snapshot or a new term/vote must be durable before the messages that depend on them
            # leave; a commit index or applied state alone need not be (both are recovered from the synced log).
            started = trio.current_time()
            await self.host.committer.commit(batch, sync=rd.must_sync and self.host.fsync)
            self.commit_wait += trio.current_time() - started
        if installed:
            assert rd.snapshot is not None
            self.applied = rd.snapshot.index
            self.machine.reload()
            self._fail_lost_proposals(rd.snapshot.index, rd.snapshot.term)
        if messages:
            self._send(messages)
        if committed:
            self.applied = committed[-1].index
            self._resolve(committed, results)
            self._check_removed(committed)
        if rd.soft_state is not None:
            self._leader_changed(rd.soft_state.leader, rd.soft_state.role)
        for read in rd.read_states:
            batch_ = self._reads_in_flight.pop(read.context, None)
            if batch_ is not None:
                batch_.index = read.index
                self._reads_ready.append(batch_)
        for context in rd.failed_reads:
            batch_ = self._reads_in_flight.pop(context, None)
            if batch_ is not None:
                error = NotLeader(name, self.raw.leader)
                for waiter in batch_.waiters:
                    waiter.fail(error)
        self._maybe_compact()

    def _check_removed(self, committed: list[Entry]) -> None:
        """A committed configuration without this node: the replica stops and its data is deleted (a removed
        replica is never told so by Raft itself, §4.2.2 of Ongaro's thesis). Only the newest configuration
        counts, and only once it is committed: a replica catching up replays configurations from before it was
        added, which do not list it."""
        if not any(entry.kind == EntryKind.CONF_CHANGE for entry in committed):
            return
        current = self.raw.status().conf_state
        if self.host.node_id not in current.members() and self.raw.conf_state_at(self.applied) == current:
            self.removed = True

    def remove(self) -> None:
        """This node is no longer in the group (its leader says so): stop, and let the node delete the data."""
        self.removed = True
        self._wake()

    def _send(self, messages: list[Message]) -> None:
        normal: list[Message] = []
        for msg in messages:
            if type(msg) is InstallSnapshot:
                self.host.send_snapshot(self, msg)
            else:
                normal.append(msg)
        if normal:
            self.host.send_raft(self.name, normal)

    def _resolve(self, committed: list[Entry], results: dict[int, Any]) -> None:
        proposals = self._proposals
        if not proposals:
            return
        for entry in committed:
            waiter = proposals.pop(entry.index, None)
            if waiter is None:
                continue
            if waiter.term == entry.term:
                waiter.succeed(results.get(entry.index))
            else:
                waiter.fail(NotLeader(self.name, self.raw.leader))
        last = committed[-1]
        self._fail_lost_proposals(last.index, last.term)

    def _fail_lost_proposals(self, index: int, term: int) -> None:
        """An entry of ``term`` is applied at ``index``: a waiting proposal at or below ``index`` whose entry
        was not it, or above it with an older term, can never commit (log terms never decrease along the
        log), so it fails and the caller may safely retry."""
        lost = [i for i, w in self._proposals.items() if i <= index or w.term < term]
        for i in lost:
            self._proposals.pop(i).fail(NotLeader(self.name, self.raw.leader))

    def _leader_changed(self, leader: str | None, role: Role) -> None:
        self.leader = leader
        if role is not Role.LEADER:
            # Reads queued on a former leader cannot be confirmed here any more.
            self._fail_reads(NotLeader(self.name, leader))
        self.host.leader_changed(self.name, leader, self.raw.term)

    def _fail_reads(self, error: BaseException) -> None:
        for waiter in self._read_queue:
            waiter.fail(error)
        self._read_queue = []
        for batch_ in self._reads_in_flight.values():
            for waiter in batch_.waiters:
                waiter.fail(error)
        self._reads_in_flight.clear()
        for batch_ in self._reads_ready:
            for waiter in batch_.waiters:
                waiter.fail(error)
        self._reads_ready = []

    def _serve_ready_reads(self) -> None:
        if not self._reads_ready:
            return
        still: list[_ReadBatch] = []
        for batch_ in self._reads_ready:
            assert batch_.index is not None
            if batch_.index <= self.applied:
                for waiter in batch_.waiters:
                    waiter.succeed()
            else:
                still.append(batch_)
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
                self.raw.compact(target)

    def set_snapshot_every(self, entries: int) -> None:
        self._snapshot_every = entries

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

    def status_peers(self) -> dict[NodeId, Any]:
        return dict(self.raw.status().progress)
