"""Linearizable reads without log writes: ReadIndex rounds, the leader lease, and reads forwarded to a leader.

This module owns the bookkeeping of reads (Ongaro's thesis §6.4); the core owns the decisions. It knows
indexes, ticks, node ids and opaque read contexts, nothing of messages or logs.

ReadIndex as done here: a read that arrives at the leader takes the current commit index as its read index
and waits for the next *heartbeat round*. Rounds are numbered (``seq``) within a term; every heartbeat carries
the round and every heartbeat response echoes it. Once a quorum acknowledged a round sent after the read
arrived, no other leader can have committed anything the read would miss, so the read is served. Numbered
rounds (instead of one heartbeat per read context, as etcd does) let every read of a cycle share one round.

The lease: a quorum acknowledging round ``r`` sent at leader tick ``t`` proves those followers heard from the
leader at or after ``t``; they ignore vote requests for an election timeout after that, so no other leader
can exist before ``t + election_tick``. Reads are served at once while the leader's tick is below
``t + lease_ticks`` (``lease_ticks < election_tick``, which leaves room for tick phase and clock drift).
"""

from __future__ import annotations

from collections import deque

import attrs

from borough.raft.records import NodeId

__all__ = ["ForwardedReads", "PendingRead", "ReadOnly", "ReadState"]


@attrs.frozen(kw_only=True, slots=True)
class ReadState:
    """A read identified by ``context`` may be served once the replica has applied ``index``."""

    index: int
    context: bytes


@attrs.define(slots=True, eq=False)
class PendingRead:
    """A read at the leader. ``requester`` is the follower that forwarded it, or None for a local read."""

    index: int
    context: bytes
    requester: NodeId | None
    seq: int  # the first round that confirms it
    tick: int  # when it arrived (reads that wait too long fail, so the caller can retry elsewhere)


class ReadOnly:
    """The leader's reads of one term."""

    __slots__ = ("acked_seq", "lease_until", "pending", "round_ticks", "seq", "waiting_commit", "want_round")

    def __init__(self) -> None:
        self.seq = 0  # the last round sent in this term
        self.acked_seq = 0  # the highest round a quorum acknowledged
        self.round_ticks: deque[tuple[int, int]] = deque()  # (seq, tick sent) of rounds not yet acknowledged
        self.pending: deque[PendingRead] = deque()  # ordered by seq
        self.waiting_commit: list[PendingRead] = []  # arrived before the leader committed in its term
        self.want_round = False
        self.lease_until = 0  # exclusive tick bound; 0 = no lease

    def next_round(self, tick: int, lease_ticks: int) -> int:
        """Start a heartbeat round now; returns its number."""
        self.seq += 1
        ticks = self.round_ticks
        # A round sent lease_ticks ago or earlier can no longer extend the lease: forget it, so that a leader cut
        # off from its followers (without check-quorum it may stay leader) does not pile up rounds forever.
        while ticks and tick - ticks[0][1] >= lease_ticks:
            ticks.popleft()
        ticks.append((self.seq, tick))
        self.want_round = False
        return self.seq

    def add(self, index: int, context: bytes, requester: NodeId | None, tick: int) -> None:
        self.pending.append(PendingRead(index=index, context=context, requester=requester, seq=self.seq + 1, tick=tick))
        self.want_round = True

    def quorum_acked(self, seq: int, lease_ticks: int) -> list[PendingRead]:
        """A quorum has acknowledged round ``seq``: renew the lease and return the reads it confirms."""
        if seq <= self.acked_seq:
            return []
        self.acked_seq = seq
        sent = None
        ticks = self.round_ticks
        while ticks and ticks[0][0] <= seq:
            s, t = ticks.popleft()
            if s == seq:
                sent = t
        if sent is not None:
            self.lease_until = max(self.lease_until, sent + lease_ticks)
        done: list[PendingRead] = []
        pending = self.pending
        while pending and pending[0].seq <= seq:
            done.append(pending.popleft())
        return done

    def expire(self, now: int, timeout: int) -> list[PendingRead]:
        """Reads that have waited ``timeout`` ticks or more: they fail, so their callers can retry."""
        out: list[PendingRead] = []
        while self.pending and now - self.pending[0].tick >= timeout:
            out.append(self.pending.popleft())
        if self.waiting_commit and now - self.waiting_commit[0].tick >= timeout:
            keep = [r for r in self.waiting_commit if now - r.tick < timeout]
            out.extend(r for r in self.waiting_commit if now - r.tick >= timeout)
            self.waiting_commit = keep
        return out

    def drain(self) -> list[PendingRead]:
        """Every read still waiting (the leader is stepping down: they all fail)."""
        out = list(self.waiting_commit) + list(self.pending)
        self.waiting_commit = []
        self.pending.clear()
        return out

    def has_pending(self) -> bool:
        return bool(self.pending or self.waiting_commit)


class ForwardedReads:
    """Reads a follower forwarded to its leader and is waiting for, by context, with the tick they left."""

    __slots__ = ("_by_context",)

    def __init__(self) -> None:
        self._by_context: dict[bytes, int] = {}

    def add(self, context: bytes, tick: int) -> None:
        self._by_context[context] = tick

    def answer(self, context: bytes) -> bool:
        """A response arrived; False if it answers nothing we wait for (duplicate or expired)."""
        return self._by_context.pop(context, None) is not None

    def expire(self, now: int, timeout: int) -> list[bytes]:
        if not self._by_context:
            return []
        old = [c for c, t in self._by_context.items() if now - t >= timeout]
        for c in old:
            del self._by_context[c]
        return old

    def drain(self) -> list[bytes]:
        out = list(self._by_context)
        self._by_context.clear()
        return out

    def __len__(self) -> int:
        return len(self._by_context)
