"""The RawNode driver contract: one Ready at a time, what must be synced, what survives a restart, how the
driver learns about compaction and snapshots, and misuse reported as clear errors."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import attrs
import pytest

from borough.errors import LocalProtocolError, NotLeader, RemoteProtocolError, StorageError
from borough.raft.confchange import ConfChange, Transition
from borough.raft.config import RaftConfig
from borough.raft.core import Role
from borough.raft.errors import ConfChangeInProgress, LeadershipTransferInProgress
from borough.raft.memory_storage import MemoryLogStorage
from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexResponse,
    VoteRequest,
    VoteResponse,
)
from borough.raft.rawnode import RawNode, Ready
from borough.raft.records import ConfState, HardState, NodeId, SnapshotMeta

from .helpers import Net, drain, ents, make_node, msgs

N1, N2, N3 = NodeId("1"), NodeId("2"), NodeId("3")


def single() -> RawNode:
    n = make_node("1", ("1",))
    n.campaign()
    drain(n)
    return n


def test_only_one_ready_is_outstanding_and_advance_takes_that_one() -> None:
    n = single()
    n.propose(b"x")
    rd = n.ready()
    assert not n.has_ready()
    with pytest.raises(LocalProtocolError):
        n.ready()
    with pytest.raises(LocalProtocolError):
        n.advance(type(rd)())
    n.storage.persist(rd)  # type: ignore[attr-defined]
    n.advance(rd)
    assert not n.has_ready()


def test_inputs_between_ready_and_advance_go_into_the_next_ready() -> None:
    n = single()
    n.propose(b"a")
    rd1 = n.ready()
    n.propose(b"b")  # while the driver persists rd1
    n.storage.persist(rd1)  # type: ignore[attr-defined]
    n.advance(rd1)
    rd2 = drain(n)
    assert [e.data for e in rd1.entries] == [b"a"] and [e.data for e in rd2.entries] == [b"b"]
    assert [e.data for e in rd2.committed_entries] == [b"b"]


def test_ready_lists_are_not_shared_with_the_core() -> None:
    n = single()
    n.propose(b"a")
    rd = n.ready()
    entries, messages = list(rd.entries), list(rd.messages)
    n.propose(b"b")
    n.tick()
    assert rd.entries == entries and rd.messages == messages


def test_must_sync_only_for_entries_term_vote_or_snapshot() -> None:
    n = make_node("2")
    n.step(AppendRequest(frm=N1, to=N2, term=1, prev_index=0, prev_term=0, commit=0, entries=ents(1, 1)))
    assert drain(n).must_sync  # new term and entries
    n.step(Heartbeat(frm=N1, to=N2, term=1, commit=2))
    rd = drain(n)
    assert rd.hard_state is not None and rd.hard_state.commit == 2 and not rd.must_sync  # commit only


def test_a_leaders_appends_may_go_first_unless_the_ready_carries_a_new_term_or_vote() -> None:
    single = make_node("1", ("1",), learners=("2",))
    single.campaign()  # a one-voter group wins at once: term, vote and the first appends share one Ready
    rd = drain(single)
    assert single.role is Role.LEADER and rd.hard_state is not None and rd.hard_state.term == 1
    assert any(isinstance(m, AppendRequest) for m in rd.messages) and not rd.appends_first
    net = Net(make_node(i) for i in ("1", "2", "3"))
    net.elect("1")
    net.nodes[N1].propose(b"x")
    rd = drain(net.nodes[N1])
    assert rd.entries and any(isinstance(m, AppendRequest) for m in rd.messages) and rd.appends_first
    follower = make_node("2")
    follower.step(AppendRequest(frm=N1, to=N2, term=1, prev_index=0, prev_term=0, commit=0, entries=ents(1)))
    rd = drain(follower)
    assert not rd.appends_first  # a follower's answers always wait for its sync


def _commits_in(rd: Ready) -> list[int]:
    return [m.commit for m in rd.messages if isinstance(m, AppendRequest)]


def test_a_one_voter_leaders_appends_wait_for_its_write_when_they_carry_its_unsynced_commit() -> None:
    # Its own match commits what it appends at once: its appends tell the learner to apply an entry that is
    # durable nowhere yet. Sent before the write, a crash would let the learner apply what the group loses.
    n = make_node("1", ("1",), learners=("2",))
    n.campaign()
    drain(n)
    n.step(AppendResponse(frm=N2, to=N1, term=1, index=1))
    drain(n)
    n.propose(b"x")
    rd = drain(n)
    assert [e.index for e in rd.entries] == [2] and rd.hard_state is not None and rd.hard_state.commit == 2
    assert _commits_in(rd) == [2] and not rd.appends_first
    # A heartbeat carries min(match, commit): only what the learner holds, which is durable here. May go first.
    n.tick()
    rd = drain(n)
    assert not rd.entries and [type(m) for m in rd.messages] == [Heartbeat]


def test_a_conf_change_between_has_ready_and_ready_does_not_hide_an_unsynced_commit() -> None:
    # has_ready() flushes: the one-voter leader commits x and queues its append (commit=2) to the learner. A
    # voter added before ready() makes the leader no longer a quorum by itself, but that append still carries
    # the commit of an unsynced entry: what counts is the commit index against this Ready's entries.
    n = make_node("1", ("1",), learners=("2",))
    n.campaign()
    drain(n)
    n.step(AppendResponse(frm=N2, to=N1, term=1, index=1))
    drain(n)
    n.propose(b"x")
    assert n.has_ready()
    n.propose_conf_change(ConfChange.add_voter("3"))
    rd = n.ready()
    assert n.status().conf_state.voters == (N1, N3)
    assert [e.index for e in rd.entries] == [2, 3] and 2 in _commits_in(rd)
    assert not rd.appends_first


def test_a_joint_configuration_with_one_half_just_the_leader_still_sends_its_appends_first() -> None:
    # Incoming (1) is the leader alone, outgoing (1,2) is not: a commit needs 2's answer, stepped after the
    # write, so the commit index in these appends never reaches an unsynced entry.
    net = Net(make_node(i, ("1", "2")) for i in ("1", "2"))
    net.elect("1")
    leader = net.nodes[N1]
    leader.propose_conf_change(ConfChange(changes=ConfChange.remove("2").changes, transition=Transition.JOINT_EXPLICIT))
    net.stabilize()
    assert leader.status().conf_state.voters == (N1,) and leader.status().conf_state.voters_outgoing == (N1, N2)
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries and rd.hard_state is None and rd.appends_first
    assert all(c < rd.entries[0].index for c in _commits_in(rd))
    leader.storage.persist(rd)  # type: ignore[attr-defined]
    leader.advance(rd)


def test_a_message_for_someone_else_is_refused() -> None:
    n = make_node("1")
    with pytest.raises(RemoteProtocolError, match="for '2' was delivered to '1'"):
        n.step(Heartbeat(frm=N3, to=N2, term=1))


def test_proposals_on_a_follower_name_the_leader() -> None:
    net = Net(make_node(i) for i in ("1", "2", "3"))
    net.elect("1")
    with pytest.raises(NotLeader) as err:
        net.nodes[N2].propose(b"x")
    assert err.value.leader == "1" and err.value.partition == "p"


def test_during_a_transfer_proposals_are_refused_with_the_target_as_hint() -> None:
    net = Net(make_node(i) for i in ("1", "2", "3"))
    net.elect("1")
    net.isolate("3")
    net.nodes[N1].propose(b"x")
    net.stabilize()
    net.nodes[N1].transfer_leadership("3")
    with pytest.raises(LeadershipTransferInProgress) as err:
        net.nodes[N1].propose(b"y")
    assert isinstance(err.value, NotLeader) and err.value.leader == "3"
    with pytest.raises(LeadershipTransferInProgress):
        net.nodes[N1].propose_conf_change(ConfChange.add_learner("4"))


def test_a_conf_change_waits_for_the_previous_one_to_be_applied() -> None:
    n = single()
    n.propose_conf_change(ConfChange.add_learner("2"))
    with pytest.raises(ConfChangeInProgress):
        n.propose_conf_change(ConfChange.add_learner("3"))
    drain(n)  # commits and applies it (single voter)
    n.propose_conf_change(ConfChange.add_learner("3"))


def test_restart_recovers_state_and_does_not_reapply() -> None:
    n = single()
    for d in (b"a", b"b"):
        n.propose(d)
    drain(n)
    storage = n.storage  # type: ignore[attr-defined]
    # The commit index was written without sync and lost; the application had applied 3.
    storage.hard_state = HardState(term=1, vote=N1, commit=1)
    again = RawNode(RaftConfig(id=N1), storage, random.Random(0), applied=3)
    st = again.status()
    assert (st.term, st.vote, st.commit, st.applied, st.role) == (1, N1, 3, 3, Role.FOLLOWER)
    assert not again.has_ready() or drain(again).committed_entries == []


def test_restart_refuses_a_log_that_lost_acknowledged_entries() -> None:
    storage = MemoryLogStorage(ConfState(voters=["1"]))
    storage.append(ents(1, 1))
    storage.hard_state = HardState(term=1, commit=5)
    with pytest.raises(StorageError, match="lost entries"):
        RawNode(RaftConfig(id=N1), storage, random.Random(0))


def test_compaction_is_handed_to_the_driver_with_the_configuration_at_that_index() -> None:
    n = single()
    n.propose_conf_change(ConfChange.add_learner("2"))
    n.propose(b"x")
    drain(n)
    with pytest.raises(LocalProtocolError, match="only 3 is applied"):
        n.compact(4)
    assert n.conf_state_at(1) == ConfState(voters=["1"])
    with_2 = ConfState(voters=["1"], learners=["2"], incarnations={"2": 1}, next_incarnation=2)
    assert n.conf_state_at(3) == with_2
    meta = n.compact(2)
    assert meta == SnapshotMeta(index=2, term=1, conf_state=with_2)
    assert n.compact(2) is None  # already pending
    rd = drain(n)
    assert rd.compaction == meta
    assert n.storage.first_index() == 3  # type: ignore[attr-defined]
    with pytest.raises(LocalProtocolError):
        n.conf_state_at(1)
    assert n.snapshot_meta_at(3).index == 3


def test_the_leader_asks_its_driver_to_stream_a_snapshot_and_waits_for_the_report() -> None:
    class Intercepting(Net):
        snaps: list[InstallSnapshot] = []

        def send(self, messages: Iterable[Message]) -> None:
            rest = []
            for m in messages:
                (self.snaps if isinstance(m, InstallSnapshot) else rest).append(m)  # type: ignore[arg-type]
            super().send(rest)

    nodes = [make_node(i) for i in ("1", "2", "3")]
    net = Intercepting(nodes)
    net.isolate("3")
    net.elect("1")
    leader = nodes[0]
    leader.propose(b"x")
    net.stabilize()
    leader.compact(leader.status().applied)
    net.stabilize()
    net.heal()
    for _ in range(2):  # two heartbeat answers without progress: probe, which needs the compacted entries
        leader.tick()
        net.stabilize()
    assert [(m.to, m.meta.index) for m in net.snaps] == [(N3, 2)]
    assert leader.status().progress[N3].state.value == "snapshot"
    leader.tick()
    net.stabilize()
    assert len(net.snaps) == 1  # no second stream while waiting for the report
    leader.report_snapshot("3", False)
    assert leader.status().progress[N3].state.value == "probe"
    leader.tick()
    net.stabilize()
    assert len(net.snaps) == 2  # retried after the next heartbeat answer


def test_a_replica_without_configuration_never_campaigns_but_follows_a_leader() -> None:
    n = make_node("4", ())
    for _ in range(100):
        n.tick()
    assert n.role is Role.FOLLOWER and msgs(n) == []
    n.step(Heartbeat(frm=N1, to=NodeId("4"), term=3, commit=0))
    assert n.leader == N1 and n.term == 3


def test_a_replica_created_again_after_its_data_was_deleted_keeps_its_vote_and_vouches_for_no_older_log() -> None:
    old = make_node("4", log=[1, 1, 2, 2], term=3, vote="2")
    tomb = old.tombstone()
    assert (tomb.term, tomb.vote, tomb.last_index, tomb.last_term) == (3, N2, 4, 2)
    # Its data is gone; the node creates it again, empty, for an inbound message.
    storage = MemoryLogStorage(ConfState())
    n = RawNode(RaftConfig(id=NodeId("4"), group="p"), storage, random.Random(1), tombstone=tomb)
    n.storage = storage  # type: ignore[attr-defined]  # for drain()
    assert (n.term, n.status().vote) == (3, N2)
    n.step(VoteRequest(frm=N1, to=NodeId("4"), term=3, last_index=9, last_term=3))
    assert [m.reject for m in msgs(n) if isinstance(m, VoteResponse)] == [True]  # its vote in term 3 is taken
    for pre in (True, False):
        # A lagging candidate whose stale configuration still counts this replica: behind the old log's end.
        n.step(VoteRequest(frm=N1, to=NodeId("4"), term=5, last_index=3, last_term=2, pre_vote=pre))
        assert [m.reject for m in msgs(n) if isinstance(m, VoteResponse)] == [True]
    n.step(VoteRequest(frm=N1, to=NodeId("4"), term=5, last_index=4, last_term=2))
    assert [m.reject for m in msgs(n) if isinstance(m, VoteResponse)] == [False]
    assert n.tombstone() == attrs.evolve(tomb, term=5, vote=N1)  # the floor outlives a second deletion
    fresh = make_node("4", ())  # never deleted: an empty replica may vote (a learner promoted unawares)
    fresh.step(VoteRequest(frm=N1, to=NodeId("4"), term=5, last_index=0, last_term=0))
    assert [m.reject for m in msgs(fresh) if isinstance(m, VoteResponse)] == [False]


def test_status_and_idleness() -> None:
    net = Net(make_node(i) for i in ("1", "2", "3"))
    net.elect("1")
    leader = net.nodes[N1]
    net.heartbeat("1")
    assert leader.is_idle()
    leader.propose(b"x")
    assert not leader.is_idle()
    net.stabilize()
    assert not leader.is_idle()  # the followers do not know the entry is committed yet
    net.heartbeat("1")
    assert leader.is_idle()
    st = leader.status()
    assert st.progress[N2].match == st.last_index == st.commit
    assert not st.progress[N2].learner
    leader.read_index(b"r")
    assert not leader.is_idle()


def test_in_lease_mode_a_restarted_replica_holds_its_vote_for_an_election_timeout() -> None:
    # It may have acknowledged a leader's lease just before it stopped: voting at once could let a new leader
    # commit writes while the old one still serves lease reads.
    n = make_node("2", read_only="lease")
    n.step(VoteRequest(frm=N3, to=N2, term=1, last_index=0, last_term=0))
    assert msgs(n) == [] and n.term == 0
    for _ in range(10):
        n.tick()
    n.step(VoteRequest(frm=N3, to=N2, term=1, last_index=0, last_term=0))
    assert [m.reject for m in msgs(n) if isinstance(m, VoteResponse)] == [False]
    safe = make_node("2")  # in safe mode there is no lease to protect: it votes at once
    safe.step(VoteRequest(frm=N3, to=N2, term=1, last_index=0, last_term=0))
    assert [m.reject for m in msgs(safe) if isinstance(m, VoteResponse)] == [False]


def test_in_lease_mode_campaign_is_refused_while_a_leader_was_heard_from_recently() -> None:
    n = make_node("2", read_only="lease")
    n.step(Heartbeat(frm=N1, to=N2, term=1, commit=0))
    n.campaign()
    assert n.role is Role.FOLLOWER
    for _ in range(10):
        n.tick()
    if n.role is Role.FOLLOWER:
        n.campaign()
    assert n.role is not Role.FOLLOWER


def test_a_new_groups_first_campaign_skips_pre_vote_only_at_term_0() -> None:
    fresh = make_node("1")
    fresh.campaign(first=True)
    requests = [m for m in msgs(fresh) if isinstance(m, VoteRequest)]
    assert [(m.to, m.term, m.pre_vote) for m in requests] == [(N2, 1, False), (N3, 1, False)]
    assert fresh.role is Role.CANDIDATE and fresh.term == 1
    later = make_node("1", term=3)  # it took part in elections before: a leader may sit, so pre-vote first
    later.campaign(first=True)
    assert {(m.term, m.pre_vote) for m in msgs(later) if isinstance(m, VoteRequest)} == {(4, True)}
    assert later.term == 3
    plain = make_node("1")  # without ``first``, as configured
    plain.campaign()
    assert {m.pre_vote for m in msgs(plain) if isinstance(m, VoteRequest)} == {True}


# --- targeted checks of behaviours the scenarios only touch in passing ------------------------------------------


def conf3() -> ConfState:
    return ConfState(voters=["1", "2", "3"])


def test_a_snapshot_that_does_not_move_the_replica_forward_is_refused() -> None:
    n = make_node("2", log=[1, 1, 1], term=1, commit=3)
    n.step(InstallSnapshot(frm=N1, to=N2, term=1, meta=SnapshotMeta(index=3, term=1, conf_state=conf3())))
    rd = drain(n)
    assert rd.snapshot is None
    assert [(m.index, m.reject) for m in rd.messages if isinstance(m, AppendResponse)] == [(3, False)]


def test_a_snapshot_of_entries_already_in_the_log_commits_them_instead_of_replacing_the_log() -> None:
    n = make_node("2", log=[1, 1, 1, 1], term=1, commit=1)
    n.step(InstallSnapshot(frm=N1, to=N2, term=1, meta=SnapshotMeta(index=3, term=1, conf_state=conf3())))
    rd = drain(n)
    assert rd.snapshot is None and n.status().commit == 3 and n.status().last_index == 4
    assert [m.index for m in rd.messages if isinstance(m, AppendResponse)] == [4]


def test_installing_a_snapshot_adopts_its_configuration_and_blocks_campaigns_until_installed() -> None:
    n = make_node("2", log=[1], term=1, commit=1)
    cs = ConfState(voters=["1", "2", "3", "4"], learners=["5"])
    n.step(InstallSnapshot(frm=N1, to=N2, term=1, meta=SnapshotMeta(index=9, term=1, conf_state=cs)))
    assert n.status().conf_state == cs and n.conf_state_at(9) == cs
    for _ in range(30):  # the snapshot is not installed yet (no Ready processed): no campaign meanwhile
        n.tick()
    assert n.role is Role.FOLLOWER
    rd = drain(n)
    assert rd.snapshot is not None and rd.snapshot.index == 9
    assert n.status().applied == 9 and n.status().commit == 9


def test_a_read_forwarded_to_a_leader_fails_when_the_leader_changes() -> None:
    n = make_node("2")
    n.step(Heartbeat(frm=N1, to=N2, term=1))
    n.read_index(b"r")
    assert [type(m).__name__ for m in msgs(n)] == ["HeartbeatResponse", "ReadIndexRequest"]
    n.step(Heartbeat(frm=N3, to=N2, term=2))
    assert drain(n).failed_reads == [b"r"]
    n.step(ReadIndexResponse(frm=N1, to=N2, term=2, index=5, context=b"r"))  # too late: ignored
    assert not n.has_ready() or drain(n).read_states == []


def test_a_read_is_confirmed_only_by_a_heartbeat_round_sent_after_it_arrived() -> None:
    net = Net(make_node(i) for i in ("1", "2", "3"))
    net.elect("1")
    leader = net.nodes[N1]
    leader.tick()
    [round1] = {m.seq for m in drain(leader).messages if isinstance(m, Heartbeat)}
    leader.read_index(b"r")
    rd = drain(leader)
    [round2] = {m.seq for m in rd.messages if isinstance(m, Heartbeat)}
    assert round2 > round1
    for f in (N2, N3):
        leader.step(HeartbeatResponse(frm=f, to=N1, term=1, seq=round1))
    assert not leader.has_ready() or drain(leader).read_states == []
    leader.step(HeartbeatResponse(frm=N2, to=N1, term=1, seq=round2))
    assert [rs.context for rs in drain(leader).read_states] == [b"r"]


def test_the_leader_uses_the_rejection_hint_term_to_skip_a_whole_term() -> None:
    # Leader log terms: [1 1 2 2 3 3 3]; the follower rejects prev=7 and hints (6, 2): it has term 2 at 6.
    # Everything of term 3 above the leader's last term-2 entry (4) is skipped: the next probe is at prev=4.
    leader = make_node("1", log=[1, 1, 2, 2, 3, 3, 3], term=3, pre_vote=False)
    leader.campaign()
    drain(leader)
    for v in (N2, N3):
        leader.step(VoteResponse(frm=v, to=N1, term=4))
    drain(leader)
    leader.step(AppendResponse(frm=N2, to=N1, term=4, index=7, reject=True, hint_index=6, hint_term=2))
    probes = [m for m in drain(leader).messages if isinstance(m, AppendRequest) and m.to == N2]
    assert [(m.prev_index, m.prev_term) for m in probes] == [(4, 2)]


def test_appends_from_the_leader_also_hold_off_vote_requests() -> None:
    n = make_node("2")
    n.step(AppendRequest(frm=N1, to=N2, term=1, prev_index=0, prev_term=0, commit=0, entries=ents(1)))
    for _ in range(9):
        n.tick()
        n.step(AppendRequest(frm=N1, to=N2, term=1, prev_index=1, prev_term=1, commit=1))
    for _ in range(5):
        n.tick()
    n.step(VoteRequest(frm=N3, to=N2, term=5, last_index=9, last_term=5))
    assert n.term == 1  # last heard from the leader 5 ticks ago: still in its lease


def test_a_persisted_ready_that_was_rewritten_meanwhile_does_not_mark_the_rewrite_stable() -> None:
    n = make_node("2", log=[1, 1, 1], term=2)
    n.step(AppendRequest(frm=N1, to=N2, term=2, prev_index=3, prev_term=1, commit=0, entries=ents(2, 2, start=4)))
    rd = n.ready()
    # While rd is being persisted, a leader of term 3 replaces index 4 and 5.
    n.step(AppendRequest(frm=N3, to=N2, term=3, prev_index=3, prev_term=1, commit=0, entries=ents(3, 3, start=4)))
    n.storage.persist(rd)  # type: ignore[attr-defined]
    n.advance(rd)
    rd2 = drain(n)
    assert [(e.index, e.term) for e in rd2.entries] == [(4, 3), (5, 3)]
    assert [e.term for e in n.storage.ents] == [1, 1, 1, 3, 3]  # type: ignore[attr-defined]


def test_a_snapshot_older_than_the_compacted_log_is_refused() -> None:
    storage = MemoryLogStorage(snapshot=SnapshotMeta(index=5, term=1, conf_state=conf3()))
    storage.hard_state = HardState(term=1, commit=5)
    n = RawNode(RaftConfig(id=N2), storage, random.Random(0))
    n.step(InstallSnapshot(frm=N1, to=N2, term=1, meta=SnapshotMeta(index=3, term=1, conf_state=conf3())))
    rd = drain_storage(n, storage)
    assert rd.snapshot is None and n.status().commit == 5
    assert [m.index for m in rd.messages if isinstance(m, AppendResponse)] == [5]


def drain_storage(n: RawNode, storage: MemoryLogStorage) -> Ready:
    rd = n.ready()
    storage.persist(rd)
    n.advance(rd)
    return rd


def test_heartbeats_from_the_leader_hold_off_vote_requests() -> None:
    n = make_node("2", pre_vote=False)
    for _ in range(9):
        n.tick()
    n.step(Heartbeat(frm=N1, to=N2, term=1))
    for _ in range(9):
        n.tick()
    n.step(VoteRequest(frm=N3, to=N2, term=5, last_index=9, last_term=5))
    assert n.term == 1 and n.leader == N1
    n.tick()  # an election timeout since the heartbeat: votes are considered again
    n.step(VoteRequest(frm=N3, to=N2, term=5, last_index=9, last_term=5))
    assert n.term == 5


# --- a new group's appointed first leader ---------------------------------------------------------------------


def test_an_appointed_first_voter_leads_term_one_without_an_election_and_syncs_the_appointment_first() -> None:
    # Every initial voter starts at term 1 having voted for "1" (the driver writes that with the replica).
    raw = make_node("1", term=1, vote="1")
    raw.campaign(first=True)
    assert raw.role is Role.LEADER and raw.term == 1
    rd = raw.ready()
    # The appointment was written unsynced with the replica: it is written again, synced, and nothing leaves
    # before it (the appends go after the write, not before it as a sitting leader's may).
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (1, "1")
    assert rd.must_sync and not rd.appends_first
    assert [e.index for e in rd.entries] == [1]
    assert {m.to for m in rd.messages if isinstance(m, AppendRequest)} == {"2", "3"}
    assert not [m for m in rd.messages if isinstance(m, VoteRequest)]


def test_a_voter_appointed_for_another_member_refuses_term_one_votes_and_campaigns_for_term_two() -> None:
    follower = make_node("2", term=1, vote="1")
    follower.campaign(first=True)  # not the appointee: an ordinary campaign (pre-vote first) for term 2
    asks = [m for m in follower.ready().messages if isinstance(m, VoteRequest)]
    assert follower.role is Role.PRE_CANDIDATE and {(m.term, m.pre_vote) for m in asks} == {(2, True)}
    other = make_node("3", term=1, vote="1")
    other.step(VoteRequest(frm="2", to="3", term=1, last_index=0, last_term=0))
    rd = other.ready()
    answers = [m for m in rd.messages if isinstance(m, VoteResponse)]
    assert len(answers) == 1 and answers[0].reject  # its term-1 vote is the appointee's


def test_an_appointee_with_a_log_campaigns_as_usual() -> None:
    # A log means it led term 1 before (and lost its leadership's memory, not its entries): no second term 1.
    raw = make_node("1", log=[1], term=1, vote="1")
    raw.campaign(first=True)
    asks = [m for m in raw.ready().messages if isinstance(m, VoteRequest)]
    assert raw.role is Role.PRE_CANDIDATE and {(m.term, m.pre_vote) for m in asks} == {(2, True)}


def _two_answers(ask: Callable[[RawNode], object], **config: object) -> tuple[Net, RawNode, Message, Message]:
    """A three-member group led by 1 that ``ask``s its followers something: the group, its leader, their answers."""
    net = Net(make_node(i, **config) for i in ("1", "2", "3"))
    net.elect("1")
    leader = net.nodes[N1]
    ask(leader)
    answers: list[Message] = []
    for m in msgs(leader):
        net.nodes[m.to].step(m)
        answers += msgs(net.nodes[m.to])
    first, second = answers
    return net, leader, first, second


def test_only_an_acknowledgement_that_changes_nothing_but_a_followers_progress_may_wait() -> None:
    net, leader, first, second = _two_answers(lambda raw: raw.propose(b"x"))
    assert isinstance(first, AppendResponse) and isinstance(second, AppendResponse)
    assert not leader.can_wait(first)  # it commits the entry
    leader.step(first)
    drain(leader)
    assert leader.can_wait(second)  # committed already, and the follower has the whole log: progress only
    assert not leader.can_wait(attrs.evolve(second, reject=True, hint_index=0))
    assert not leader.can_wait(attrs.evolve(second, term=second.term + 1))
    assert leader.can_wait(attrs.evolve(second, index=second.index - 1))  # a late answer: nothing it could change
    assert not net.nodes[N2].can_wait(second)  # not a leader
    assert not leader.can_wait(HeartbeatResponse(frm=N3, to=N1, term=second.term))
    leader.transfer_leadership("3")
    assert not leader.can_wait(second)  # the transfer waits on that follower's progress
    leader.step(second)
    net.stabilize()
    assert leader.role is Role.FOLLOWER and net.nodes[N3].role is Role.LEADER


def test_an_acknowledgement_may_wait_while_a_later_entry_is_on_its_way_but_not_while_one_waits_to_be_sent() -> None:
    _, leader, first, second = _two_answers(lambda raw: raw.propose(b"x"))
    leader.step(first)
    drain(leader)
    leader.propose(b"y")  # appended; sent at the next Ready
    assert not leader.can_wait(second)  # an entry waits to be sent: the answer may be what frees room for it
    drain(leader)  # "y" leaves for both followers
    assert leader.can_wait(second)  # committed already, and the follower was sent everything: progress only
    assert not leader.can_wait(attrs.evolve(second, index=second.index + 1))  # "y" is not committed: it may commit
    # A follower whose window is full is sent nothing more until it answers: that answer frees room, and stepping
    # it sends what waited, so it may not wait.
    _, leader, first, second = _two_answers(lambda raw: raw.propose(b"x"), max_inflight_msgs=1)
    leader.step(first)
    drain(leader)
    leader.propose(b"y")
    assert [m.to for m in drain(leader).messages if isinstance(m, AppendRequest)] == [first.frm]
    assert not leader.can_wait(second)
    leader.step(second)
    assert [m.to for m in drain(leader).messages if isinstance(m, AppendRequest)] == [second.frm]


def test_only_a_heartbeat_answer_for_a_round_a_quorum_acknowledged_may_wait() -> None:
    _, leader, first, second = _two_answers(lambda raw: raw.read_index(b"r1"))
    assert isinstance(first, HeartbeatResponse) and isinstance(second, HeartbeatResponse)
    assert not leader.can_wait(first)  # it makes the quorum that confirms the read
    leader.step(first)
    assert [rs.context for rs in drain(leader).read_states] == [b"r1"]
    assert leader.can_wait(second)  # the round is acknowledged already: the follower's progress only
    assert not leader.can_wait(attrs.evolve(second, seq=second.seq + 1))  # (a later round: it may serve reads)
    assert not leader.can_wait(attrs.evolve(second, term=second.term + 1))
    leader.propose(b"x")  # an entry the followers do not hold yet
    drain(leader)
    assert not leader.can_wait(second)  # from a follower without the whole log: it may need appends
