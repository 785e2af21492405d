"""The Raft role state machine of one replica: follower, pre-candidate, candidate, leader.

Everything that changes a replica's role, term or vote lives here: terms and votes (§5.1, §5.2), elections
with pre-vote and check-quorum, the follower's side of replication (§5.3) and of snapshots (§7), and the
configuration in effect (§6: a conf-change entry takes effect when appended). What only a leader does
(proposals, sending appends, commitment, reads, transfer) is the ``leader.LeaderMixin`` half of the same object.

This module does not know how it is driven: it has no clock (``tick()`` is time), no randomness of its own (an
injected ``random.Random``), no I/O (messages are appended to ``msgs``; entries and hard state are read off by
``RawNode`` into a ``Ready``). It does not know what entries mean, except conf-change entries.

Safety rests on the driver contract of ``RawNode``: whatever a Ready asks to persist is persisted before its
messages are sent. Hence the leader may count its own not-yet-persisted entries toward a quorum.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from borough.errors import RemoteProtocolError, StorageError
from borough.raft.conf_history import ConfHistory
from borough.raft.confchange import decode_conf_change
from borough.raft.config import RaftConfig
from borough.raft.leader import LeaderMixin
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
from borough.raft.progress import Progress
from borough.raft.quorum import VoteResult, joint_vote_result
from borough.raft.readonly import ForwardedReads, ReadOnly, ReadState
from borough.raft.records import ConfState, Entry, EntryKind, NodeId, SnapshotMeta, Tombstone
from borough.raft.role import Role
from borough.raft.storage import LogStorage

__all__ = ["Raft", "Role"]

_log = logging.getLogger(__name__)

_FROM_LEADER = (AppendRequest, Heartbeat, InstallSnapshot)
_ANSWERS = (AppendResponse, HeartbeatResponse, VoteResponse, ReadIndexResponse)
_CONF = EntryKind.CONF_CHANGE


class Raft(LeaderMixin):
    """One replica's Raft state. Driven through ``RawNode``; see there for the public contract."""

    def __init__(
        self,
        config: RaftConfig,
        storage: LogStorage,
        rng: random.Random,
        applied: int = 0,
        tombstone: Tombstone | None = None,
    ) -> None:
        self.cfg = config
        self.id = config.id
        self.rng = rng
        self.log = RaftLog(storage, config.max_cache_bytes)
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
        # A replica of this group was deleted here before: resume its term and vote, and vouch for no log
        # behind the end of the one it had (see ``Tombstone``).
        self.vote_floor = (0, 0)
        if tombstone is not None:
            if tombstone.term > self.term or (tombstone.term == self.term and self.vote is None):
                self.term = tombstone.term
                self.vote = tombstone.vote
            self.vote_floor = (tombstone.last_term, tombstone.last_index)
        self.lead: NodeId | None = None
        self.role = Role.FOLLOWER
        #: The last pre-vote request ignored because we were in touch with a leader, and our tick then: if we
        #: learn soon after that the leader is gone (``forget_leader``), it is answered as if it arrived now.
        self.ignored_pre_vote: tuple[VoteRequest, int] | None = None

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
        self.transfer_elapsed = 0
        self.lease_void = False
        self.readonly = ReadOnly()
        self.forwarded = ForwardedReads()
        self.appended = False  # the leader appended since the last flush
        self.dirty = True  # an input arrived since the last flush
        self.commit_advanced = False  # the leader's commit index advanced since the last flush (``commit_broadcast``)
        # Quiescence (``RaftConfig.quiesce_ticks``): a quiesced replica's clock stands still; ``idle_ticks``
        # counts a leader's ticks in a row with nothing in flight; ``read_lately``: it took a read since its last
        # tick (reads keep a group awake, so a lease survives while they come).
        self.quiesced = False
        self.idle_ticks = 0
        self.read_lately = False

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

    def promotable(self) -> bool:
        """Whether this replica may campaign: a voter (of either half) with no snapshot being installed.

        Also, as the thesis prescribes (§4.2.2), a replica that its latest configuration removed still campaigns
        while that configuration is not committed, if it was a voter before: it may hold the only up-to-date
        log (a leader that removed itself and then lost its quorum), and the others may still need it to elect
        anyone. Its own vote does not count (votes are tallied against its latest configuration), so it can only
        win with a majority of the new configuration, then commits it and steps down.
        """
        if self.log.snapshot is not None:
            return False
        if self.id in self.voter_ids:
            return True
        log = self.log
        if self.confs.last_change_index <= log.committed:
            return False
        before = self.confs.at(log.committed)
        return self.id in before.voters or self.id in before.voters_outgoing

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
        self.commit_advanced = False
        self.quiesced = False
        self.idle_ticks = 0
        self.read_lately = False
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
        self.quiesced = False
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

    def tick(self, quiet: bool = False) -> None:
        """One unit of time; ``quiet``: a leader counts it (lease, check-quorum, timeouts) but sends no heartbeat
        for it (``RawNode.elapse``)."""
        if self.quiesced:
            return  # a quiesced replica's clock stands still (its driver should not even tick it)
        self.ticks += 1
        self.since_leader_contact += 1
        timeout = self.cfg.election_tick
        if len(self.forwarded):
            self.failed_reads.extend(self.forwarded.expire(self.ticks, timeout))
        if self.role is Role.LEADER:
            self._tick_leader(quiet)
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout and self.promotable():
            self.election_elapsed = 0
            self.campaign(transfer=False)

    def in_lease(self) -> bool:
        """Whether this replica heard from a leader within an election timeout (or is one), in which case it
        ignores vote requests (§4.2.3 of the thesis; it is also what makes the leader lease sound)."""
        return self.cfg.check_quorum and (
            self.role is Role.LEADER or self.since_leader_contact < self.cfg.election_tick
        )

    # --- quiescence ---------------------------------------------------------------------------------------

    def wake(self, heartbeat: bool = False) -> None:
        """Leave quiescence: the clock runs again. A leader's lease is void (time passed that it did not count),
        and with ``heartbeat`` it tells its followers at once that it is awake (a follower that campaigned, or
        asked for something, has not heard from it)."""
        if not self.quiesced:
            return
        self.quiesced = False
        self.idle_ticks = 0
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s woke (%s)", self.id, self.role.name.lower(), extra={"group": self.cfg.group})
        if self.role is Role.LEADER:
            self.readonly.lease_until = min(self.readonly.lease_until, self.ticks)
            self.election_elapsed = 0
            # Who answered before the group went quiet says nothing of now: it goes quiet again only once a quorum
            # answers (``_idle``), and check-quorum counts only answers from now on.
            for node, pr in self.prs.items():
                if node != self.id:
                    pr.recent_active = pr.was_active = False
            if heartbeat:
                self._broadcast_heartbeat()

    def forget_leader(self, campaign_in: int, sure: bool = True) -> None:
        """The driver learned that our leader's node is gone (failure detector, or the connection to it broke):
        wake, forget the leader and campaign (pre-vote first) within ``campaign_in`` ticks instead of a whole
        election timeout. Pre-vote and check-quorum still protect a leader that is merely slow: members that
        hear from it refuse the pre-vote. In lease mode the vote is still held for an election timeout after
        the last contact (the leader may hold a lease that long), so only the waiting for heartbeats is cut.

        Not ``sure`` (the detector only suspects the node): wake and campaign within ``campaign_in`` ticks, but
        keep counting the leader's lease, so members that heard from it within an election timeout (by their
        own clocks, which stood still while quiesced) refuse the pre-vote, and the leader, if alive, wakes on
        it and heartbeats: a false suspicion changes no leader."""
        if self.role is Role.LEADER:
            return
        self.wake()
        if self.role is not Role.FOLLOWER:
            return  # already campaigning
        if sure:
            self._set_lead(None)
            if self.cfg.read_only != "lease":
                self.since_leader_contact = max(self.since_leader_contact, self.cfg.election_tick)
            ignored, self.ignored_pre_vote = self.ignored_pre_vote, None
            if ignored is not None and self.ticks - ignored[1] < self.cfg.election_tick:
                # Another voter learned of the loss first and asked us while we still counted the leader: its
                # campaign waits on our answer (it would retry only after an election timeout). Take its request
                # again, as a late copy of it would be taken (Raft allows any delay): now it is granted if its log
                # is up to date, and the first voter to notice leads, without waiting for our own campaign.
                self.step(ignored[0])  # (a pre-vote request: it changes neither our term nor our role)
            if campaign_in <= 0 and self.promotable():
                self.election_elapsed = 0
                self.campaign(transfer=False)
                return
        self.election_elapsed = max(self.election_elapsed, self.randomized_timeout - campaign_in)

    # --- elections ----------------------------------------------------------------------------------------

    def campaign(self, transfer: bool, pre_vote: bool | None = None) -> None:
        """Start an election; ``pre_vote`` overrides the configured choice (None: as configured)."""
        if self.role is Role.LEADER or not self.promotable():
            return
        if (self.cfg.pre_vote if pre_vote is None else pre_vote) and not transfer:
            self._become_pre_candidate()
            self._solicit(pre_vote=True, transfer=False)
        else:
            self._become_candidate()
            self._solicit(pre_vote=False, transfer=transfer)

    def take_appointment(self) -> bool:
        """Lead a new group's first term without an election, if this replica was appointed to: every initial
        voter of a group the driver creates starts at term 1 having voted for the same member (the directory
        record's first voter), so no member can vote for anyone else in term 1 and no candidate can reach
        term 1 (a candidate's term is its old one plus one). The appointee may then take term 1 at once: here at
        term 1, its own vote, no leader heard of and an empty log (a log means it led before: it campaigns as
        usual). Returns whether it did. The driver must make the appointment durable before any message of
        this leader leaves (``RawNode.campaign`` sees to it)."""
        if not (
            self.term == 1
            and self.vote == self.id
            and self.role is Role.FOLLOWER
            and self.lead is None
            and self.log.last_index() == 0
            and self.promotable()
        ):
            return False
        self._become_leader()
        return True

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
        # A replica created again after its data was deleted also refuses a log behind its floor (``Tombstone``).
        can_vote = (
            self.vote == m.frm or (self.vote is None and self.lead is None) or (m.pre_vote and m.term > self.term)
        )
        behind = (m.last_term, m.last_index) < self.vote_floor
        up_to_date = not behind and self.log.is_up_to_date(m.last_index, m.last_term)
        if can_vote and up_to_date:
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
        self.dirty = True
        if m.to != self.id:
            raise RemoteProtocolError(
                f"a Raft message for {m.to!r} was delivered to {self.id!r} (partition {self.cfg.group!r}); "
                "the sender's view of this node is wrong"
            )
        t = m.term
        if m.frm != self.lead and m.frm not in self.member_ids and self._ignores_outsider(m):
            if self.quiesced and t > self.term and type(m) in _FROM_LEADER:
                # Someone leads a later term that our configuration does not list: our group went on without us
                # (we were removed and added back, or fell behind), and our leader may lead no more. Quiet, our
                # clock stood still, so we would count ourselves in touch with it for ever and ignore the new
                # leader for ever. Ask, as when the detector suspects our leader: wake and pre-vote at once,
                # keeping its lease. If it still leads, it wakes on the pre-vote and heartbeats, and nothing
                # changes; if not, the voters answer with the later term, and the new leader's next message is
                # taken.
                self.forget_leader(0, sure=False)
            return
        if type(m) is TimeoutNow and (m.frm != self.lead or t != self.term):
            return  # only our leader hands us its lead, in its term; from anyone else it would depose it
        if t > self.term:
            tp = type(m)
            if tp is VoteRequest:
                assert isinstance(m, VoteRequest)
                if not m.transfer and self.in_lease():
                    # We heard from a leader less than an election timeout ago: a disruptive candidate (e.g. a
                    # removed or partitioned node) must not depose it. Do not even bump the term. A quiesced
                    # replica wakes, though: the candidate does not hear from the leader (a leader that is
                    # alive then heartbeats at once; a follower counts the time again).
                    self.wake(heartbeat=True)
                    if m.pre_vote:
                        self.ignored_pre_vote = (m, self.ticks)
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
        if self.quiesced and type(m) is not HeartbeatResponse:
            self.wake(heartbeat=True)  # any message wakes a quiesced group, except answers to its heartbeats
        self._handlers[type(m)](m)

    def _ignores_outsider(self, m: Message) -> bool:
        """Whether to ignore ``m``, from a node outside our configuration that is not our leader either.

        Such a node sends us nothing in a healthy group, but one can: a leader our configuration does not list
        yet (we are new, or our log is behind and a later configuration elected it), a candidate that needs our
        vote (the same, or one that was removed) or a forged id, which the driver may let through (``_system``
        takes Raft traffic from nodes the member table does not list, so that a stale node can help elect a
        leader). An answer from it answers nothing we asked: ignored. Anything else is ignored while we are in
        touch with a leader (we lead, or heard from ours within an election timeout), as check-quorum's leader
        stickiness ignores a disruptive candidate: else a made-up leader's heartbeat, or any message with a higher
        term, would depose a leader that a quorum follows. A replica out of touch takes it as before, so a stale
        node still helps elect the leader of a configuration it does not know yet."""
        if type(m) in _ANSWERS:
            return True
        return self.in_lease() and (self.role is Role.LEADER or self.lead is not None)

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
        if self.role is not Role.FOLLOWER or self.lead != m.frm:
            if self.role is Role.LEADER:
                return  # two leaders in one term cannot happen; ignore rather than corrupt anything
            self._heard_from_leader(m)
        else:
            self.election_elapsed = 0
            self.since_leader_contact = 0
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
        log = self.log
        log.commit_to(min(m.commit, log.last_index()))
        if (
            m.quiesce
            and log.committed == log.last_index()
            and log.last_term() == m.term
            and not len(self.forwarded)
            and m.frm in self.voter_ids
        ):
            # The leader's log ends at m.commit in its term, and so does ours: we hold the whole log and know it
            # is committed. Stop the election timer; a message, or the driver, wakes us. Only for a voter of our
            # configuration: a sender that is none (a forged id) would leave us quiet under a leader that the
            # failure detector never watches, so we would never campaign again.
            # No answer: the leader went quiet as it sent this (no read waits on it, and the lease an answer would
            # extend is void once it wakes), and an answer would tell it nothing it does not know (it hushes only
            # a follower it knows holds the whole log). Half the messages of a group going quiet.
            self.quiesced = True
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug("%s quiesced at %d (leader %s)", self.id, m.commit, m.frm, extra={"group": self.cfg.group})
            return
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
