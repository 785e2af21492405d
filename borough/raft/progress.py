"""What a leader knows about each follower's log: match and next index, the flow-control state, in-flight appends.

This module owns the per-follower replication state machine (probe -> replicate, snapshot) and the in-flight
window that pipelines AppendEntries. It knows indexes and counts, not messages, logs or terms: the core decides
what to send and tells a Progress what it sent and what came back. Every update is O(1) amortised.

States (as in etcd-io/raft's tracker):
- PROBE: the leader does not know where the follower's log matches; it sends one append at a time and waits
  for the answer (or a heartbeat response) before sending the next.
- REPLICATE: the follower is known to match; the leader streams appends optimistically (``next`` moves on as
  soon as an append is sent), limited by the in-flight window.
- SNAPSHOT: the follower needs a snapshot; nothing is appended until the driver reports the snapshot's fate
  or the follower answers from a log that now connects to the leader's.
"""

from __future__ import annotations

import enum
from collections import deque

import attrs

__all__ = ["Inflights", "Progress", "ProgressState"]


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The appends sent to one follower and not yet acknowledged, oldest first, as (last index, bytes)."""

    __slots__ = ("_bytes", "_queue", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes  # 0 = no byte cap
        self._queue: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, last_index: int, nbytes: int) -> None:
        self._queue.append((last_index, nbytes))
        self._bytes += nbytes

    def free_le(self, index: int) -> None:
        """Forget every append whose last index is at most ``index`` (the follower has it now)."""
        q = self._queue
        while q and q[0][0] <= index:
            self._bytes -= q.popleft()[1]

    def reset(self) -> None:
        self._queue.clear()
        self._bytes = 0

    def full(self) -> bool:
        return len(self._queue) >= self.max_count or (0 < self.max_bytes <= self._bytes)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def bytes(self) -> int:
        return self._bytes


@attrs.define(slots=True, eq=False)
class Progress:
    """One follower (or the leader itself) as seen from the leader.

    ``match``: highest index known to be in the follower's log (§5.3 matchIndex). ``next``: the next index to
    send (§5.3 nextIndex). ``recent_active``: heard from it since the last check-quorum round;
    ``was_active``: heard from it in the round before (so a status read just after a round ends, when every
    ``recent_active`` was just reset, still sees who answers).
    ``acked_seq``: the highest heartbeat read round it acknowledged in this term (ReadIndex and lease).
    ``sent_commit``: the highest commit index sent to it (in an append or a heartbeat).
    ``sent_count``: the entries the last append sent to it in replicate carried (``RaftConfig.coalesce_appends``
    holds new entries back only while the append in flight carried more than one: proposals are outpacing
    appends).
    ``check_seq`` / ``check_index``: the heartbeat round sent first after appends went out, and the highest index
    sent before it (0: no check armed). Appends and heartbeats travel one ordered link and the follower answers in
    order, so once that round's response is in, every append sent before it has been answered or lost: a match
    still below ``check_index`` (or a probe still unanswered) means lost, and only then is anything resent.
    """

    match: int
    next: int
    inflights: Inflights
    learner: bool = False
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    recent_active: bool = False
    was_active: bool = False
    acked_seq: int = 0
    sent_commit: int = 0
    sent_count: int = 0
    check_seq: int = 0
    check_index: int = 0

    def reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.check_seq = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        # After a snapshot, probe from just past it: the follower either installed it or will reject and hint.
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self.reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self.reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self.reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self.reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """A successful append response up to ``index``. Returns whether ``match`` moved forward."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
        if self.next < index + 1:
            self.next = index + 1
        # Any answer to a probe lets the next probe go out.
        self.probe_sent = False
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejected append of ``prev_index == rejected``; ``match_hint`` is the highest index that may match.

        Returns False when the rejection is stale (it answers an append we already moved past), True when
        ``next`` was moved back.
        """
        if self.state is ProgressState.REPLICATE:
            # In replicate, every append after the match was sent optimistically: a rejection at or below the
            # match index is a reordered old answer; otherwise fall back to probing just past the match.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        # In probe (or snapshot) only the answer to the last probe counts: its prev_index is next - 1.
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int, count: int, nbytes: int) -> None:
        """An append carrying ``count`` entries up to ``last_index`` (``nbytes`` of them) went out."""
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index, nbytes)
                self.sent_count = count
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True
            self.check_seq = 0  # only a heartbeat sent after this probe can tell whether it was lost

    def heartbeat_sent(self, seq: int) -> None:
        """Heartbeat round ``seq`` went out: arm the lost-append check if appends are outstanding and no check
        is armed (an armed check is kept, so a steady stream of appends cannot postpone it forever)."""
        if self.check_seq:
            return
        if (self.state is ProgressState.REPLICATE and len(self.inflights)) or (
            self.state is ProgressState.PROBE and self.probe_sent
        ):
            self.check_seq = seq
            self.check_index = self.next - 1

    def heartbeat_answered(self, seq: int) -> bool:
        """The response to heartbeat round ``seq`` arrived. Returns True when appends sent before the armed
        round were lost: a probe may then go out again, and a replicating follower must be probed. A response
        to an earlier round says nothing (appends sent after that heartbeat may still be on their way)."""
        if not self.check_seq or seq < self.check_seq:
            return False
        self.check_seq = 0
        if self.state is ProgressState.PROBE:
            lost = self.probe_sent
            self.probe_sent = False
            return lost
        return self.state is ProgressState.REPLICATE and self.match < self.check_index

    def is_paused(self) -> bool:
        """Whether no append may go to this follower right now (a heartbeat still may)."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True
