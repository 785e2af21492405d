"""ReadyPlan: what a driver does with one ``Ready``, in the order it does it, decided once for every driver.

This module owns the driver contract of ``borough.raft.rawnode`` as data: which of a Ready's messages may leave
before its writes are persisted (a leader's appends and heartbeats, §10.2.1 of Ongaro's thesis, when
``rd.appends_first`` is set and the driver honours it), which must wait for them, which ask for a snapshot
stream, what to apply, and which waiting proposals the Ready settles. It is pure: it must not know how a driver
writes (plyvel, memory), sends (sockets, a simulated network), syncs, applies or waits (trio, clocks). The
replica and the test harness carry out the same plan, so the order the tests check is the order that runs.

A driver carries the fields out top to bottom::

    send plan.send_before                          # may leave before the write (nothing is stepped meanwhile)
    install plan.install; persist plan.entries, plan.hard_state, plan.compaction   # one batch
    sync when plan.must_sync
    send plan.send_after; stream plan.stream_snapshots (the applied state, see ``RawNode.snapshot_meta_at``)
    apply plan.apply; settle proposals by plan.settle; serve plan.read_states, retry plan.failed_reads
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
    """One Ready as steps, in the order a driver carries them out (see the module docstring).

    ``settle`` is the (index, term) of the newest entry this Ready makes applied: its last committed entry, or,
    when it has none and installs a snapshot, the snapshot's index and term. A proposal waiting at index ``i``
    with term ``t`` is then provably lost (it can never commit, so it may be failed and retried) when
    ``i <= index`` and (i, t) is not one of ``apply`` (another entry, or a snapshot, holds index ``i``), or when
    ``i > index`` and ``t < term``: log terms never decrease along the log, so every entry after one of ``term``
    has a term of at least ``term``.
    """

    install: SnapshotMeta | None
    entries: tuple[Entry, ...]
    hard_state: HardState | None
    compaction: SnapshotMeta | None
    must_sync: bool
    send_before: tuple[Message, ...]
    send_after: tuple[Message, ...]
    stream_snapshots: tuple[InstallSnapshot, ...]
    apply: tuple[Entry, ...]
    settle: tuple[int, int] | None
    read_states: tuple[ReadState, ...]
    failed_reads: tuple[bytes, ...]
    soft_state: SoftState | None

    @property
    def persists(self) -> bool:
        """Whether there is anything to write (a snapshot to install, entries, a hard state or a compaction)."""
        return bool(self.entries) or any(x is not None for x in (self.install, self.hard_state, self.compaction))


def plan_ready(rd: Ready, *, appends_first: bool = True) -> ReadyPlan:
    """The plan for ``rd``. With ``appends_first`` (and ``rd.appends_first``, and something to persist), the
    AppendRequest and Heartbeat messages go in ``send_before``; otherwise every message other than an
    InstallSnapshot goes in ``send_after``, in its original order. ``rd`` is not modified."""
    persists = bool(rd.entries) or any(x is not None for x in (rd.snapshot, rd.hard_state, rd.compaction))
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
    settle: tuple[int, int] | None = None
    if rd.committed_entries:
        last = rd.committed_entries[-1]
        settle = (last.index, last.term)
    elif rd.snapshot is not None:
        settle = (rd.snapshot.index, rd.snapshot.term)
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
        settle=settle,
        read_states=tuple(rd.read_states),
        failed_reads=tuple(rd.failed_reads),
        soft_state=rd.soft_state,
    )
