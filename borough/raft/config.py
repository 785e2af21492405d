"""RaftConfig: the settings of one replica's Raft core, validated once when built.

This module owns the knobs and their limits; it knows nothing of how the core uses them beyond the checks
that keep them coherent (a lease must be shorter than the election timeout, a heartbeat must come more often
than an election, ...). Time is measured in ticks: the driver calls ``tick()`` every ``tick_interval`` of its
choosing (e.g. 100 ms, so the default ``election_tick=10`` means an election timeout of 1 to 2 s).
"""

from __future__ import annotations

from typing import Literal

import attrs

from borough.errors import ConfigError
from borough.raft.records import NodeId

__all__ = ["RaftConfig", "ReadOnlyMode"]

ReadOnlyMode = Literal["safe", "lease"]


@attrs.frozen(kw_only=True)
class RaftConfig:
    """Settings of one Raft replica. Every field has a safe default except ``id``.

    - ``id``: this replica's node id (stable for the node's lifetime).
    - ``group``: the name of the Raft group (the partition name); used only in error messages.
    - ``election_tick``: a follower that hears nothing from a leader for a randomized ``[election_tick,
      2 * election_tick)`` ticks starts an election; a check-quorum leader steps down after ``election_tick``
      ticks without hearing from a quorum; a leadership transfer is abandoned after ``election_tick`` ticks.
    - ``heartbeat_tick``: a leader sends heartbeats every ``heartbeat_tick`` ticks.
    - ``pre_vote``: run a pre-vote round (Ongaro §9.6) before bumping the term, so a partitioned node that
      comes back does not depose a healthy leader.
    - ``check_quorum``: a leader steps down when it has not heard from a quorum within an election timeout,
      and a replica that heard from a leader within an election timeout ignores vote requests (§4.2.3).
    - ``read_only``: ``"safe"`` serves ReadIndex after a heartbeat round confirms leadership; ``"lease"`` also
      serves reads at once while a leader lease holds (requires ``check_quorum``).
    - ``lease_ticks``: how long a quorum acknowledgement of a heartbeat keeps the lease valid, counted from when
      that heartbeat was *sent*; must be shorter than ``election_tick`` (default ``election_tick - 2``, which
      leaves one tick for the followers' unaligned tick phases and one for clock drift).
    - ``max_msg_bytes`` / ``max_msg_entries``: the most entry bytes / entries one AppendEntries carries (at
      least one entry is always sent, however large).
    - ``max_inflight_msgs`` / ``max_inflight_bytes``: the pipelining window per follower (0 bytes = no byte cap).
    - ``max_uncommitted_bytes``: proposals are refused with ``Overloaded`` while the leader's log holds more
      than this many bytes of uncommitted entries (0 = no cap).
    - ``max_committed_bytes_per_ready``: at most this many bytes of committed entries in one Ready (at least
      one entry is always given).
    - ``learner_snapshot_bytes``: a learner with an empty log (a replica being added) that lacks more than this
      many bytes of log gets a snapshot of the applied state instead of the log (0 = always the log). The
      driver streams a snapshot beside the Raft messages, rate-limited, and it holds the state once rather than
      every write that led to it; a big catch-up pushed through the log would queue ahead of every other
      group's messages to that node and be written twice (log, then state).
    - ``quiesce_ticks``: a leader whose group has been idle this many ticks in a row (every member that answers
      holds the whole log, everything is committed and applied, no read, transfer or membership change is under
      way) sends one last heartbeat flagged ``quiesce`` and stops its clock; followers that hold the whole log
      stop theirs (0 = never). Any proposal, read or message wakes the group. A quiesced follower no longer
      notices a dead leader by missed heartbeats: the driver must tell it (``RawNode.forget_leader``).
    - ``commit_broadcast``: a leader whose commit index advances sends it to every follower at once (an append,
      with no entries when it has none to send), as etcd-io/raft's ``bcastAppend`` does. Off, a commit index
      rides on the next append or heartbeat (half the messages per write); on, followers apply as soon as the
      leader does (``_system``: every node learns a partition's directory record before its first write comes).
    - ``coalesce_appends``: while an append to a replicating follower that carried more than one entry is
      unanswered (proposals are outpacing appends), new entries for it wait and go together in the append sent
      once the answer arrives, unless more wait than one append carries (``max_msg_entries``): a follower
      catching up still gets appends pipelined up to the window. Fewer, larger appends cost less at both ends
      (on a busy node the entries would wait for a core anyway); the price is up to one replication round trip
      of waiting for an entry proposed while such an append is in flight. Appends of one entry at a time (one
      client writing) are pipelined as without it: the follower the commit did not wait for gets the next entry
      with the other, not in a step of its own when its answer comes.
    - ``max_cache_bytes``: persisted entries not yet applied are also kept in memory, up to this many bytes,
      so applying them (and resending them to a follower) does not read them back from storage (0 = no cache).
    """

    id: NodeId
    group: str = ""
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    read_only: ReadOnlyMode = "safe"
    lease_ticks: int | None = None
    max_msg_bytes: int = 1 << 20
    max_msg_entries: int = 4096
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0
    max_uncommitted_bytes: int = 64 << 20
    max_committed_bytes_per_ready: int = 16 << 20
    max_cache_bytes: int = 1 << 20
    learner_snapshot_bytes: int = 64 << 10
    quiesce_ticks: int = 0
    commit_broadcast: bool = False
    coalesce_appends: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError(f"RaftConfig.id must be a non-empty node id string, got {self.id!r}")
        if self.election_tick < 2:
            raise ConfigError(f"election_tick must be at least 2 ticks, got {self.election_tick}")
        if not 1 <= self.heartbeat_tick < self.election_tick:
            raise ConfigError(
                f"heartbeat_tick must be between 1 and election_tick - 1 ({self.election_tick - 1}), "
                f"got {self.heartbeat_tick}: a leader must send heartbeats more often than followers time out"
            )
        if self.read_only not in ("safe", "lease"):
            raise ConfigError(f"read_only must be 'safe' or 'lease', got {self.read_only!r}")
        if self.read_only == "lease" and not self.check_quorum:
            raise ConfigError(
                "read_only='lease' requires check_quorum=True: without it a deposed leader may keep serving"
            )
        if self.lease_ticks is not None and not 1 <= self.lease_ticks < self.election_tick:
            raise ConfigError(
                f"lease_ticks must be between 1 and election_tick - 1 ({self.election_tick - 1}), got "
                f"{self.lease_ticks}: the lease must expire before followers may elect another leader"
            )
        for name in ("max_msg_bytes", "max_msg_entries", "max_inflight_msgs", "max_committed_bytes_per_ready"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "max_inflight_bytes", "max_uncommitted_bytes", "max_cache_bytes", "learner_snapshot_bytes", "quiesce_ticks"
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (no cap) or positive, got {getattr(self, name)}")

    @property
    def effective_lease_ticks(self) -> int:
        """The lease length in ticks actually used (``lease_ticks`` or its default)."""
        if self.lease_ticks is not None:
            return self.lease_ticks
        return max(1, self.election_tick - 2)
