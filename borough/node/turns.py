"""A replica's turns in the node's rounds: feed its Raft core, and carry out a Ready in two halves around the write.

This module owns the driver half of etcd-io/raft's contract for one group, as the node's rounds
(``borough.node.rounds``) call it: ``prepare`` feeds the core what arrived (ticks, commands, messages, proposals,
reads), takes its Ready and carries out its plan (``borough.raft.ready_plan``) up to the write: it sends what may
leave early, applies committed entries and builds the batch. Once the round's write is done, ``finish`` sends the
rest, settles the waiters, advances the core and asks for another turn if there is more to do. ``Replica`` mixes
it in; the replica's state, queues and public API live in ``borough.node.replica``.

A write is answered once it is committed and applied, and its applied state written. One exception, which no
caller can tell apart: a turn whose batch needs no sync, prepared while nothing holds the store, answers the
callers of the entries it applies as soon as it has applied them. Its batch is written later in the same step of
the event loop (``Rounds.writes_at_once``), so no other task, and no read, runs between the answer and the write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from borough.errors import BoroughError, NotLeader, Unavailable
from borough.node.inbox import Inbox
from borough.node.incarnations import Incarnations
from borough.node.persist import ReplicaStats, Turn, compaction_target, ready_batch
from borough.node.rounds import Rounds
from borough.node.staging import SnapshotStaging
from borough.node.statemachine import StateMachine
from borough.node.waiters import Proposals, Reads
from borough.raft.messages import InstallSnapshot
from borough.raft.rawnode import RawNode
from borough.raft.ready_plan import ReadyPlan, plan_ready
from borough.raft.records import EntryKind
from borough.raft.role import Role

if TYPE_CHECKING:
    from borough.node.replica import ReplicaHost

__all__ = ["Turns"]


class Turns:
    """The half of ``Replica`` that the node's rounds drive (see the module docstring)."""

    host: ReplicaHost
    name: str
    machine: StateMachine
    applied: int
    stats: ReplicaStats
    incarnations: Incarnations
    removed: bool
    _raw: RawNode
    _rounds: Rounds
    _inbox: Inbox
    _proposals: Proposals
    _reads: Reads
    _staging: SnapshotStaging
    _stopped: BaseException | None
    _ended: trio.Event
    _failure: BaseException | None
    _snapshot_every: int
    _first_campaign: bool
    _campaign_queued: bool

    @property
    def electing(self) -> bool:
        """Whether this replica is starting its group's first term (``Replica.campaign``: taking the lead it is
        appointed to, or electing itself) and has not finished: proposals wait in the queue for the outcome, so a
        new partition's first write rides with the new leader's first entry (one append, one sync) instead of
        following it."""
        if self._first_campaign:
            raw = self._raw
            role = raw.role
            if (
                self._campaign_queued
                or role is Role.CANDIDATE
                or role is Role.PRE_CANDIDATE
                or (role is Role.FOLLOWER and raw.term == 0)
            ):
                return True
            self._first_campaign = False
        return False

    def _stream_snapshot(self, message: InstallSnapshot) -> None:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        """A turn failed: the replica ends (its task raises ``exc``; the node restarts it or stops)."""
        if self._failure is None and not self._ended.is_set():
            self._failure = exc
            self._ended.set()

    def prepare(self) -> Turn | None:
        """The first half of a turn: feed the core, and carry out its Ready up to the write (None: no Ready)."""
        if self._stopped is not None or self._ended.is_set():
            return None
        raw = self._raw
        if not self.removed:  # a removed replica finishes what its core has under way, and takes nothing new
            self._feed()
        if not raw.has_ready():
            self._settle()
            return None
        rd = raw.ready()
        plan = plan_ready(rd)
        host = self.host
        if plan.send_before:
            # A leader replicates while it writes: its followers' syncs overlap its own. Safe because nothing
            # is stepped into the core until this Ready is advanced (see ``RawNode``). They leave before the
            # batch is built, at once when this is the round's only turn (``Rounds.flush_if_lone``).
            host.send_raft(self.name, plan.send_before, self.incarnations.stamp)
            self._rounds.flush_if_lone()
        # Entries, a snapshot or a new term/vote must be durable before the messages that depend on them
        # leave; a commit index or applied state alone need not be (both are recovered from the synced log).
        sync = plan.must_sync and host.fsync
        applied = None
        if (
            plan.apply
            and not sync
            and plan.install is None
            and self._proposals.by_index
            and self._rounds.writes_at_once
        ):
            # The entries are committed, and the batch that applies them is written later in this same step of
            # the event loop, before any other task (a read, a handler) can run or look at the store: answering
            # their callers as soon as they are applied is indistinguishable from answering them once that batch
            # is written, and on a lone write's path the replies leave before the batch is even built.
            applied = self.machine.apply(plan.apply)
            self._proposals.settle_applied(plan.apply, applied[1])
        batch, results = ready_batch(host.store, self.name, plan, self._staging, self.machine, applied)
        self.stats.count(plan)
        return Turn(rd, plan, results, batch if len(batch) else None, sync, applied is not None)

    def finish(self, turn: Turn) -> None:
        """The second half, once the turn's batch is written: send, settle, advance (see ``ready_plan``)."""
        if self._stopped is not None or self._ended.is_set():
            return
        self._carry_out(turn.plan, turn.results)
        raw = self._raw
        raw.advance(turn.rd)
        self._reads.serve(self.applied)
        self._maybe_compact()  # after advance: the core may compact only what it knows is applied
        if raw.has_ready() or (self._inbox.pending and not self.removed):
            self._rounds.want(self)
        else:
            self._settle()

    def _settle(self) -> None:
        if self.removed:
            self._ended.set()
        else:
            self._inbox.settle(self._raw.quiesced)

    def _feed(self) -> None:
        """Hand the core everything queued since the last round: ticks, commands, messages, proposals, reads."""
        raw = self._raw
        self._inbox.feed(raw, self._staging.stepping)
        # (Most turns have neither proposals nor reads, a follower's never: they cost those turns nothing.)
        if self._proposals.queued and not (self._first_campaign and self.electing):  # (electing: they wait)
            self._proposals.propose_queued(
                lambda data: raw.propose(data) if isinstance(data, bytes) else raw.propose_conf_change(data),
                lambda: raw.term,
            )
        if self._reads.queued:
            self._reads.start_round(raw.read_index)

    def _carry_out(self, plan: ReadyPlan, results: dict[int, Any]) -> None:
        """What a Ready does once its batch is durable, in the order of its plan."""
        host = self.host
        name = self.name
        committed = plan.apply
        if plan.install is not None:
            self.applied = plan.install.index
            self.machine.reload()
        if plan.send_after:
            host.send_raft(name, plan.send_after, self.incarnations.stamp)
            self._rounds.flush_if_lone()  # (a follower's acknowledgement: before its core is advanced)
        for message in plan.stream_snapshots:
            self._stream_snapshot(message)
        if committed:
            self.applied = committed[-1].index
        if self._proposals.by_index:
            lost = lambda: NotLeader(name, self._raw.leader)  # noqa: E731
            unknown = lambda: _outcome_unknown(name, host.node_id)  # noqa: E731
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
