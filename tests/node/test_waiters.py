"""The waiters a replica keeps: which proposals a Ready decides, and how (applied, provably lost, or unknown).

The rule is ``Proposals.settle``: log terms never decrease along the log, so an entry of term T at index I
rules out every proposal of an older term after I; a snapshot hides which entries it holds, so a proposal it
may contain is "unknown", never "lost" (routing would send a lost one again, and apply it twice).
"""

from __future__ import annotations

from typing import Any

import pytest

from borough.errors import BoroughError, NotLeader, Unavailable
from borough.node.waiters import Proposals, Reads, Waiter
from borough.raft.rawnode import Ready
from borough.raft.readonly import ReadState
from borough.raft.ready_plan import plan_ready
from borough.raft.records import ConfState, Entry, SnapshotMeta

LOST = NotLeader("p")
UNKNOWN = Unavailable("unknown")


def outcome(waiter: Waiter) -> Any:
    if not waiter.settled:
        return "pending"
    if waiter.error is LOST:
        return "lost"
    if waiter.error is UNKNOWN:
        return "unknown"
    assert waiter.error is None
    return ("ok", waiter.result)


def proposals(*at: tuple[int, int]) -> tuple[Proposals, list[Waiter]]:
    props = Proposals()
    waiters = []
    for index, term in at:
        waiter = props.queue(b"x")
        props.take()
        props.proposed(index, term, waiter)
        waiters.append(waiter)
    return props, waiters


def settle(props: Proposals, rd: Ready, results: dict[int, Any] | None = None) -> None:
    props.settle(plan_ready(rd), results or {}, lost=lambda: LOST, unknown=lambda: UNKNOWN)


def test_an_applied_proposal_succeeds_with_its_result() -> None:
    props, (w,) = proposals((5, 2))
    settle(props, Ready(committed_entries=[Entry(term=2, index=5)]), {5: "r"})
    assert outcome(w) == ("ok", "r")
    assert not props.by_index


def test_another_entry_at_its_index_means_lost() -> None:
    props, (w,) = proposals((5, 2))
    settle(props, Ready(committed_entries=[Entry(term=3, index=5)]))
    assert outcome(w) == "lost"


def test_beyond_the_last_applied_entry_only_an_older_term_is_lost() -> None:
    props, (older, same) = proposals((7, 1), (8, 2))
    settle(props, Ready(committed_entries=[Entry(term=2, index=5)]))
    assert outcome(older) == "lost"  # every entry after 5 has a term of at least 2
    assert outcome(same) == "pending"  # may still commit


def test_a_snapshot_that_may_hold_a_proposal_makes_it_unknown_not_lost() -> None:
    # The next leader committed the old leader's entry (term 1, index 5), then compacted past it.
    props, (w,) = proposals((5, 1))
    settle(props, Ready(snapshot=SnapshotMeta(index=9, term=2, conf_state=ConfState(voters=("a",)))))
    assert outcome(w) == "unknown"


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ((9, 2), "unknown"),  # the snapshot's own last entry: held, but its result is not known here
        ((9, 1), "lost"),  # another term at the snapshot's index
        ((4, 3), "lost"),  # newer than the snapshot's term: cannot be at or below its index
        ((12, 1), "lost"),  # after the snapshot, an older term
        ((12, 2), "pending"),  # after the snapshot, may still commit
    ],
)
def test_snapshot_rules(at: tuple[int, int], expected: str) -> None:
    props, (w,) = proposals(at)
    settle(props, Ready(snapshot=SnapshotMeta(index=9, term=2, conf_state=ConfState(voters=("a",)))))
    assert outcome(w) == expected


def test_a_snapshot_and_entries_after_it_in_one_ready() -> None:
    props, (inside, applied, lost_after) = proposals((3, 1), (10, 2), (11, 1))
    meta = SnapshotMeta(index=9, term=2, conf_state=ConfState(voters=("a",)))
    settle(props, Ready(snapshot=meta, committed_entries=[Entry(term=2, index=10)]), {10: None})
    assert [outcome(w) for w in (inside, applied, lost_after)] == ["unknown", ("ok", None), "lost"]


def test_a_caller_that_gave_up_is_never_proposed() -> None:
    props = Proposals()
    waiter = props.queue(b"x")
    waiter.abandoned = True
    kept = props.queue(b"y")
    assert props.take() == [(b"y", kept)]


def test_fail_all_reaches_queued_and_proposed_waiters() -> None:
    props, (proposed,) = proposals((5, 1))
    queued = props.queue(b"q")
    error = BoroughError("stopped")
    props.fail_all(error)
    assert proposed.error is error and queued.error is error
    assert not props.by_index and not props.queued


# --- Reads: one ReadIndex round in flight at a time --------------------------------------------------------------


def _settled(waiter: Waiter) -> str:
    if not waiter.settled:
        return "waiting"
    return "failed" if waiter.error is not None else "served"


def test_reads_that_arrive_during_a_round_wait_for_it_and_then_share_the_next() -> None:
    woken: list[int] = []
    reads = Reads(wake=lambda: woken.append(1))
    rounds: list[bytes] = []
    first = [reads.queue() for _ in range(3)]
    reads.start_round(rounds.append)
    later = [reads.queue() for _ in range(5)]
    reads.start_round(rounds.append)  # a turn while the first round is in flight: no second round yet
    reads.start_round(rounds.append)
    assert len(rounds) == 1 and len(reads) == 5 and woken == []
    reads.confirmed([ReadState(index=7, context=rounds[0])], [], NotLeader("p"))
    assert woken == [1]  # the reads that waited ask for the turn that starts their round
    reads.start_round(rounds.append)
    assert len(rounds) == 2 and len(reads) == 0
    reads.serve(6)
    assert [_settled(w) for w in first + later] == ["waiting"] * 8
    reads.serve(7)
    assert [_settled(w) for w in first] == ["served"] * 3 and [_settled(w) for w in later] == ["waiting"] * 5
    reads.confirmed([ReadState(index=9, context=rounds[1])], [], NotLeader("p"))
    assert woken == [1]  # nothing waits for a round any more
    reads.serve(9)
    assert [_settled(w) for w in later] == ["served"] * 5


def test_a_failed_round_fails_its_reads_and_lets_the_waiting_ones_start_theirs() -> None:
    woken: list[int] = []
    reads = Reads(wake=lambda: woken.append(1))
    rounds: list[bytes] = []
    first = reads.queue()
    reads.start_round(rounds.append)
    second = reads.queue()
    reads.confirmed([], [rounds[0]], NotLeader("p"))
    assert _settled(first) == "failed" and isinstance(first.error, NotLeader)
    assert woken == [1] and _settled(second) == "waiting"
    reads.start_round(rounds.append)
    assert len(rounds) == 2


def test_a_round_the_core_refuses_at_once_fails_its_reads_and_blocks_none() -> None:
    reads = Reads()
    refused = reads.queue()

    def refuse(context: bytes) -> None:
        raise NotLeader("p")

    reads.start_round(refuse)
    assert _settled(refused) == "failed"
    rounds: list[bytes] = []
    reads.queue()
    reads.start_round(rounds.append)
    assert len(rounds) == 1
