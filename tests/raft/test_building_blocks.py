"""Unit tests of the Raft core's building blocks: quorum math, conf-change transitions, progress and in-flight
windows, the log with its unstable tail, the in-memory storage, and the configuration checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from borough.errors import ConfigError
from borough.raft.conf_history import ConfHistory
from borough.raft.confchange import (
    ChangeType,
    ConfChange,
    ConfChangeSingle,
    InvalidConfChange,
    Transition,
    apply_conf_change,
    decode_conf_change,
    encode_conf_change,
)
from borough.raft.config import RaftConfig
from borough.raft.log import RaftLog, limit_size
from borough.raft.memory_storage import MemoryLogStorage
from borough.raft.progress import Inflights, Progress, ProgressState
from borough.raft.quorum import VoteResult, committed_index, joint_committed_index, joint_vote_result, vote_result
from borough.raft.records import ConfState, Entry, NodeId, SnapshotMeta
from borough.raft.storage import LogCompacted, LogUnavailable

from .helpers import ents

ids = [NodeId(x) for x in "abcdefg"]


# --- quorum -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acked", "expected"),
    [
        ({"a": 5}, 5),
        ({"a": 5, "b": 3}, 3),
        ({"a": 5, "b": 3, "c": 4}, 4),
        ({"a": 5, "b": 3, "c": 4, "d": 1}, 3),
        ({"a": 5, "b": 3, "c": 4, "d": 1, "e": 9}, 4),
        ({"a": 5}, 0),  # with c, d missing below: only one of three
    ],
)
def test_committed_index_is_the_highest_index_a_majority_holds(acked: dict[str, int], expected: int) -> None:
    voters = list(acked) if expected else ["a", "c", "d"]
    assert committed_index([NodeId(v) for v in voters], {NodeId(k): v for k, v in acked.items()}) == expected


@given(st.lists(st.integers(0, 100), min_size=1, max_size=7))
def test_committed_index_matches_the_definition(values: list[int]) -> None:
    voters = ids[: len(values)]
    acked = dict(zip(voters, values, strict=True))
    got = committed_index(voters, acked)
    # The largest i such that a majority has acked >= i.
    assert sum(v >= got for v in values) > len(values) // 2
    assert not any(sum(v >= i for v in values) > len(values) // 2 for i in range(got + 1, 101))


def test_joint_commit_needs_both_halves() -> None:
    acked = {NodeId("a"): 9, NodeId("b"): 9, NodeId("c"): 1, NodeId("d"): 1}
    assert joint_committed_index(ids[:3], [], acked) == 9
    assert joint_committed_index([NodeId(x) for x in "acd"], ids[:3], acked) == 1
    assert joint_committed_index([], [], acked) == 0


def test_vote_results() -> None:
    abc = ids[:3]
    a, b, c = abc
    assert vote_result(abc, {a: True}) is VoteResult.PENDING
    assert vote_result(abc, {a: True, b: True}) is VoteResult.WON
    assert vote_result(abc, {a: True, b: False, c: False}) is VoteResult.LOST
    assert vote_result([], {}) is VoteResult.WON
    # Joint: lost as soon as one half is lost, won only when both are won.
    assert joint_vote_result(abc, [a], {a: True, b: True}) is VoteResult.WON
    assert joint_vote_result(abc, [c], {a: True, b: True}) is VoteResult.PENDING
    assert joint_vote_result(abc, [c], {a: True, b: True, c: False}) is VoteResult.LOST


# --- conf changes ---------------------------------------------------------------------------------------------


def cc(*changes: str, transition: Transition = Transition.AUTO) -> ConfChange:
    kinds = {"v": ChangeType.ADD_VOTER, "l": ChangeType.ADD_LEARNER, "r": ChangeType.REMOVE_NODE}
    return ConfChange(
        changes=[ConfChangeSingle(type=kinds[c[0]], node=NodeId(c[1:])) for c in changes], transition=transition
    )


def test_a_single_voter_change_is_applied_directly() -> None:
    cs = ConfState(voters=["1", "2", "3"])
    assert apply_conf_change(cs, cc("v4")) == ConfState(
        voters=["1", "2", "3", "4"], incarnations={"4": 1}, next_incarnation=2
    )
    assert apply_conf_change(cs, cc("r3")) == ConfState(voters=["1", "2"])
    assert apply_conf_change(cs, cc("l3")) == ConfState(voters=["1", "2"], learners=["3"])
    assert apply_conf_change(cs, cc("l4", "l5")) == ConfState(
        voters=["1", "2", "3"], learners=["4", "5"], incarnations={"4": 1, "5": 2}, next_incarnation=3
    )


def test_a_node_added_back_after_its_removal_is_a_new_incarnation() -> None:
    cs = ConfState(voters=["1", "2", "3"])
    added = apply_conf_change(cs, cc("l4"))
    assert added.incarnation("4") == 1 and added.incarnation("1") == 0
    promoted = apply_conf_change(added, cc("v4"))
    assert promoted.incarnation("4") == 1  # a member keeps its incarnation through role changes
    removed = apply_conf_change(promoted, cc("r4"))
    assert removed.incarnation("4") == 0 and removed.incarnations == () and removed.next_incarnation == 2
    again = apply_conf_change(removed, cc("l4"))
    assert again.incarnation("4") == 2
    swapped = apply_conf_change(apply_conf_change(again, cc("v4", "r3")), ConfChange.leave_joint())
    assert swapped.voters == ("1", "2", "4") and swapped.incarnation("4") == 2 and swapped.incarnation("3") == 0
    # The incarnation fields survive encoding; a configuration without them keeps the five-field form.
    assert ConfState.from_list(swapped.to_list()) == swapped
    assert len(cs.to_list()) == 5 and len(swapped.to_list()) == 7


def test_several_voter_changes_go_through_a_joint_configuration() -> None:
    cs = ConfState(voters=["1", "2", "3"], learners=["4"])
    joint = apply_conf_change(cs, cc("v4", "l3"))
    assert joint == ConfState(
        voters=["1", "2", "4"], voters_outgoing=["1", "2", "3"], learners_next=["3"], auto_leave=True
    )
    assert apply_conf_change(joint, ConfChange.leave_joint()) == ConfState(voters=["1", "2", "4"], learners=["3"])
    explicit = apply_conf_change(cs, cc("v4", transition=Transition.JOINT_EXPLICIT))
    assert explicit.joint and not explicit.auto_leave


@pytest.mark.parametrize(
    ("cs", "change", "complaint"),
    [
        (ConfState(voters=["1"]), cc("r1"), "every voter"),
        (ConfState(voters=["1"]), ConfChange.leave_joint(), "not joint"),
        (ConfState(voters=["1", "2"], voters_outgoing=["1"]), cc("v3"), "joint configuration is in effect"),
        (ConfState(voters=["1"]), cc("v"), "invalid node id"),
    ],
)
def test_invalid_changes_are_refused(cs: ConfState, change: ConfChange, complaint: str) -> None:
    with pytest.raises(InvalidConfChange, match=complaint):
        apply_conf_change(cs, change)


def test_conf_change_entries_carry_the_change_and_its_result() -> None:
    change = cc("v4", "r1", transition=Transition.JOINT_EXPLICIT)
    result = apply_conf_change(ConfState(voters=["1", "2", "3"]), change)
    assert decode_conf_change(encode_conf_change(change, result)) == (change, result)
    for bad in [b"", b"\xff", b"\x80", b"\x83\x80\x00\x80"]:
        with pytest.raises(ValueError):
            decode_conf_change(bad)


def test_conf_history_follows_appends_truncations_and_compactions() -> None:
    base = ConfState(voters=["1"])
    two = ConfState(voters=["1", "2"])
    three = ConfState(voters=["1", "2", "3"])
    h = ConfHistory(0, base)
    h.append(3, two)
    h.append(7, three)
    assert [h.at(i) for i in (0, 2, 3, 6, 7, 99)] == [base, base, two, two, three, three]
    assert h.truncate_from(7) and h.current == two
    assert not h.truncate_from(9)
    h.compact_to(5)
    assert (h.base_index, h.base, h.current) == (5, two, two)
    with pytest.raises(ValueError):
        h.at(4)


# --- progress -------------------------------------------------------------------------------------------------


def test_inflights_pause_when_full_and_free_in_order() -> None:
    inf = Inflights(max_count=3, max_bytes=100)
    for last in (5, 7, 9):
        inf.add(last, 10)
    assert inf.full()
    inf.free_le(6)
    assert len(inf) == 2 and inf.bytes == 20 and not inf.full()
    inf.add(12, 90)
    assert inf.full()  # by bytes
    inf.free_le(100)
    assert len(inf) == 0 and inf.bytes == 0


def test_progress_probe_then_replicate_then_snapshot() -> None:
    pr = Progress(match=0, next=6, inflights=Inflights(2))
    pr.sent_entries(7, 2, 0)
    assert pr.is_paused() and pr.next == 6  # a probe waits for its answer
    assert not pr.maybe_decrease_to(rejected=3, match_hint=1)  # not the probe we sent: stale
    assert pr.maybe_decrease_to(rejected=5, match_hint=2) and pr.next == 3 and not pr.is_paused()
    assert pr.maybe_update(4) and pr.match == 4 and pr.next == 5
    pr.become_replicate()
    pr.sent_entries(6, 2, 0)
    pr.sent_entries(8, 2, 0)
    assert pr.next == 9 and pr.is_paused()  # window of 2 full
    assert not pr.maybe_decrease_to(rejected=4, match_hint=0)  # at or below match: stale
    assert pr.maybe_decrease_to(rejected=6, match_hint=0) and pr.next == 5
    pr.become_snapshot(20)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.state is ProgressState.PROBE and pr.next == 21


def test_progress_slow_appends_are_not_taken_for_lost() -> None:
    """Appends are resent only when a heartbeat sent after them is answered first (the link is ordered, so
    their answers would have come before it): a follower slow to persist a large catch-up is not sent it twice."""
    pr = Progress(match=4, next=5, inflights=Inflights(8))
    pr.become_replicate()
    pr.heartbeat_sent(1)  # nothing outstanding: no check
    pr.sent_entries(6, 2, 0)
    assert not pr.heartbeat_answered(1)  # the answer to a heartbeat sent before the appends says nothing
    pr.heartbeat_sent(2)
    pr.sent_entries(8, 2, 0)
    pr.heartbeat_sent(3)  # the check armed at round 2 stays (a stream of appends cannot postpone it)
    assert pr.maybe_update(6)  # the first append was answered before round 2's response
    pr.inflights.free_le(6)
    assert not pr.heartbeat_answered(2)  # everything sent before round 2 is acknowledged: nothing lost
    pr.heartbeat_sent(4)
    assert pr.heartbeat_answered(4)  # entries 7-8, sent before round 4, were never acknowledged: lost

    probe = Progress(match=0, next=3, inflights=Inflights(8))
    probe.heartbeat_sent(1)
    probe.sent_entries(4, 2, 0)
    assert probe.is_paused() and not probe.heartbeat_answered(1) and probe.is_paused()  # sent after round 1
    probe.heartbeat_sent(2)
    assert probe.heartbeat_answered(2) and not probe.is_paused()  # round 2 answered first: the probe was lost


# --- the log --------------------------------------------------------------------------------------------------


def storage_with(terms: list[int], snapshot_index: int = 0, snapshot_term: int = 0) -> MemoryLogStorage:
    st_ = MemoryLogStorage(snapshot=SnapshotMeta(index=snapshot_index, term=snapshot_term))
    st_.append(ents(*terms, start=snapshot_index + 1))
    return st_


def test_log_reads_span_storage_and_the_unstable_tail() -> None:
    log = RaftLog(storage_with([1, 1], snapshot_index=3, snapshot_term=1))
    assert (log.first_index(), log.last_index()) == (4, 5)
    log.append(ents(2, 2, start=6))
    assert log.last_index() == 7 and [log.term(i) for i in range(3, 8)] == [1, 1, 1, 2, 2]
    assert [e.index for e in log.slice(4, 8, 1 << 20)] == [4, 5, 6, 7]
    assert [e.index for e in log.slice(4, 8, 1)] == [4]  # at least one entry
    with pytest.raises(LogCompacted):
        log.term(2)
    with pytest.raises(LogUnavailable):
        log.term(8)
    with pytest.raises(LogCompacted):
        log.slice(3, 5, 1 << 20)


def test_log_truncates_a_conflicting_suffix_and_hands_the_rewrite_out_again() -> None:
    log = RaftLog(storage_with([1, 1, 1]))
    log.append(ents(2, 2, start=4))
    handed, _ = log.hand_out()
    assert [e.index for e in handed] == [4, 5]
    # Before the driver persisted them, a newer leader replaces index 3 onwards (3 is in storage).
    assert log.find_conflict(ents(3, 3, start=3)) == 3
    log.append(ents(3, 3, start=3))
    assert [(e.index, e.term) for e in log.hand_out()[0]] == [(3, 3), (4, 3)]
    log.stable_to(5, 2)  # the first Ready's persistence finished: it is stale and ignored
    assert log.offset == 3
    log.stable_to(4, 3)
    assert log.offset == 5 and log.unstable == []


class CountingStorage(MemoryLogStorage):
    """Counts the reads that reach storage."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        self.reads += 1
        return super().entries(lo, hi, max_bytes)

    def term(self, index: int) -> int:
        self.reads += 1
        return super().term(index)


def persist(log: RaftLog, storage: MemoryLogStorage) -> None:
    """What a driver does with a Ready's entries."""
    handed, _ = log.hand_out()
    if handed:
        storage.append(handed)
        log.stable_to(handed[-1].index, handed[-1].term)


def test_persisted_entries_are_applied_from_memory_until_applied() -> None:
    storage = CountingStorage()
    log = RaftLog(storage)
    log.append(ents(1, 1, 1, 2, 2))
    persist(log, storage)
    assert log.offset == 6 and [e.index for e in log.cache] == [1, 2, 3, 4, 5]
    log.commit_to(4)
    assert [e.index for e in log.next_committed(1 << 20)] == [1, 2, 3, 4]
    assert [log.term(i) for i in range(1, 6)] == [1, 1, 1, 2, 2]
    assert storage.reads == 0
    log.applied = 4
    log.trim_cache()
    assert [e.index for e in log.cache] == [5] and log.cache_bytes == len(log.cache[0].data) + 24
    assert [e.index for e in log.slice(2, 6, 1 << 20)] == [2, 3, 4, 5]  # below the cache: from storage
    assert storage.reads == 1


def test_a_rewrite_or_a_snapshot_drops_what_the_cache_holds_of_the_old_log() -> None:
    storage = CountingStorage()
    log = RaftLog(storage)
    log.append(ents(1, 1, 1, 1))
    persist(log, storage)
    log.append(ents(3, 3, start=3))  # a newer leader replaces 3 and 4, which are only in storage and cache
    assert [e.index for e in log.cache] == [1, 2]
    assert [(e.index, e.term) for e in log.slice(1, 5, 1 << 20)] == [(1, 1), (2, 1), (3, 3), (4, 3)]
    persist(log, storage)
    assert [(e.index, e.term) for e in log.cache] == [(1, 1), (2, 1), (3, 3), (4, 3)]
    log.restore(SnapshotMeta(index=9, term=4))
    assert log.cache == [] and log.cache_bytes == 0
    assert storage.reads == 0


def test_the_cache_is_bounded_in_bytes() -> None:
    storage = CountingStorage()
    log = RaftLog(storage, cache_limit=100)
    big = [Entry(term=1, index=i, data=b"x" * 40) for i in range(1, 6)]  # 64 bytes each
    log.append(big)
    persist(log, storage)
    assert [e.index for e in log.cache] == [5] and log.cache_bytes == 64
    assert [e.index for e in log.slice(1, 6, 1 << 20)] == [1, 2, 3, 4, 5]
    off = RaftLog(CountingStorage(), cache_limit=0)
    off.append(big)
    persist(off, off.storage)
    assert off.cache == []


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(0, 6), st.integers(1, 4)),
            st.tuples(st.just("persist"), st.just(0), st.just(0)),
            st.tuples(st.just("commit"), st.integers(0, 6), st.just(0)),
            st.tuples(st.just("apply"), st.just(0), st.just(0)),
        ),
        max_size=40,
    ),
    st.integers(0, 300),
)
def test_a_cached_log_reads_exactly_as_an_uncached_one(ops: list[tuple[str, int, int]], limit: int) -> None:
    logs = [RaftLog(MemoryLogStorage(), cache_limit=limit), RaftLog(MemoryLogStorage(), cache_limit=0)]
    term = 1
    for op, a, b in ops:
        ref = logs[1]
        if op == "append":
            # Rewrite from somewhere above the commit index, with a newer term (as a new leader would).
            start = max(ref.committed + 1, ref.last_index() + 1 - a)
            term += 1
            new = [Entry(term=term, index=start + i, data=b"d" * (10 * i)) for i in range(b)]
            for log in logs:
                log.append(new)
        elif op == "persist":
            for log in logs:
                persist(log, log.storage)  # type: ignore[arg-type]
        elif op == "commit":
            for log in logs:
                log.commit_to(min(log.last_index(), log.committed + a))
        else:
            for log in logs:
                committed = log.next_committed(1 << 20)
                if committed:
                    log.applying = log.applied = committed[-1].index
                    log.trim_cache()
        for log in logs[:1]:
            assert all(e.index > log.applied for e in log.cache)
            assert log.cache_bytes == sum(len(e.data) + 24 for e in log.cache) <= max(limit, 0) or not log.cache
        last = ref.last_index()
        assert logs[0].last_index() == last
        assert [logs[0].term(i) for i in range(1, last + 1)] == [ref.term(i) for i in range(1, last + 1)]
        for lo in range(1, last + 1):
            assert logs[0].slice(lo, last + 1, 1 << 20) == ref.slice(lo, last + 1, 1 << 20)


def test_find_conflict_by_term_skips_whole_terms() -> None:
    log = RaftLog(storage_with([1, 1, 1, 4, 4, 5, 5, 6, 6, 6]))
    assert log.find_conflict_by_term(10, 3) == (3, 1)
    assert log.find_conflict_by_term(10, 5) == (7, 5)
    assert log.find_conflict_by_term(10, 6) == (10, 6)
    assert log.find_conflict_by_term(99, 0) == (0, 0)


def test_up_to_date_compares_last_term_then_index() -> None:
    log = RaftLog(storage_with([1, 2, 2]))
    assert log.is_up_to_date(3, 2) and log.is_up_to_date(9, 2) and log.is_up_to_date(1, 3)
    assert not log.is_up_to_date(2, 2) and not log.is_up_to_date(9, 1)


def test_committing_beyond_the_log_or_overwriting_committed_entries_is_a_bug() -> None:
    log = RaftLog(storage_with([1, 1]))
    log.commit_to(2)
    with pytest.raises(AssertionError):
        log.commit_to(3)
    with pytest.raises(AssertionError):
        log.append(ents(2, start=2))


def test_limit_size_keeps_at_least_one_entry() -> None:
    es = [Entry(term=1, index=i, data=b"x" * 10) for i in range(1, 5)]
    assert len(limit_size(es, 0)) == 1
    assert len(limit_size(es, 68)) == 2
    assert len(limit_size(es, 1 << 20)) == 4


# --- the in-memory storage ------------------------------------------------------------------------------------


def test_memory_storage_appends_truncates_compacts_and_installs() -> None:
    s = storage_with([1, 1, 1])
    s.append(ents(2, 2, start=3))
    assert [e.term for e in s.ents] == [1, 1, 2, 2]
    s.compact(SnapshotMeta(index=2, term=1))
    assert (s.first_index(), s.last_index(), s.term(2)) == (3, 4, 1)
    with pytest.raises(LogCompacted):
        s.entries(2, 4, 100)
    with pytest.raises(LogUnavailable):
        s.entries(3, 6, 100)
    s.apply_snapshot(SnapshotMeta(index=10, term=3))
    assert (s.first_index(), s.last_index(), s.ents) == (11, 10, [])
    clone = s.clone()
    clone.append(ents(3, start=11))
    assert s.last_index() == 10  # clones share nothing mutable


# --- configuration ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": ""},
        {"election_tick": 1},
        {"heartbeat_tick": 0},
        {"heartbeat_tick": 10},
        {"read_only": "fast"},
        {"read_only": "lease", "check_quorum": False},
        {"lease_ticks": 10},
        {"lease_ticks": 0},
        {"max_msg_bytes": 0},
        {"max_inflight_msgs": 0},
        {"max_uncommitted_bytes": -1},
    ],
)
def test_bad_configurations_are_refused(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"id": NodeId("1"), **kwargs}
    with pytest.raises(ConfigError):
        RaftConfig(**args)  # type: ignore[arg-type]


def test_the_default_lease_is_shorter_than_the_election_timeout() -> None:
    assert RaftConfig(id=NodeId("1")).effective_lease_ticks == 8
    assert RaftConfig(id=NodeId("1"), election_tick=2, heartbeat_tick=1).effective_lease_ticks == 1


# --- reads ----------------------------------------------------------------------------------------------------


def test_read_rounds_confirm_reads_in_order_and_extend_the_lease_from_their_send_time() -> None:
    from borough.raft.readonly import ReadOnly

    ro = ReadOnly()
    ro.add(5, b"a", None, tick=1)  # waits for round 1
    assert ro.want_round
    assert ro.next_round(tick=2, lease_ticks=8) == 1
    ro.add(6, b"b", NodeId("f"), tick=3)  # waits for round 2
    assert ro.next_round(tick=4, lease_ticks=8) == 2
    assert [r.context for r in ro.quorum_acked(1, lease_ticks=8)] == [b"a"]
    assert ro.lease_until == 2 + 8
    assert ro.quorum_acked(1, lease_ticks=8) == []  # duplicate acknowledgements change nothing
    assert [r.context for r in ro.quorum_acked(2, lease_ticks=8)] == [b"b"]
    assert ro.lease_until == 4 + 8


def test_unacknowledged_read_rounds_do_not_pile_up() -> None:
    from borough.raft.readonly import ReadOnly

    ro = ReadOnly()
    for tick in range(10_000):
        ro.next_round(tick, lease_ticks=8)
    assert len(ro.round_ticks) <= 8
    assert ro.quorum_acked(ro.seq - 20, lease_ticks=8) == [] and ro.lease_until == 0  # too old to give a lease
