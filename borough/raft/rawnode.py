"""RawNode: the sans-IO surface a driver uses to run one replica's Raft, and the Ready it hands out.

This module owns the driver contract and nothing else (the state machine is ``core.Raft``):

    rd = node.ready()          # only when node.has_ready()
    persist rd.snapshot        # install the staged snapshot data, set the snapshot meta, drop the whole log
    persist rd.entries         # append; an entry at index i replaces every stored entry at i and after
    persist rd.hard_state      # if not None
    persist rd.compaction      # if not None: set the snapshot meta to it, delete log entries <= its index
    sync                       # all of the above, durably, when rd.must_sync (one batch is fine; across groups too)
    send rd.messages           # only now: they may depend on what was just persisted
    apply rd.committed_entries # in order; then serve rd.read_states whose index <= applied; retry rd.failed_reads
    node.advance(rd)

Between ``ready()`` and ``advance()`` the driver may keep calling ``step``/``tick``/``propose``/...; what
they produce goes into the next Ready. Only one Ready is outstanding at a time. A driver serving many groups
collects every group's Ready, writes all of them in one synced batch, then sends, applies and advances each.

A leader may replicate while it writes (§10.2.1 of Ongaro's thesis): when ``rd.appends_first`` is set, the
driver may send the leader's ``AppendRequest`` and ``Heartbeat`` messages of ``rd.messages`` *before* it
persists, so that its own sync and its followers' overlap, on one condition: it steps no message into the node
between ``ready()`` and ``advance(rd)``. The core counts the leader's own entries as matched at once; that is
safe only because the answers that could commit them are stepped after they are durable here. So
``appends_first`` is never set on a Ready whose commit index reaches one of its own ``entries``: the leader
committed them without any answer, its own vote alone being a quorum (a one-voter group, or a joint
configuration whose halves are both just the leader, or was one when it committed them), and the commit index
its appends carry would tell followers and learners to apply entries the group loses if it dies before its
write. Those messages leave after the write, as any other.

Membership: a configuration takes effect inside the core when its entry is appended, so there is no
"apply conf change" call. Committed ``EntryKind.CONF_CHANGE`` entries reach the driver like any other;
``decode_conf_change(entry.data)`` gives the change and the resulting ``ConfState`` (to update the transport's
peer list, or to delete a replica that was removed). ``conf_state_at(index)`` answers for any index in the log.

Snapshots: an ``InstallSnapshot`` in ``rd.messages`` asks the leader's driver to stream its *applied* state to
``msg.to``, with ``snapshot_meta_at(applied_index)`` as the meta (not ``msg.meta``, the compaction point), and
to call ``report_snapshot(to, ok)`` when the stream ends. The receiving driver stages the data, then steps
``InstallSnapshot(frm=leader, to=itself, term=<term of the stream>, meta=<streamed meta>)``; if a later Ready
carries that meta in ``rd.snapshot`` it installs the staged data, otherwise it discards it.

Compaction: ``compact(index)`` (at most the applied index) returns the ``SnapshotMeta`` that the next Ready
carries as ``rd.compaction``; the driver records it and deletes the log up to it in that Ready's batch.
"""

from __future__ import annotations

import random

import attrs

from borough.errors import LocalProtocolError
from borough.raft.confchange import ConfChange
from borough.raft.config import RaftConfig
from borough.raft.core import Raft, Role
from borough.raft.messages import AppendResponse, HeartbeatResponse, Message
from borough.raft.progress import ProgressState
from borough.raft.readonly import ReadState
from borough.raft.records import ConfState, Entry, HardState, NodeId, SnapshotMeta, Tombstone
from borough.raft.storage import LogCompacted, LogStorage, LogUnavailable

__all__ = ["PeerStatus", "RawNode", "Ready", "SoftState", "Status"]


@attrs.frozen(kw_only=True, slots=True)
class SoftState:
    """Volatile state worth telling the driver about when it changes: who leads, and our role."""

    leader: NodeId | None
    role: Role


@attrs.define(kw_only=True, slots=True, eq=False)
class Ready:
    """What the core asks the driver to do; see the module docstring for the order.

    - ``hard_state``: term, vote and commit to persist, or None if unchanged since the last Ready.
    - ``entries``: log entries to append to stable storage (may overwrite a conflicting stored suffix).
    - ``snapshot``: a snapshot the driver must install now. The driver received its data out of band (it
      stepped an ``InstallSnapshot`` with this exact meta): swap the data in atomically, set the snapshot meta,
      discard the whole stored log and set the applied index to ``snapshot.index``. If the driver staged data
      for a snapshot that does not show up here, the core rejected it: discard the staged data.
    - ``compaction``: the snapshot meta the application's ``compact()`` recorded: persist it as the storage's
      snapshot meta and delete stored entries up to its index (the data is the applied state itself).
    - ``committed_entries``: entries to apply, in order (already persisted, or in ``entries`` of this Ready).
    - ``messages``: to send after persisting. ``InstallSnapshot`` messages mean "stream your applied state to
      ``to``" (see ``RawNode.snapshot_meta_at``); report the outcome with ``report_snapshot``.
    - ``read_states``: linearizable reads that may be served once the applied index reaches their index.
    - ``failed_reads``: contexts of reads that cannot be served by this request (leader changed or lost, or
      no answer within an election timeout): retry them, possibly elsewhere.
    - ``soft_state``: leader and role, when they changed since the last Ready.
    - ``must_sync``: whether the writes must be durable before the messages go out (entries, a snapshot, or a
      new term or vote). A commit-only change may be written without sync: a lost commit index is recovered.
    - ``appends_first``: this Ready is a leader's, carries no new term or vote, and its commit index does not
      reach its own ``entries`` (so every commit index its messages carry is already durable on a quorum):
      the leader's appends and heartbeats in ``messages`` may be sent before persisting (see the module
      docstring for the condition on the driver).
    """

    hard_state: HardState | None = None
    entries: list[Entry] = attrs.Factory(list)
    snapshot: SnapshotMeta | None = None
    compaction: SnapshotMeta | None = None
    committed_entries: list[Entry] = attrs.Factory(list)
    messages: list[Message] = attrs.Factory(list)
    read_states: list[ReadState] = attrs.Factory(list)
    failed_reads: list[bytes] = attrs.Factory(list)
    soft_state: SoftState | None = None
    must_sync: bool = False
    appends_first: bool = False


@attrs.frozen(kw_only=True, slots=True)
class PeerStatus:
    """The leader's view of one member's replication (only the leader tracks peers)."""

    match: int
    next: int
    state: ProgressState
    recent_active: bool
    learner: bool
    inflight: int


@attrs.frozen(kw_only=True, slots=True)
class Status:
    id: NodeId
    role: Role
    term: int
    vote: NodeId | None
    leader: NodeId | None
    commit: int
    applied: int
    last_index: int
    learner: bool
    conf_state: ConfState
    lead_transferee: NodeId | None
    progress: dict[NodeId, PeerStatus]


class RawNode:
    """One replica's Raft, driven by method calls; see the module docstring for the driver loop.

    ``storage`` must hold what earlier Readies asked to persist. A new group is bootstrapped by persisting
    ``SnapshotMeta(index=0, term=0, conf_state=ConfState(voters=...))`` first; a replica created to receive a
    snapshot starts with an empty configuration (it never campaigns and accepts the leader's messages).
    ``applied`` is the index the application state already reflects (entries up to it are not handed out
    again); it may exceed the persisted commit index, since committing without sync is allowed.
    ``tombstone`` is what an earlier replica of this group on this node left when its data was deleted.
    """

    def __init__(
        self,
        config: RaftConfig,
        storage: LogStorage,
        rng: random.Random,
        *,
        applied: int = 0,
        tombstone: Tombstone | None = None,
    ) -> None:
        self._raft = Raft(config, storage, rng, applied=applied, tombstone=tombstone)
        r = self._raft
        self._prev_hs = HardState(term=r.term, vote=r.vote, commit=r.log.committed)
        self._prev_soft = SoftState(leader=r.lead, role=r.role)
        self._outstanding: Ready | None = None

    # --- inputs -------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """One unit of time passed (the driver's ``tick_interval``). A no-op on a quiesced replica."""
        r = self._raft
        if not r.quiesced:
            r.dirty = True
            r.tick()

    def elapse(self, ticks: int) -> None:
        """A leader's ``ticks`` units of time that the driver could not deliver one by one (its process stalled): they
        count as ticks (its lease runs out, check-quorum and read timeouts run) but send no heartbeat of their own,
        so a long stall is not a burst of heartbeat rounds (the next ``tick`` sends the one that is due). Stops
        counting once the replica is no longer the leader (check-quorum made it step down): other roles do not count
        a stall (see ``borough.node.inbox``). A no-op on a quiesced replica, or one that is not the leader."""
        r = self._raft
        if r.quiesced or r.role is not Role.LEADER:
            return
        r.dirty = True
        for _ in range(ticks):
            r.tick(quiet=True)
            if r.role is not Role.LEADER or r.quiesced:
                break

    def step(self, msg: Message) -> None:
        """Feed a message from another replica. Stale terms are handled per Raft (ignored or answered).

        Raises ``RemoteProtocolError`` if ``msg.to`` is not this replica (drop it and log)."""
        self._raft.step(msg)

    def campaign(self, *, first: bool = False) -> None:
        """Start an election now (with pre-vote if configured). A no-op on a leader, a replica that is not a
        voter, and, in lease mode, a replica that heard from a leader within an election timeout (campaigning
        then would let a new leader serve writes while the old one still serves lease reads).

        ``first``: the first election of a group just created. A replica appointed its first leader (at term 1
        with its own vote: ``Raft.take_appointment``) leads at once, with no election at all; its next Ready
        writes the appointment again, synced, before any of its messages leave (it was written unsynced with the
        replica, and nobody may hear of a term before the vote in it is durable). Else, while this replica is
        still at term 0 it skips pre-vote, which protects a sitting leader from a disruptive candidate: no member
        can have led yet, and a member at a later term refuses a term-1 vote request anyway. Either spares a new
        group round trips."""
        r = self._raft
        if first and r.take_appointment():
            r.dirty = True
            self._prev_hs = HardState(term=0, vote=None, commit=self._prev_hs.commit)  # (a new term and vote, to sync)
            return
        if r.cfg.read_only == "lease" and r.role is not Role.LEADER and r.in_lease():
            return
        r.dirty = True
        r.campaign(transfer=False, pre_vote=False if first and r.term == 0 else None)

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry of the current term; returns its index. It is committed when a
        Ready hands it out in ``committed_entries`` (at that index and this term; if another entry shows up
        at that index, the proposal was lost to a leader change).

        Raises ``NotLeader`` (hint: the known leader) on a non-leader, ``LeadershipTransferInProgress`` (a
        ``NotLeader`` whose hint is the target) during a transfer, and ``Overloaded`` when the uncommitted
        bytes exceed ``max_uncommitted_bytes``."""
        return self._raft.propose(data)

    def propose_conf_change(self, change: ConfChange) -> int:
        """Propose a membership change; returns its index. The new configuration takes effect at once (when
        appended). Raises like ``propose``, plus ``ConfChangeInProgress`` while an earlier change is not yet
        applied and ``InvalidConfChange`` if it cannot apply to the current configuration. A joint change
        with auto-leave is left by the leader itself once applied."""
        self._raft.dirty = True
        return self._raft.propose_conf_change(change)

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read identified by ``context`` (unique among pending reads). The answer is a
        ``ReadState(index, context)`` in a later Ready (serve once applied >= index), or the context in
        ``failed_reads``. A follower forwards to its leader; with no known leader this raises ``NotLeader``."""
        self._raft.dirty = True
        self._raft.read_index(context)

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to``: it is caught up, then told to campaign at once. Proposals are
        refused meanwhile; the transfer is abandoned after an election timeout. ``NotLeader`` on a
        non-leader; ``LocalProtocolError`` if ``to`` is not a voter."""
        self._raft.dirty = True
        self._raft.transfer_leadership(NodeId(to))

    def forget_leader(self, campaign_in: int = 0, sure: bool = True) -> None:
        """The leader's node is gone (the failure detector says so, or the connection to it broke): wake if
        quiesced, forget the leader and campaign (pre-vote first) within ``campaign_in`` ticks, rather than after
        a whole election timeout of silence (a quiesced follower hears nothing anyway). A no-op on a leader or a
        replica already campaigning; harmless if the leader is in fact alive: members that still hear from it
        refuse the pre-vote, and its next heartbeat makes this replica a follower again. Not ``sure`` (the node
        is only suspected): wake and campaign within ``campaign_in`` ticks, but without forgetting the leader's
        lease, so no member grants the pre-vote while it heard from the leader within an election timeout."""
        self._raft.dirty = True
        self._raft.forget_leader(campaign_in, sure)

    def wake(self) -> None:
        """Leave quiescence (the driver's own reason: a local request, a member that came back)."""
        r = self._raft
        if r.quiesced:
            r.dirty = True
            r.wake(heartbeat=True)

    def report_unreachable(self, node: str) -> None:
        """The transport failed to send to ``node``: stop streaming appends to it, probe instead."""
        self._raft.dirty = True
        self._raft.report_unreachable(NodeId(node))

    def report_snapshot(self, node: str, ok: bool) -> None:
        """The snapshot stream to ``node`` finished (``ok``) or failed; replication resumes by probing."""
        self._raft.dirty = True
        self._raft.report_snapshot(NodeId(node), ok)

    def compact(self, index: int) -> SnapshotMeta | None:
        """The application's state at applied ``index`` now serves as the snapshot: the log up to ``index``
        is no longer needed. Returns the SnapshotMeta (index, term, configuration at ``index``) that the next
        Ready carries as ``compaction``, or None if ``index`` is not past the current snapshot (or a received
        snapshot is being installed). Raises ``LocalProtocolError`` beyond the applied index."""
        r = self._raft
        log = r.log
        if index > log.applied:
            raise LocalProtocolError(f"cannot compact the log to {index}: only {log.applied} is applied")
        current = r.pending_compaction.index if r.pending_compaction else log.storage.snapshot_meta().index
        if index <= current or log.has_pending_snapshot():
            return None
        meta = self.snapshot_meta_at(index)
        r.pending_compaction = meta
        r.confs.compact_to(index)
        return meta

    # --- queries ------------------------------------------------------------------------------------------

    def conf_state(self) -> ConfState:
        """The newest configuration in the log (in effect from its append, committed or not)."""
        return self._raft.confs.current

    def conf_state_at(self, index: int) -> ConfState:
        """The configuration in effect at ``index`` (from the snapshot's up to the last index). Meant for
        committed (applied) indexes: an uncommitted suffix may still be replaced."""
        r = self._raft
        if not r.confs.base_index <= index <= r.log.last_index():
            raise LocalProtocolError(
                f"no configuration is known at index {index}: the log spans {r.confs.base_index}..{r.log.last_index()}"
            )
        return r.confs.at(index)

    def snapshot_meta_at(self, index: int) -> SnapshotMeta:
        """The meta of a snapshot of the applied state at ``index``: what a leader's driver sends along with
        its data when a Ready asks it (``InstallSnapshot``) to stream a snapshot to a follower."""
        try:
            term = self._raft.log.term(index)
        except (LogCompacted, LogUnavailable):
            raise LocalProtocolError(f"index {index} is outside the log; snapshot at an applied index") from None
        return SnapshotMeta(index=index, term=term, conf_state=self.conf_state_at(index))

    @property
    def id(self) -> NodeId:
        return self._raft.id

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def leader(self) -> NodeId | None:
        return self._raft.lead

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def quiesced(self) -> bool:
        """Whether this replica's group is quiet: its clock stands still, so the driver need not tick it (see
        ``RaftConfig.quiesce_ticks``). Any input that needs the clock wakes it."""
        return self._raft.quiesced

    def tombstone(self) -> Tombstone:
        """What must outlive this replica when the driver deletes its data: hand it to the next ``RawNode`` of
        this group on this node (see ``Tombstone``)."""
        r = self._raft
        floor = max((r.log.last_term(), r.log.last_index()), r.vote_floor)
        return Tombstone(term=r.term, vote=r.vote, last_index=floor[1], last_term=floor[0])

    def status(self) -> Status:
        r = self._raft
        return Status(
            id=r.id,
            role=r.role,
            term=r.term,
            vote=r.vote,
            leader=r.lead,
            commit=r.log.committed,
            applied=r.log.applied,
            last_index=r.log.last_index(),
            learner=r.is_learner,
            conf_state=r.confs.current,
            lead_transferee=r.lead_transferee,
            progress={
                node: PeerStatus(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    recent_active=pr.recent_active or pr.was_active,
                    learner=pr.learner,
                    inflight=len(pr.inflights),
                )
                for node, pr in r.prs.items()
            },
        )

    def can_wait(self, m: Message) -> bool:
        """Whether stepping ``m`` may wait for this replica's next step for another reason (a proposal, a tick),
        because it would only record a follower's progress: it commits nothing, sends nothing, answers no read
        and renews no lease. Leaders only, from a follower in replication, while no leadership transfer is under
        way; then
        - a successful append acknowledgement of this term, for an index already committed, from a follower the
          leader has sent its whole log (the second one of each entry in a group of three, even when a later
          entry is on its way: stepping it frees room in the follower's window, and nothing is left to send), or
        - a heartbeat answer of this term, from a follower that has the whole log, for a round a quorum has
          acknowledged already (the second one of each read's round).
        A driver that steps such a message at once spends a step (and a Ready check) on nothing. Anything else,
        or any doubt, is False."""
        r = self._raft
        if m.term != r.term or r.role is not Role.LEADER or r.lead_transferee is not None:
            return False
        pr = r.prs.get(m.frm)
        if pr is None or pr.state is not ProgressState.REPLICATE:
            return False
        log = r.log
        last = log.last_index()
        if type(m) is AppendResponse:
            return not m.reject and m.index <= log.committed and pr.next > last
        if type(m) is HeartbeatResponse:  # (the follower had the whole log already)
            return pr.match == last and m.seq <= r.readonly.acked_seq
        return False

    def is_idle(self) -> bool:
        """Whether nothing is in flight: for a leader, every member holds the whole log and knows it is
        committed, and no read, transfer or Ready is pending. (The door for quiescing idle groups.)"""
        r = self._raft
        if self._outstanding is not None or self.has_ready():
            return False
        last = r.log.last_index()
        if r.role is not Role.LEADER:
            return r.role is Role.FOLLOWER and r.log.committed == last
        return (
            r.log.committed == last
            and r.lead_transferee is None
            and not r.readonly.has_pending()
            and all(pr.match == last and pr.sent_commit >= last for n, pr in r.prs.items() if n != r.id)
        )

    # --- Ready / advance ----------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        """Whether ``ready()`` has anything to hand out (always False while a Ready is outstanding)."""
        if self._outstanding is not None:
            return False
        r = self._raft
        if r.dirty or r.appended:
            r.flush()
        if r.msgs:
            return True
        log = r.log
        hs = self._prev_hs
        soft = self._prev_soft
        return bool(
            log.handed <= log.last
            or (log.committed > log.applying and log.snapshot is None)
            or log.committed != hs.commit
            or r.term != hs.term
            or r.vote != hs.vote
            or r.lead != soft.leader
            or r.role is not soft.role
            or (log.snapshot is not None and not log.snapshot_handed)
            or r.read_states
            or r.failed_reads
            or r.pending_compaction is not None
        )

    def ready(self) -> Ready:
        """Everything to persist, send and apply now. Call ``advance`` with it once done."""
        if self._outstanding is not None:
            raise LocalProtocolError("ready() called again before advance(): finish the outstanding Ready first")
        r = self._raft
        if r.dirty or r.appended:
            r.flush()
        log = r.log
        entries, snapshot = log.hand_out()
        prev = self._prev_hs
        hard_state = None
        must_sync = bool(entries) or snapshot is not None
        new_vote = r.term != prev.term or r.vote != prev.vote
        if new_vote or log.committed != prev.commit:
            hard_state = HardState(term=r.term, vote=r.vote, commit=log.committed)
            must_sync = must_sync or new_vote
            self._prev_hs = hard_state
        committed: list[Entry] = []
        if log.committed > log.applying and log.snapshot is None:
            committed = log.next_committed(r.cfg.max_committed_bytes_per_ready)
            if committed:
                log.applying = committed[-1].index
                if r.uncommitted_size and r.role is Role.LEADER:
                    r.reduce_uncommitted(committed)
        # The core's lists are handed over whole and replaced, never shared with a Ready.
        msgs, r.msgs = r.msgs, []
        read_states, r.read_states = r.read_states, []
        failed_reads, r.failed_reads = r.failed_reads, []
        compaction = r.pending_compaction
        r.pending_compaction = None
        soft = self._prev_soft
        soft_state = None
        if r.lead != soft.leader or r.role is not soft.role:
            soft_state = self._prev_soft = SoftState(leader=r.lead, role=r.role)
        # The leader's appends may leave before its write (§10.2.1) only if they carry nothing that is not
        # durable yet but the entries themselves: no new term or vote (a vote must be durable before anyone
        # hears of the term), and no commit index covering this Ready's entries. The leader's own match counts
        # its unsynced entries, so that commit needed no other vote: one voter, or a joint configuration whose
        # halves are both just the leader (when the entries were committed: a later conf change in the same
        # Ready must not hide it). With any other voter needed, the answers that commit are stepped only after
        # this write (the driver contract), so the commit index never reaches unsynced entries.
        early = r.role is Role.LEADER and not new_vote and not (entries and log.committed >= entries[0].index)
        rd = Ready(
            hard_state=hard_state,
            entries=entries,
            snapshot=snapshot,
            compaction=compaction,
            committed_entries=committed,
            messages=msgs,
            read_states=read_states,
            failed_reads=failed_reads,
            soft_state=soft_state,
            must_sync=must_sync,
            appends_first=early,
        )
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied everything ``rd`` asked for."""
        if rd is not self._outstanding:
            raise LocalProtocolError("advance() got a Ready that is not the outstanding one")
        self._outstanding = None
        r = self._raft
        log = r.log
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.index)
            if rd.snapshot.index > log.applied:
                log.applied = rd.snapshot.index
            if rd.snapshot.index > log.applying:
                log.applying = rd.snapshot.index
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            index = rd.committed_entries[-1].index
            if index > log.applied:
                log.applied = index
                log.trim_cache()
            if r.voters_out and r.role is Role.LEADER:
                r.dirty = True
                r.on_applied()
