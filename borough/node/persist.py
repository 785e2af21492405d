"""What one Ready writes: its log, Raft state and applied state machine ops, as one batch; and when to compact.

This module owns turning a Ready's plan into the single write batch the group commit makes durable (a staged
snapshot's data, new entries, the hard state, a compaction, and the key/value ops of the entries it applies, with
the applied index, so a restart resumes exactly), the replica's counters, and the rule for when a replica
compacts its log. It does not write, sync or send anything itself.
"""

from __future__ import annotations

from typing import Any

import attrs

from borough.node.staging import SnapshotStaging
from borough.node.statemachine import StateMachine
from borough.raft.rawnode import Ready
from borough.raft.ready_plan import ReadyPlan
from borough.store.base import Store
from borough.store.batch import WriteBatch

__all__ = ["ReplicaStats", "Turn", "compaction_target", "ready_batch"]


@attrs.define
class ReplicaStats:
    """Counters for status pages and benchmarks: Readies handled, entries persisted and applied."""

    readies: int = 0
    entries_persisted: int = 0
    entries_applied: int = 0

    def count(self, plan: ReadyPlan) -> None:
        self.readies += 1
        self.entries_persisted += len(plan.entries)
        self.entries_applied += len(plan.apply)


class Turn:
    """A replica's Ready prepared in a round (``borough.node.rounds``): the batch that persists and applies it
    (None: nothing to write), whether that must be synced, and what ``Replica.finish`` needs afterwards."""

    __slots__ = ("answered", "batch", "plan", "rd", "results", "sync")

    def __init__(
        self,
        rd: Ready,
        plan: ReadyPlan,
        results: dict[int, Any],
        batch: WriteBatch | None,
        sync: bool,
        answered: bool = False,
    ):
        self.rd = rd
        self.plan = plan
        self.results = results
        self.batch = batch
        self.sync = sync
        #: The callers of the entries it applies were answered as it was prepared (its unsynced batch is written
        #: in the same step: ``Rounds.writes_at_once``).
        self.answered = answered


def ready_batch(
    store: Store,
    partition: str,
    plan: ReadyPlan,
    staging: SnapshotStaging,
    machine: StateMachine,
    applied: tuple[list[Any], dict[int, Any]] | None = None,
) -> tuple[WriteBatch, dict[int, Any]]:
    """The batch that persists and applies ``plan``, and the state machine's result of each applied entry.
    ``applied``: what ``machine.apply(plan.apply)`` returned, when the caller applied the entries already."""
    batch = store.write_batch()
    staging.settle(batch, plan.install)
    if plan.entries:
        batch.append(partition, plan.entries)
    if plan.hard_state is not None:
        batch.set_hard_state(partition, plan.hard_state)
    if plan.compaction is not None:
        batch.set_snapshot_meta(partition, plan.compaction)
        batch.compact(partition, plan.compaction.index)
    results: dict[int, Any] = {}
    if plan.apply:
        ops, results = machine.apply(plan.apply) if applied is None else applied
        # The session records of these entries go in the same batch: durable together, or not at all.
        batch.apply(partition, ops, plan.apply[-1].index, machine.record_changes())
    return batch, results


def compaction_target(applied: int, first: int, every: int) -> int | None:
    """The index to compact the log to once ``every`` entries are applied past its first one (None: not yet).
    Half a window of log stays behind the applied index, so a follower that lags a little catches up from the
    log instead of needing a whole snapshot."""
    if every <= 0 or applied - first + 1 < every:
        return None
    target = applied - every // 2
    return target if target >= first else None
