"""The Raft role state machine of one replica: follower, pre-candidate, candidate, leader.

Everything that changes a replica's Raft state lives here: terms and votes (§5.1, §5.2), elections with
pre-vote and check-quorum, replication and commitment (§5.3, §5.4), reads (§6.4 of Ongaro's thesis),
leadership transfer, membership (§6) and snapshots (§7). This module does not know how it is driven: it has no
clock (``tick()`` is time), no randomness of its own (an injected ``random.Random``), no I/O (messages are
appended to ``msgs``; entries and hard state are read off by ``RawNode`` into a ``Ready``). It does not know
what entries mean, except conf-change entries, whose configuration takes effect when they are appended.

Safety rests on the driver contract of ``RawNode``: whatever a Ready asks to persist is persisted before its
messages are sent. Hence the leader may count its own not-yet-persisted entries toward a quorum.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from typing import Any

from borough.errors import LocalProtocolError, NotLeader, Overloaded, RemoteProtocolError, StorageError
from borough.raft.conf_history import ConfHistory
from borough.raft.confchange import ConfChange, apply_conf_change, decode_conf_change, encode_conf_change
from borough.raft.config import RaftConfig
from borough.raft.errors import ConfChangeInProgress, LeadershipTransferInProgress
from borough.raft.log import RaftLog
from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from borough.raft.progress import Inflights, Progress, ProgressState
from borough.raft.quorum import VoteResult, joint_committed_index, joint_vote_result
from borough.raft.readonly import ForwardedReads, PendingRead, ReadOnly, ReadState
from borough.raft.records import ConfState, Entry, EntryKind, NodeId, SnapshotMeta
from borough.raft.storage import LogCompacted, LogStorage, LogUnavailable

__all__ = ["Raft", "Role"]

_log = logging.getLogger(__name__)

_FROM_LEADER = (AppendRequest, Heartbeat, InstallSnapshot)
_CONF = EntryKind.CONF_CHANGE


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class Raft:
    """One replica's Raft state. Driven through ``RawNode``; see there for the public contract."""

    def __init__(self, config: RaftConfig, storage: LogStorage, rng: random.Random, applied: int = 0) -> None:
        self.cfg = config
        self.id = config.id
        self.rng = rng
        self.log = RaftLog(storage)
        hs, _ = storage.initial_state()
        snap = storage.snapshot_meta()
        last = self.log.last_index()
        # Applied entries were committed, so a commit index lost with an unsynced write is recovered from it.
        commit = max(hs.commit, applied, snap.index)
        if commit > last:
            raise StorageError(
                f"partition {config.group!r}: the commit/applied index {commit} is beyond the last log index "
                f"{last}; the Raft log lost entries it had acknowledged (was the data directory restored?)"
            )
        self.log.committed = commit
        self.log.applying = self.log.applied = max(applied, snap.index)
        self.term = hs.term
        self.vote: NodeId | None = hs.vote
        self.lead: NodeId | None = None
        self.role = Role.FOLLOWER

        self.confs = ConfHistory(snap.index, snap.conf_state)
        if last > snap.index:
            for e in storage.entries(snap.index + 1, last + 1, 1 << 62):
                if e.kind == _CONF:
                    self.confs.append(e.index, self._decode_conf(e, StorageError))
        self.voters_in: frozenset[NodeId] = frozenset()
        self.voters_out: frozenset[NodeId] = frozenset()
        self.voter_ids: tuple[NodeId, ...] = ()
        self.learner_ids: frozenset[NodeId] = frozenset()
        self.member_ids: tuple[NodeId, ...] = ()

        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.failed_reads: list[bytes] = []
        self.pending_compaction: SnapshotMeta | None = None

        self.ticks = 0  # monotone local clock, for leases and read timeouts
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = config.election_tick
        # Ticks since a leader was last heard from. In lease mode a restarted replica must assume it may have
        # acknowledged a lease just before it stopped, so it starts "just heard" and holds its vote.
        self.since_leader_contact = 0 if config.read_only == "lease" else config.election_tick
        self.votes: dict[NodeId, bool] = {}
        self.prs: dict[NodeId, Progress] = {}
        self.me: Progress | None = None  # the leader's own entry of prs (None when not a member)
        self.cap = config.max_uncommitted_bytes or (1 << 62)
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.lead_transferee: NodeId | None = None
        self.lease_void = False
        self.readonly = ReadOnly()
        self.forwarded = ForwardedReads()
        self.appended = False  # the leader appended since the last flush
        self.dirty = True  # an input arrived since the last flush

        self._apply_conf(self.confs.current)
        self.become_follower(self.term, None)
        self._handlers: dict[type, Callable[[Any], None]] = {
            AppendRequest: self._on_append,
            AppendResponse: self._on_append_response,
            Heartbeat: self._on_heartbeat,
            HeartbeatResponse: self._on_heartbeat_response,
            VoteRequest: self._on_vote_request,
            VoteResponse: self._on_vote_response,
            InstallSnapshot: self._on_snapshot,
            TimeoutNow: self._on_timeout_now,
            ReadIndexRequest: self._on_read_request,
            ReadIndexResponse: self._on_read_response,
        }

    # --- configuration ------------------------------------------------------------------------------------

    def _decode_conf(self, e: Entry, error: type[Exception]) -> ConfState:
        try:
            return decode_conf_change(e.data)[1]
        except ValueError as exc:
            raise error(f"partition {self.cfg.group!r}: conf change entry {e.index} is malformed: {exc}") from None

    def _apply_conf(self, cs: ConfState) -> None:
        """Make ``cs`` the configuration in effect (on append, §4.1 of the thesis)."""
        self.voters_in = frozenset(cs.voters)
        self.voters_out = frozenset(cs.voters_outgoing)
        self.voter_ids = tuple(sorted(self.voters_in | self.voters_out))
        self.learner_ids = frozenset(cs.learners) | frozenset(cs.learners_next)
        self.member_ids = cs.members()
        if self.role is Role.LEADER:
            last = self.log.last_index()
            for node in self.member_ids:
                pr = self.prs.get(node)
                if pr is None:
                    pr = self._new_progress(match=0, next=max(last, 1))
                    pr.recent_active = True  # give a new member an election timeout before check-quorum counts it
                    self.prs[node] = pr
                pr.learner = node in self.learner_ids and node not in self.voter_ids
            for node in [n for n in self.prs if n not in self.member_ids]:
                del self.prs[node]
            self.me = self.prs.get(self.id)
            if self.lead_transferee is not None and self.lead_transferee not in self.voter_ids:
                self.lead_transferee = None

    def _new_progress(self, match: int, next: int) -> Progress:
        return Progress(
            match=match, next=next, inflights=Inflights(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes)
        )

    def promotable(self) -> bool:
        """Whether this replica may campaign: a voter (of either half) with no snapshot being installed."""
        return self.id in self.voter_ids and not self.log.has_pending_snapshot()

    @property
    def is_learner(self) -> bool:
        return self.id in self.learner_ids and self.id not in self.voter_ids

    # --- role changes -------------------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self._set_lead(None)
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_tick + self.rng.randrange(self.cfg.election_tick)
        self.votes = {}
        self.lead_transferee = None
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.lease_void = False
        self.appended = False
        for r in self.readonly.drain():
            # Local reads fail so the driver can retry; forwarded ones are left to their follower's timeout
            # (answering now, from a new term, would disturb that follower).
            if r.requester is None:
                self.failed_reads.append(r.context)
        self.readonly = ReadOnly()
        self.prs = {}
        self.me = None

    def _set_lead(self, lead: NodeId | None) -> None:
        if lead != self.lead:
            # Reads forwarded to the old leader will never be answered by the new one.
            self.failed_reads.extend(self.forwarded.drain())
            self.lead = lead

    def become_follower(self, term: int, lead: NodeId | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self._set_lead(lead)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "%s became follower at term %d (leader %s)", self.id, term, lead, extra={"group": self.cfg.group}
            )

    def _become_pre_candidate(self) -> None:
        # A pre-candidate keeps its term and vote: nothing about it changes unless the pre-vote is won.
        self._set_lead(None)
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.election_elapsed = 0
        self.randomized_timeout = self.cfg.election_tick + self.rng.randrange(self.cfg.election_tick)

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self._set_lead(self.id)
        last = self.log.last_index()
        for node in self.member_ids:
            pr = self._new_progress(match=0, next=last + 1)
            pr.learner = node in self.learner_ids and node not in self.voter_ids
            self.prs[node] = pr
        me = self.me = self.prs.get(self.id)
        if me is not None:
            me.match = last
            me.become_replicate()
            me.recent_active = True
        # Entries of earlier terms may hold a conf change not yet committed: no new one until ours is applied.
        self.pending_conf_index = last
        # The no-op of §8: committing it commits everything before it and lets reads be served (§6.4).
        self._append_entry(Entry(term=self.term, index=last + 1), count=False)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s became leader at term %d", self.id, self.term, extra={"group": self.cfg.group})

    # --- time ---------------------------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        self.since_leader_contact += 1
        timeout = self.cfg.election_tick
        if len(self.forwarded):
            self.failed_reads.extend(self.forwarded.expire(self.ticks, timeout))
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout and self.promotable():
            self.election_elapsed = 0
            self.campaign(transfer=False)

    def _tick_leader(self) -> None:
        cfg = self.cfg
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= cfg.election_tick:
            self.election_elapsed = 0
            if cfg.check_quorum:
                if not self._quorum_active():
                    # §6.2 of the thesis: a leader that cannot reach a quorum steps down so clients look elsewhere.
                    self.become_follower(self.term, None)
                    return
                for node, pr in self.prs.items():
                    pr.recent_active = node == self.id
            if self.lead_transferee is not None:
                # The target did not take over within an election timeout: give up and accept proposals again.
                self.lead_transferee = None
        if self.readonly.has_pending():
            for r in self.readonly.expire(self.ticks, cfg.election_tick):
                self._fail_read(r)
        if self.heartbeat_elapsed >= cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = {node: pr.recent_active for node, pr in self.prs.items()}
        active[self.id] = True
        return joint_vote_result(self.voters_in, self.voters_out, active) is VoteResult.WON

    def in_lease(self) -> bool:
        """Whether this replica heard from a leader within an election timeout (or is one), in which case it
        ignores vote requests (§4.2.3 of the thesis; it is also what makes the leader lease sound)."""
        return self.cfg.check_quorum and (
            self.role is Role.LEADER or self.since_leader_contact < self.cfg.election_tick
        )

    # --- elections ----------------------------------------------------------------------------------------

    def campaign(self, transfer: bool) -> None:
        if self.role is Role.LEADER or not self.promotable():
            return
        if self.cfg.pre_vote and not transfer:
            self._become_pre_candidate()
            self._solicit(pre_vote=True, transfer=False)
        else:
            self._become_candidate()
            self._solicit(pre_vote=False, transfer=transfer)

    def _solicit(self, pre_vote: bool, transfer: bool) -> None:
        term = self.term + 1 if pre_vote else self.term
        if self._tally(self.id, True, pre_vote):
            return
        last = self.log.last_index()
        last_term = self.log.last_term()
        for node in self.voter_ids:
            if node != self.id:
                self.msgs.append(
                    VoteRequest(
                        frm=self.id, to=node, term=term, last_index=last, last_term=last_term,
                        pre_vote=pre_vote, transfer=transfer,
                    )
                )  # fmt: skip

    def _tally(self, node: NodeId, granted: bool, pre_vote: bool) -> bool:
        """Count a vote; act on the result. Returns True when the election is decided."""
        self.votes.setdefault(node, granted)
        result = joint_vote_result(self.voters_in, self.voters_out, self.votes)
        if result is VoteResult.WON:
            if pre_vote:
                self._become_candidate()
                self._solicit(pre_vote=False, transfer=False)
            else:
                self._become_leader()
            return True
        if result is VoteResult.LOST:
            self.become_follower(self.term, None)
            return True
        return False

    def _on_vote_request(self, m: VoteRequest) -> None:
        # §5.2: one vote per term, first come first served; repeat it to the same candidate. A pre-vote for a
        # later term promises nothing, so it needs no free vote; it still needs an up-to-date log (§5.4.1).
        can_vote = (
            self.vote == m.frm or (self.vote is None and self.lead is None) or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self.msgs.append(VoteResponse(frm=self.id, to=m.frm, term=m.term, pre_vote=m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.msgs.append(VoteResponse(frm=self.id, to=m.frm, term=self.term, pre_vote=m.pre_vote, reject=True))

    def _on_vote_response(self, m: VoteResponse) -> None:
        if self.role is Role.PRE_CANDIDATE:
            # A granted pre-vote carries the term we would take; a rejection carries the voter's own term.
            if m.pre_vote and m.term == (self.term if m.reject else self.term + 1):
                self._tally(m.frm, not m.reject, pre_vote=True)
        elif self.role is Role.CANDIDATE and not m.pre_vote and m.term == self.term:
            self._tally(m.frm, not m.reject, pre_vote=False)

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self.role is not Role.LEADER and self.promotable():
            # The leader asked us to take over (transfer): campaign at once, skipping the pre-vote, and with
            # the transfer flag so voters that still hear from the old leader vote anyway.
            self.campaign(transfer=True)

    # --- the entry point for messages ---------------------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.to != self.id:
            raise RemoteProtocolError(
                f"a Raft message for {m.to!r} was delivered to {self.id!r} (partition {self.cfg.group!r}); "
                "the sender's view of this node is wrong"
            )
        t = m.term
        if t > self.term:
            tp = type(m)
            if tp is VoteRequest:
                assert isinstance(m, VoteRequest)
                if not m.transfer and self.in_lease():
                    # We heard from a leader less than an election timeout ago: a disruptive candidate (e.g. a
                    # removed or partitioned node) must not depose it. Do not even bump the term.
                    return
                if not m.pre_vote:
                    self.become_follower(t, None)
            elif tp is VoteResponse and m.pre_vote and not m.reject:  # type: ignore[union-attr]
                pass  # a granted pre-vote carries the term we would campaign for
            elif tp in _FROM_LEADER:
                self.become_follower(t, m.frm)
            else:
                self.become_follower(t, None)
        elif t < self.term:
            tp = type(m)
            if tp is AppendRequest or tp is Heartbeat:
                if self.cfg.check_quorum or self.cfg.pre_vote:
                    # A stale leader (e.g. back from a partition) would never learn of the newer term from
                    # nodes that ignore it, since pre-vote and leader stickiness stop them from campaigning.
                    self.msgs.append(AppendResponse(frm=self.id, to=m.frm, term=self.term))
            elif tp is VoteRequest and m.pre_vote:  # type: ignore[union-attr]
                self.msgs.append(VoteResponse(frm=self.id, to=m.frm, term=self.term, pre_vote=True, reject=True))
            return
        self._handlers[type(m)](m)

    # --- replication: follower side -----------------------------------------------------------------------

    def _heard_from_leader(self, m: Message) -> None:
        if self.role is not Role.FOLLOWER:
            # A candidate learns that someone won its term (§5.2).
            self.become_follower(self.term, m.frm)
        else:
            self._set_lead(m.frm)
        self.election_elapsed = 0
        self.since_leader_contact = 0

    def _on_append(self, m: AppendRequest) -> None:
        if self.role is Role.LEADER:
            return  # two leaders in one term cannot happen; ignore rather than corrupt anything
        self._heard_from_leader(m)
        log = self.log
        if m.prev_index < log.committed:
            self.msgs.append(AppendResponse(frm=self.id, to=m.frm, term=self.term, index=log.committed))
            return
        if not log.match_term(m.prev_index, m.prev_term):
            # §5.3 consistency check failed; hint the last place our logs may match to skip a term at a time.
            hint_index, hint_term = log.find_conflict_by_term(min(m.prev_index, log.last_index()), m.prev_term)
            self.msgs.append(
                AppendResponse(
                    frm=self.id, to=m.frm, term=self.term, index=m.prev_index, reject=True,
                    hint_index=hint_index, hint_term=hint_term,
                )
            )  # fmt: skip
            return
        entries = m.entries
        last_new = m.prev_index + len(entries)
        if entries:
            # The common case (entries right after our last one) finds the conflict on the first entry.
            conflict = log.find_conflict(entries)
            if conflict:
                if conflict <= log.committed:
                    raise AssertionError(f"Raft safety violation: committed entry {conflict} conflicts with the leader")
                k = conflict - m.prev_index - 1
                new = entries[k:] if k else entries
                changed = conflict <= log.last and self.confs.truncate_from(conflict)
                log.append(new)
                for e in new:
                    if e.kind == _CONF:
                        self.confs.append(e.index, self._decode_conf(e, RemoteProtocolError))
                        changed = True
                if changed:
                    self._apply_conf(self.confs.current)
        log.commit_to(min(m.commit, last_new))
        self.msgs.append(AppendResponse(frm=self.id, to=m.frm, term=self.term, index=last_new))

    def _on_heartbeat(self, m: Heartbeat) -> None:
        if self.role is Role.LEADER:
            return
        self._heard_from_leader(m)
        # The leader sends min(match, commit), so this never commits past what matches the leader's log.
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self.msgs.append(HeartbeatResponse(frm=self.id, to=m.frm, term=self.term, seq=m.seq))

    def _on_snapshot(self, m: InstallSnapshot) -> None:
        if self.role is Role.LEADER:
            return
        self._heard_from_leader(m)
        meta = m.meta
        log = self.log
        if meta.index <= log.committed:
            # Old news: tell the leader how far we are so it resumes replication from there.
            self.msgs.append(AppendResponse(frm=self.id, to=m.frm, term=self.term, index=log.committed))
            return
        # The snapshot's configuration may not list us yet: configurations take effect when appended, so a
        # leader that just added us streams its applied state, which can predate our conf-change entry. That
        # entry follows in the log, so we install the snapshot anyway (being in no configuration, we cannot
        # campaign meanwhile).
        if log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: it matches the leader up to there, so commit
            # instead of replacing the log (the driver discards the staged data).
            log.commit_to(meta.index)
            self.msgs.append(AppendResponse(frm=self.id, to=m.frm, term=self.term, index=log.last_index()))
            return
        # Any snapshot past our commit index reconnects us to the leader's log: install it.
        log.restore(meta)
        self.pending_compaction = None
        self.confs.reset(meta.index, meta.conf_state)
        self._apply_conf(meta.conf_state)
        self.msgs.append(AppendResponse(frm=self.id, to=m.frm, term=self.term, index=meta.index))

    # --- replication: leader side -------------------------------------------------------------------------

    def _append_entry(self, e: Entry, count: bool) -> None:
        self.log.append((e,))
        if count:
            self.uncommitted_size += len(e.data) + 24
        me = self.me
        if me is not None:
            me.match = e.index
            me.next = e.index + 1
        self.appended = True

    def check_proposal(self, size: int) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.cfg.group, self.lead)
        if self.lead_transferee is not None:
            raise LeadershipTransferInProgress(self.cfg.group, self.lead_transferee)
        cap = self.cfg.max_uncommitted_bytes
        if cap and self.uncommitted_size and self.uncommitted_size + size > cap:
            raise Overloaded(
                f"partition {self.cfg.group!r}: {self.uncommitted_size} bytes of proposals are waiting to be "
                f"committed (cap {cap}); back off and retry once some commit"
            )

    def propose(self, data: bytes) -> int:
        size = len(data) + 24
        pending = self.uncommitted_size
        if self.role is not Role.LEADER or self.lead_transferee is not None or (pending and pending + size > self.cap):
            self.check_proposal(size)
        log = self.log
        index = log.last + 1
        log.unstable.append(Entry(term=self.term, index=index, data=data))  # a leader's log only grows at its end
        log.last = index
        self.uncommitted_size = pending + size
        me = self.me
        if me is not None:
            me.match = index
            me.next = index + 1
        self.appended = True
        return index

    def propose_conf_change(self, change: ConfChange) -> int:
        data_estimate = 64 + 32 * len(change.changes)
        self.check_proposal(data_estimate)
        if self.pending_conf_index > self.log.applied:
            raise ConfChangeInProgress(
                f"partition {self.cfg.group!r}: the membership change at index {self.pending_conf_index} is not "
                "applied yet; propose the next change once it is"
            )
        return self._append_conf_change(change, count=True)

    def _append_conf_change(self, change: ConfChange, count: bool) -> int:
        result = apply_conf_change(self.confs.current, change)
        index = self.log.last_index() + 1
        self._append_entry(
            Entry(term=self.term, index=index, kind=_CONF, data=encode_conf_change(change, result)), count=count
        )
        self.confs.append(index, result)
        self.pending_conf_index = index
        self._apply_conf(result)
        return index

    def reduce_uncommitted(self, committed: list[Entry]) -> None:
        """Committed entries of our term were handed out: they no longer count against the cap. (Counting
        them off at hand-out rather than at commit saves re-reading them; the lag is one Ready.)"""
        term = self.term
        done = 0
        for e in committed:
            if e.term == term:
                done += len(e.data) + 24
        self.uncommitted_size = max(0, self.uncommitted_size - done)

    def on_applied(self) -> None:
        """The driver applied up to ``log.applied``: leave an auto-leave joint configuration once it is."""
        cs = self.confs.current
        if self.role is Role.LEADER and cs.joint and cs.auto_leave and self.log.applied >= self.pending_conf_index:
            self._append_conf_change(ConfChange.leave_joint(), count=False)

    def flush(self) -> None:
        """Leader: send what the last steps made sendable (appends, commit, a read round), batched.

        ``dirty`` is set by every input (RawNode sets it), so a flush with nothing new costs nothing."""
        if not self.dirty:
            return
        self.dirty = False
        if self.role is not Role.LEADER:
            return
        if self.appended:
            self.appended = False
            # The leader's own match is the largest, so it decides the commit index only when it is a quorum
            # by itself (a one-voter configuration or half of a joint one).
            if len(self.voters_in) == 1 or len(self.voters_out) == 1:
                self._maybe_commit()
                if self.role is not Role.LEADER:
                    return
        if self.readonly.want_round:
            self._broadcast_heartbeat()
        me = self.id
        for node, pr in self.prs.items():
            if node != me:
                self._send_appends(node, pr)

    def _send_appends(self, node: NodeId, pr: Progress) -> None:
        """Send whatever the follower's state allows: in replicate, batches until the window is full."""
        while self._maybe_send_append(node, pr) and pr.state is ProgressState.REPLICATE:
            pass

    def _maybe_send_append(self, node: NodeId, pr: Progress) -> bool:
        """Send one append if the follower may take one. Returns whether entries went out (and more may)."""
        if pr.is_paused():
            return False
        log = self.log
        last = log.last
        nxt = pr.next
        commit = log.committed
        if nxt > last and pr.sent_commit >= commit:
            return False
        cfg = self.cfg
        try:
            prev_term = log.term(nxt - 1)
            entries = log.slice(nxt, min(last + 1, nxt + cfg.max_msg_entries), cfg.max_msg_bytes) if nxt <= last else []
        except LogCompacted:
            self._send_snapshot(node, pr)
            return False
        except LogUnavailable:
            # next ran past our log (a follower answered for entries a former leader sent): probe again.
            pr.become_probe()
            pr.next = min(pr.next, last + 1)
            return False
        self.msgs.append(
            AppendRequest(frm=self.id, to=node, term=self.term, prev_index=nxt - 1, prev_term=prev_term,
                          commit=commit, entries=entries)
        )  # fmt: skip
        if commit > pr.sent_commit:
            pr.sent_commit = commit
        if entries:
            nbytes = sum(len(e.data) + 24 for e in entries) if cfg.max_inflight_bytes else 0
            pr.sent_entries(entries[-1].index, len(entries), nbytes)
            return True
        pr.sent_entries(nxt - 1, 0, 0)
        return False

    def _send_snapshot(self, node: NodeId, pr: Progress) -> None:
        if not pr.recent_active:
            return  # do not start streaming a snapshot to a node that may well be down
        meta = self.log.storage.snapshot_meta()
        pr.become_snapshot(meta.index)
        self.msgs.append(InstallSnapshot(frm=self.id, to=node, term=self.term, meta=meta))

    def _broadcast_heartbeat(self) -> None:
        seq = self.readonly.next_round(self.ticks)
        commit = self.log.committed
        me = self.id
        for node, pr in self.prs.items():
            if node != me:
                self.msgs.append(Heartbeat(frm=me, to=node, term=self.term, commit=min(pr.match, commit), seq=seq))

    def _maybe_commit(self) -> bool:
        """§5.3/§5.4.2: commit the highest index a quorum holds, if it is from the current term."""
        log = self.log
        prs = self.prs
        if self.voters_out:
            index = joint_committed_index(self.voters_in, self.voters_out, {n: pr.match for n, pr in prs.items()})
        else:
            # The common case, inlined: the median of a handful of match indexes.
            matches = sorted([prs[v].match for v in self.voter_ids])
            index = matches[(len(matches) - 1) // 2]
        old = log.committed
        if index <= old or log.term_or_none(index) != self.term:
            return False
        log.commit_to(index)
        self._after_commit(old)
        return True

    def _after_commit(self, old: int) -> None:
        ro = self.readonly
        if ro.waiting_commit:
            # §6.4: the first commit of our term makes our commit index current; reads may now be served.
            waiting, ro.waiting_commit = ro.waiting_commit, []
            for r in waiting:
                self._leader_read(r.context, r.requester, r.tick)
        if self.id not in self.voter_ids and self.confs.last_change_index <= self.log.committed:
            # We were removed (or demoted) and that is now committed: tell everyone, then step down (§6).
            self.flush_appends()
            self.become_follower(self.term, None)

    def flush_appends(self) -> None:
        me = self.id
        for node, pr in self.prs.items():
            if node != me:
                self._send_appends(node, pr)

    def _on_append_response(self, m: AppendResponse) -> None:
        if self.role is not Role.LEADER:
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            hint = m.hint_index
            if m.hint_term > 0:
                hint = self.log.find_conflict_by_term(m.hint_index, m.hint_term)[0]
            if pr.maybe_decrease_to(m.index, hint) and pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            return
        if pr.maybe_update(m.index):
            state = pr.state
            if state is ProgressState.PROBE:
                pr.become_replicate()
            elif state is ProgressState.SNAPSHOT:
                if pr.match + 1 >= self.log.first_index():
                    # The follower's log connects to ours again (it installed a snapshot, or caught up).
                    pr.become_probe()
                    pr.become_replicate()
            else:
                pr.inflights.free_le(m.index)
            if self._maybe_commit() and self.role is not Role.LEADER:
                return
            if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                self._send_timeout_now(m.frm)
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)

    def _on_heartbeat_response(self, m: HeartbeatResponse) -> None:
        if self.role is not Role.LEADER:
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.match < self.log.last and pr.match == pr.heartbeat_match:
            # No append was acknowledged for a whole heartbeat interval although some are outstanding: they
            # were probably lost. Probe from the match index (which resends them) rather than wait forever.
            pr.become_probe()
        pr.heartbeat_match = pr.match
        if m.seq > pr.acked_seq:
            pr.acked_seq = m.seq
            self._check_read_quorum()

    # --- reads --------------------------------------------------------------------------------------------

    def _check_read_quorum(self) -> None:
        ro = self.readonly
        acked = {node: pr.acked_seq for node, pr in self.prs.items()}
        acked[self.id] = ro.seq
        seq = joint_committed_index(self.voters_in, self.voters_out, acked)
        for r in ro.quorum_acked(seq, self.cfg.effective_lease_ticks):
            self._serve_read(r.index, r.context, r.requester)

    def read_index(self, context: bytes) -> None:
        if self.role is Role.LEADER:
            self._leader_read(context, None, self.ticks)
            return
        if self.lead is None:
            raise NotLeader(self.cfg.group, None)
        self.forwarded.add(context, self.ticks)
        self.msgs.append(ReadIndexRequest(frm=self.id, to=self.lead, term=self.term, context=context))

    def _leader_read(self, context: bytes, requester: NodeId | None, tick: int) -> None:
        log = self.log
        ro = self.readonly
        if log.term_or_none(log.committed) != self.term:
            # §6.4: until we commit an entry of our own term we do not know the latest commit index.
            ro.waiting_commit.append(PendingRead(index=0, context=context, requester=requester, seq=0, tick=tick))
            return
        index = log.committed
        if (
            self.voter_ids == (self.id,)
            or self.cfg.read_only == "lease"
            and not self.lease_void
            and self.ticks < ro.lease_until
        ):
            self._serve_read(index, context, requester)
        else:
            ro.add(index, context, requester, tick)

    def _serve_read(self, index: int, context: bytes, requester: NodeId | None) -> None:
        if requester is None:
            self.read_states.append(ReadState(index=index, context=context))
        else:
            self.msgs.append(ReadIndexResponse(frm=self.id, to=requester, term=self.term, index=index, context=context))

    def _fail_read(self, r: PendingRead) -> None:
        if r.requester is None:
            self.failed_reads.append(r.context)
        else:
            self.msgs.append(
                ReadIndexResponse(frm=self.id, to=r.requester, term=self.term, context=r.context, reject=True)
            )

    def _on_read_request(self, m: ReadIndexRequest) -> None:
        if self.role is Role.LEADER:
            self._leader_read(m.context, m.frm, self.ticks)
        else:
            self.msgs.append(ReadIndexResponse(frm=self.id, to=m.frm, term=self.term, context=m.context, reject=True))

    def _on_read_response(self, m: ReadIndexResponse) -> None:
        if self.role is Role.LEADER or not self.forwarded.answer(m.context):
            return
        if m.reject:
            self.failed_reads.append(m.context)
        else:
            self.read_states.append(ReadState(index=m.index, context=m.context))

    # --- leadership transfer ------------------------------------------------------------------------------

    def transfer_leadership(self, to: NodeId) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.cfg.group, self.lead)
        if to == self.id:
            self.lead_transferee = None
            return
        if to not in self.voter_ids or to not in self.prs:
            raise LocalProtocolError(
                f"partition {self.cfg.group!r}: cannot transfer leadership to {to!r}: it is not a voter"
            )
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        # The transfer must finish within an election timeout, counted from now.
        self.election_elapsed = 0
        if self.prs[to].match == self.log.last_index():
            self._send_timeout_now(to)

    def _send_timeout_now(self, to: NodeId) -> None:
        # The target may now win an election while our followers still hear from us: from here on our lease
        # proves nothing, so this term serves reads only through ReadIndex rounds.
        self.lease_void = True
        self.msgs.append(TimeoutNow(frm=self.id, to=to, term=self.term))

    # --- flow control reports -----------------------------------------------------------------------------

    def report_unreachable(self, node: NodeId) -> None:
        pr = self.prs.get(node) if self.role is Role.LEADER else None
        if pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node: NodeId, ok: bool) -> None:
        pr = self.prs.get(node) if self.role is Role.LEADER else None
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's answer (or the next heartbeat response) before probing.
        pr.probe_sent = True
