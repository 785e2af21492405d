"""ReadyPlan: what a driver does with one ``Ready``, in the order it does it, decided once for every driver.

This module owns the driver contract of ``borough.raft.rawnode`` as data: which of a Ready's messages may leave
before its writes are persisted (a leader's appends and heartbeats, §10.2.1 of Ongaro's thesis, when
``rd.appends_first`` is set and the driver honours it), which must wait for them, which ask for a snapshot
stream, and what to apply. It is pure: it must not know how a driver
writes (plyvel, memory), sends (sockets, a simulated network), syncs, applies or waits (trio, clocks). The
replica and the test harness carry out the same plan, so the order the tests check is the order that runs.

A driver carries the fields out top to bottom::

    send plan.send_before                          # may leave before the write (nothing is stepped meanwhile)
    install plan.install; persist plan.entries, plan.hard_state, plan.compaction   # one batch
    sync when plan.must_sync
    send plan.send_after; stream plan.stream_snapshots (the applied state, see ``RawNode.snapshot_meta_at``)
    apply plan.apply (then settle waiting proposals by what was applied or installed);
    serve plan.read_states, retry plan.failed_reads
    node.advance(rd)
"""

from __future__ import annotations

import attrs

from borough.raft.messages import AppendRequest, Heartbeat, InstallSnapshot, Message
from borough.raft.rawnode import Ready, SoftState
from borough.raft.readonly import ReadState
from borough.raft.records import Entry, HardState, SnapshotMeta

__all__ = ["ReadyPlan", "plan_ready"]

#: What a leader may send before its Ready is durable.
_EARLY = (AppendRequest, Heartbeat)


@attrs.frozen(kw_only=True, slots=True)
class ReadyPlan:
    """One Ready as steps, in the order a driver carries them out (see the module docstring). Which waiting
    proposals it decides is the driver's rule (``borough.node.waiters.Proposals.settle``): it needs both
    ``apply`` and ``install``, and for a snapshot the answer may be "unknown"."""

    install: SnapshotMeta | None
    entries: tuple[Entry, ...]
    hard_state: HardState | None
    compaction: SnapshotMeta | None
    must_sync: bool
    send_before: tuple[Message, ...]
    send_after: tuple[Message, ...]
    stream_snapshots: tuple[InstallSnapshot, ...]
    apply: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]
    failed_reads: tuple[bytes, ...]
    soft_state: SoftState | None

    @property
    def persists(self) -> bool:
        """Whether there is anything to write (a snapshot to install, entries, a hard state or a compaction)."""
        return (
            bool(self.entries) or self.install is not None or self.hard_state is not None or self.compaction is not None
        )


def plan_ready(rd: Ready, *, appends_first: bool = True) -> ReadyPlan:
    """The plan for ``rd``. With ``appends_first`` (and ``rd.appends_first``, and something to persist), the
    AppendRequest and Heartbeat messages go in ``send_before``; otherwise every message other than an
    InstallSnapshot goes in ``send_after``, in its original order. ``rd`` is not modified."""
    persists = bool(rd.entries) or rd.snapshot is not None or rd.hard_state is not None or rd.compaction is not None
    early = appends_first and rd.appends_first and persists
    before: list[Message] = []
    after: list[Message] = []
    streams: list[InstallSnapshot] = []
    for m in rd.messages:
        if isinstance(m, InstallSnapshot):
            streams.append(m)
        elif early and isinstance(m, _EARLY):
            before.append(m)
        else:
            after.append(m)
    return ReadyPlan(
        install=rd.snapshot,
        entries=tuple(rd.entries),
        hard_state=rd.hard_state,
        compaction=rd.compaction,
        must_sync=rd.must_sync,
        send_before=tuple(before),
        send_after=tuple(after),
        stream_snapshots=tuple(streams),
        apply=tuple(rd.committed_entries),
        read_states=tuple(rd.read_states),
        failed_reads=tuple(rd.failed_reads),
        soft_state=rd.soft_state,
    )
