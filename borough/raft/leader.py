"""What a replica does as leader, and the requests whose answer depends on being one.

Everything here runs on the leader's state: proposals and the uncommitted-bytes cap, replication (batched,
pipelined appends, snapshots for followers that fell behind the compacted log, heartbeats), the answers that
move a follower's progress, commitment (§5.3, §5.4.2), linearizable reads (ReadIndex rounds and the lease, and a
follower's forwarding of reads), leadership transfer, and the leader's tick (heartbeats, check-quorum). It is a
mixin of ``core.Raft``, which owns the state and the role changes: this module never changes role or term
except by calling ``become_follower``. Like the core, it does no I/O: messages go to ``msgs``.
"""

from __future__ import annotations

import logging

from borough.errors import LocalProtocolError, NotLeader, Overloaded
from borough.raft.conf_history import ConfHistory
from borough.raft.confchange import ConfChange, apply_conf_change, encode_conf_change
from borough.raft.config import RaftConfig
from borough.raft.errors import ConfChangeInProgress, LeadershipTransferInProgress
from borough.raft.log import RaftLog, total_size
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
)
from borough.raft.progress import Inflights, Progress, ProgressState
from borough.raft.quorum import VoteResult, joint_committed_index, joint_vote_result
from borough.raft.readonly import ForwardedReads, PendingRead, ReadOnly, ReadState
from borough.raft.records import ConfState, Entry, EntryKind, NodeId
from borough.raft.role import Role
from borough.raft.storage import LogCompacted, LogUnavailable

__all__ = ["LeaderMixin"]

_CONF = EntryKind.CONF_CHANGE
_log = logging.getLogger("borough.raft.core")


class LeaderMixin:
    """The leader's half of ``core.Raft``. The annotations below are the state it shares with the core."""

    cfg: RaftConfig
    id: NodeId
    term: int
    lead: NodeId | None
    role: Role
    log: RaftLog
    confs: ConfHistory
    voters_in: frozenset[NodeId]
    voters_out: frozenset[NodeId]
    voter_ids: tuple[NodeId, ...]
    learner_ids: frozenset[NodeId]
    msgs: list[Message]
    read_states: list[ReadState]
    failed_reads: list[bytes]
    ticks: int
    election_elapsed: int
    heartbeat_elapsed: int
    prs: dict[NodeId, Progress]
    me: Progress | None
    cap: int
    pending_conf_index: int
    uncommitted_size: int
    lead_transferee: NodeId | None
    transfer_elapsed: int
    lease_void: bool
    readonly: ReadOnly
    forwarded: ForwardedReads
    appended: bool
    dirty: bool
    commit_advanced: bool
    quiesced: bool
    idle_ticks: int
    read_lately: bool

    def become_follower(self, term: int, lead: NodeId | None) -> None:
        raise NotImplementedError  # core.Raft

    def _apply_conf(self, cs: ConfState) -> None:
        raise NotImplementedError  # core.Raft

    def wake(self, heartbeat: bool = False) -> None:
        raise NotImplementedError  # core.Raft

    def _new_progress(self, match: int, next: int) -> Progress:
        return Progress(
            match=match, next=next, inflights=Inflights(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes)
        )

    # --- the leader's clock ---------------------------------------------------------------------------------

    def _tick_leader(self, quiet: bool = False) -> None:
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
                    pr.was_active = pr.recent_active
                    pr.recent_active = node == self.id
        if self.lead_transferee is not None:
            self.transfer_elapsed += 1
            if self.transfer_elapsed >= cfg.election_tick:
                # The target did not take over within an election timeout: give up and accept proposals again.
                self.lead_transferee = None
        if self.readonly.has_pending():
            for r in self.readonly.expire(self.ticks, cfg.election_tick):
                self._fail_read(r)
        if cfg.quiesce_ticks:
            # A read since the last tick counts as work: a group that serves reads stays awake (its lease with it:
            # waking voids a lease); one that took a write and nothing since may go quiet at this very tick.
            self.idle_ticks = self.idle_ticks + 1 if self._idle() and not self.read_lately else 0
            self.read_lately = False
        if quiet:
            return  # (a tick counted late: the next one sends the heartbeat that is due)
        if self.heartbeat_elapsed >= cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            if cfg.quiesce_ticks and self.idle_ticks >= cfg.quiesce_ticks:
                # The group has been idle long enough: one last heartbeat tells the followers, and the clock
                # stops (the driver stops ticking us). Any proposal, read or message wakes us.
                self._broadcast_heartbeat(quiesce=True)
                self.quiesced = True
                if _log.isEnabledFor(logging.DEBUG):
                    matches = {n: pr.match for n, pr in self.prs.items()}
                    _log.debug("%s quiesced at %d %s", self.id, self.log.last, matches, extra={"group": self.cfg.group})
                return
            self._broadcast_heartbeat()

    def _idle(self) -> bool:
        """Whether nothing is in flight: everything committed and applied, no read, transfer or membership change
        under way, every follower that answers (within the last two check-quorum rounds) holds the whole log, and
        so does every learner. A voter that does not answer is not waited for (its node may be down for long): when
        it returns it campaigns, which wakes us."""
        log = self.log
        last = log.last
        if (
            log.committed != last
            or log.applied != last
            or self.lead_transferee is not None
            or self.readonly.has_pending()
            or self.readonly.want_round
            or self.pending_conf_index > log.applied
            or self.voters_out
            or self.confs.current.learners_next
        ):
            return False
        me = self.id
        learners = self.learner_ids
        answering = {me: True}
        for node, pr in self.prs.items():
            if node == me:
                continue
            active = pr.recent_active or pr.was_active
            answering[node] = active
            if active and (pr.match != last or pr.state is not ProgressState.REPLICATE):
                return False
            if node in learners and pr.match != last:
                # A learner that lags is being added: it never campaigns, and its node may not even hold a replica
                # yet (it makes one when our messages reach it), so nothing would wake us for it. Stay awake, and
                # keep sending, until it has caught up (it is promoted, or removed if its node is gone for good).
                return False
        # A leader that no quorum answers (cut off, or removed from its group while it was away) is not idle: it
        # stays awake, so check-quorum makes it step down. Quiet, it would lead its stale group for ever.
        return joint_vote_result(self.voters_in, self.voters_out, answering) is VoteResult.WON

    def _quorum_active(self) -> bool:
        active = {node: pr.recent_active for node, pr in self.prs.items()}
        active[self.id] = True
        return joint_vote_result(self.voters_in, self.voters_out, active) is VoteResult.WON

    # --- proposals and replication -----------------------------------------------------------------------

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
        if self.quiesced:
            self.wake()
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
        self.wake()
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

        ``dirty`` is set by every input (``appended`` by proposals), so a flush with nothing new costs nothing."""
        if not (self.dirty or self.appended):
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
        force = self.commit_advanced  # (only ever set with ``commit_broadcast``)
        self.commit_advanced = False
        for node, pr in self.prs.items():
            if node != me:
                self._send_appends(node, pr, force)

    def _send_appends(self, node: NodeId, pr: Progress, force_commit: bool = False) -> None:
        """Send whatever the follower's state allows: in replicate, batches until the window is full."""
        log = self.log
        while (
            self._maybe_send_append(node, pr, force_commit)
            and pr.state is ProgressState.REPLICATE
            and pr.next <= log.last
        ):
            pass

    def _maybe_send_append(self, node: NodeId, pr: Progress, force_commit: bool = False) -> bool:
        """Send one append if the follower may take one. Returns whether entries went out (and more may).

        A new commit index alone does not make an append: it rides on the next one, or on the next heartbeat
        (at most a heartbeat interval later). Followers apply a little later than with a broadcast per commit,
        and a write costs half the messages and a follower Ready less. ``force_commit`` sends it now (a leader
        stepping down, and every commit advance with ``RaftConfig.commit_broadcast``)."""
        state = pr.state  # is_paused(), inlined: this runs for every follower on every Ready
        cfg = self.cfg
        log = self.log
        if state is ProgressState.REPLICATE:
            inflights = pr.inflights
            if inflights.full():
                return False
            if (
                cfg.coalesce_appends
                and pr.sent_count > 1
                and len(inflights)
                and not force_commit
                and log.last - pr.next < cfg.max_msg_entries
            ):
                return False  # (they go together once the append in flight is answered: ``RaftConfig``)
        elif state is ProgressState.SNAPSHOT or pr.probe_sent:
            return False
        last = log.last
        nxt = pr.next
        commit = log.committed
        if nxt > last and (pr.sent_commit >= commit or not force_commit):
            # Nothing new to send. A commit index alone rides on the next append or heartbeat, unless asked.
            return False
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
        if nxt == 1 and pr.learner and state is ProgressState.PROBE and entries and self._wants_snapshot(entries):
            self._send_snapshot(node, pr)
            return False
        self.msgs.append(
            AppendRequest(frm=self.id, to=node, term=self.term, prev_index=nxt - 1, prev_term=prev_term,
                          commit=commit, entries=entries)
        )  # fmt: skip
        if commit > pr.sent_commit:
            pr.sent_commit = commit
        if entries:
            nbytes = total_size(entries) if cfg.max_inflight_bytes else 0
            pr.sent_entries(entries[-1].index, len(entries), nbytes)
            return True
        pr.sent_entries(nxt - 1, 0, 0)
        return False

    def _wants_snapshot(self, entries: list[Entry]) -> bool:
        """Whether a learner about to be probed with the whole log (``entries`` from index 1: its log is empty)
        should get a snapshot instead: when that is more than ``learner_snapshot_bytes`` (see ``RaftConfig``)."""
        limit = self.cfg.learner_snapshot_bytes
        return bool(limit) and (entries[-1].index < self.log.last or total_size(entries) > limit)

    def _send_snapshot(self, node: NodeId, pr: Progress) -> None:
        if not pr.recent_active:
            return  # do not start streaming a snapshot to a node that may well be down
        meta = self.log.storage.snapshot_meta()
        pr.become_snapshot(meta.index)
        self.msgs.append(InstallSnapshot(frm=self.id, to=node, term=self.term, meta=meta))

    def _broadcast_heartbeat(self, quiesce: bool = False) -> None:
        seq = self.readonly.next_round(self.ticks, self.cfg.effective_lease_ticks)
        commit = self.log.committed
        me = self.id
        for node, pr in self.prs.items():
            if node != me:
                sent = min(pr.match, commit)
                # Only a follower that holds the whole log may stop its clock: one that lags (it did not answer
                # lately, see ``_idle``) gets a plain heartbeat, which wakes it if it was quiet, so it times out,
                # campaigns and thereby wakes us once it can reach us again.
                hush = quiesce and pr.match == commit
                self.msgs.append(Heartbeat(frm=me, to=node, term=self.term, commit=sent, seq=seq, quiesce=hush))
                if sent > pr.sent_commit:
                    pr.sent_commit = sent
                pr.heartbeat_sent(seq)

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
        # index > old >= the snapshot index, and index <= last: its term is in the log.
        if index <= old or log.term(index) != self.term:
            return False
        log.commit_to(index)
        if self.cfg.commit_broadcast:
            self.commit_advanced = True  # the next flush sends it to every follower
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
        """Send every follower what it lacks, the commit index included (a leader about to step down)."""
        me = self.id
        for node, pr in self.prs.items():
            if node != me:
                self._send_appends(node, pr, force_commit=True)

    def _on_append_response(self, m: AppendResponse) -> None:
        if self.role is not Role.LEADER:
            return
        pr = self.prs.get(m.frm)
        if pr is None or m.index > self.log.last_index():
            return  # a member we do not know, or an answer about entries this leader never had: not ours
        pr.recent_active = True
        if m.reject:
            hint = min(m.hint_index, m.index)
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
        if pr.heartbeat_answered(m.seq) and pr.state is ProgressState.REPLICATE:
            # Appends sent before that heartbeat were not acknowledged before its response: they were lost
            # (dropped on a full queue or a broken link). Probe from the match index, which resends them. A
            # slow follower is not mistaken for a lossy one: resending what is merely slow only doubles the load.
            pr.become_probe()
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
        self.wake()
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
        self.read_lately = True
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
            pr = self.prs.get(requester)
            if pr is not None:
                # The follower serves the read once it applied ``index``: let it learn the commit now.
                self._send_appends(requester, pr, force_commit=True)

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
        self.wake()
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
        self.transfer_elapsed = 0  # it must finish within an election timeout, counted from now
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
        self.wake()
        pr = self.prs.get(node) if self.role is Role.LEADER else None
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's answer (or the next heartbeat response) before probing.
        pr.probe_sent = True
