"""One test per claim of the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable Consensus
Algorithm", §5.1-§5.6 and §6), in the spirit of etcd-io/raft's raft_paper_test.go, plus the read-only and no-op
rules of §8. Each test is named after its section and says which claim it checks.
"""

from __future__ import annotations

import pytest

from borough.errors import ConfigError
from borough.raft.confchange import ChangeType, ConfChange, ConfChangeSingle, Transition
from borough.raft.config import RaftConfig
from borough.raft.core import Role
from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    VoteRequest,
    VoteResponse,
)
from borough.raft.records import EntryKind, NodeId

from .helpers import Net, drain, ents, make_node, msgs, restart

N1, N2, N3, N4, N5 = (NodeId(str(i)) for i in range(1, 6))
PLAIN = {"pre_vote": False, "check_quorum": False}  # the paper's algorithm, without the thesis' extensions


def elect(node: str, voters: tuple[str, ...] = ("1", "2", "3"), **cfg: object) -> Net:
    net = Net(make_node(v, voters, **cfg) for v in voters)  # type: ignore[arg-type]
    net.elect(node)
    assert net.nodes[NodeId(node)].role is Role.LEADER
    return net


# --- §5.1 Raft basics ---------------------------------------------------------------------------------------


def test_5_1_servers_start_as_followers() -> None:
    n = make_node("1", term=3, vote="2")
    assert (n.role, n.term, n.leader) == (Role.FOLLOWER, 3, None)


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
def test_5_1_a_larger_term_makes_any_server_a_follower_of_that_term(role: Role) -> None:
    n = make_node("1", **PLAIN)
    if role is not Role.FOLLOWER:
        n.campaign()
        if role is Role.LEADER:
            drain(n)
            n.step(VoteResponse(frm=N2, to=N1, term=1))
    assert n.role is role
    n.step(AppendRequest(frm=N2, to=N1, term=5, prev_index=0, prev_term=0, commit=0))
    assert (n.role, n.term, n.leader) == (Role.FOLLOWER, 5, N2)


def test_5_1_a_request_with_a_stale_term_is_rejected() -> None:
    n = make_node("1", term=5, **PLAIN)
    n.step(AppendRequest(frm=N2, to=N1, term=4, prev_index=0, prev_term=0, commit=0, entries=ents(4)))
    assert n.status().last_index == 0 and n.term == 5
    # The pre-vote/check-quorum variant answers with its term, so the stale leader learns it is deposed.
    m = make_node("1", term=5)
    m.step(Heartbeat(frm=N2, to=N1, term=4))
    [reply] = msgs(m)
    assert isinstance(reply, AppendResponse) and reply.term == 5


# --- §5.2 Leader election -----------------------------------------------------------------------------------


def test_5_2_a_leader_sends_heartbeats_to_keep_its_authority() -> None:
    net = elect("1", **PLAIN)
    leader = net.nodes[N1]
    leader.tick()  # heartbeat_tick = 1
    sent = msgs(leader)
    assert sorted(m.to for m in sent if isinstance(m, Heartbeat)) == [N2, N3]


def test_5_2_a_follower_that_hears_nothing_starts_an_election() -> None:
    n = make_node("1", term=1, **PLAIN)
    for _ in range(2 * 10):
        n.tick()
    assert (n.role, n.term) == (Role.CANDIDATE, 2)
    rd = drain(n)
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (2, N1)  # votes for itself
    assert rd.must_sync  # the vote is durable before any vote request leaves
    assert sorted((m.to, m.term) for m in rd.messages if isinstance(m, VoteRequest)) == [(N2, 2), (N3, 2)]


@pytest.mark.parametrize(
    ("granted", "rejected", "role"),
    [
        ({"2"}, set(), Role.LEADER),  # 2 of 3 (with its own vote)
        (set(), {"2", "3"}, Role.FOLLOWER),  # lost
        (set(), {"2"}, Role.CANDIDATE),  # undecided: waits (and times out to a new election)
    ],
)
def test_5_2_a_candidate_wins_with_votes_from_a_majority(granted: set[str], rejected: set[str], role: Role) -> None:
    n = make_node("1", **PLAIN)
    n.campaign()
    drain(n)
    for v in sorted(granted | rejected):
        n.step(VoteResponse(frm=NodeId(v), to=N1, term=1, reject=v in rejected))
    assert n.role is role


def test_5_2_each_server_votes_for_at_most_one_candidate_per_term() -> None:
    n = make_node("1", **PLAIN)
    n.step(VoteRequest(frm=N2, to=N1, term=1, last_index=0, last_term=0))
    n.step(VoteRequest(frm=N3, to=N1, term=1, last_index=0, last_term=0))
    n.step(VoteRequest(frm=N2, to=N1, term=1, last_index=0, last_term=0))  # a retransmission is granted again
    answers = [(m.to, m.reject) for m in msgs(n) if isinstance(m, VoteResponse)]
    assert answers == [(N2, False), (N3, True), (N2, False)]


def test_5_2_a_vote_survives_a_restart() -> None:
    n = make_node("1", **PLAIN)
    n.step(VoteRequest(frm=N2, to=N1, term=1, last_index=0, last_term=0))
    assert drain(n).must_sync  # the vote is synced before the answer goes out
    again = restart(n)
    again.step(VoteRequest(frm=N3, to=N1, term=1, last_index=0, last_term=0))
    [answer] = msgs(again)
    assert isinstance(answer, VoteResponse) and answer.reject


def test_5_2_a_candidate_that_hears_from_a_leader_of_its_term_steps_down() -> None:
    n = make_node("1", **PLAIN)
    n.campaign()
    n.step(AppendRequest(frm=N2, to=N1, term=1, prev_index=0, prev_term=0, commit=0))
    assert (n.role, n.leader, n.term) == (Role.FOLLOWER, N2, 1)


def test_5_2_election_timeouts_are_randomized_in_one_to_two_timeouts() -> None:
    timeouts = set()
    for seed in range(40):
        n = make_node("1", seed=seed, **PLAIN)
        ticks = 0
        while n.role is Role.FOLLOWER:
            n.tick()
            ticks += 1
        timeouts.add(ticks)
    assert min(timeouts) >= 10 and max(timeouts) < 20
    assert len(timeouts) > 5  # spread out, so that split votes resolve quickly


def test_5_2_a_split_vote_leads_to_a_new_election_in_a_new_term() -> None:
    n = make_node("1", **PLAIN)
    n.campaign()
    drain(n)
    for _ in range(20):
        n.tick()
    assert (n.role, n.term) == (Role.CANDIDATE, 2)


# --- §5.3 Log replication -----------------------------------------------------------------------------------


def test_5_3_a_leader_appends_a_command_and_replicates_it() -> None:
    net = elect("1", **PLAIN)
    leader = net.nodes[N1]
    index = leader.propose(b"x")
    rd = drain(leader)
    assert [(e.index, e.data) for e in rd.entries] == [(index, b"x")]
    apps = [m for m in rd.messages if isinstance(m, AppendRequest)]
    assert sorted(m.to for m in apps) == [N2, N3]
    assert all([e.data for e in m.entries] == [b"x"] and m.prev_index == index - 1 for m in apps)


def test_5_3_an_entry_is_committed_once_a_majority_has_it_and_then_applied() -> None:
    net = elect("1", ("1", "2", "3", "4", "5"), **PLAIN)
    leader = net.nodes[N1]
    index = leader.propose(b"x")
    net.isolate("4")
    net.isolate("5")
    net.cut.discard(frozenset(("4", "5")))
    net.stabilize()
    assert leader.status().commit == index  # 3 of 5
    assert net.applied["1"][-1].data == b"x" and net.applied["2"][-1].data == b""  # told with the next heartbeat
    net.heartbeat("1")
    assert net.applied["1"][-1].data == b"x" and net.applied["2"][-1].data == b"x"


def test_5_3_committing_an_entry_commits_all_preceding_entries() -> None:
    net = elect("1", **PLAIN)
    leader = net.nodes[N1]
    net.isolate("2")
    net.isolate("3")
    indexes = [leader.propose(f"x{i}".encode()) for i in range(3)]
    net.stabilize()
    assert leader.status().commit < indexes[0]
    net.heal()
    last = leader.propose(b"last")
    net.stabilize()
    assert leader.status().commit == last
    net.heartbeat("1")
    assert [e.data for e in net.applied["3"][-4:]] == [b"x0", b"x1", b"x2", b"last"]


def test_5_3_followers_commit_what_the_leader_committed_up_to_their_matching_entries() -> None:
    n = make_node("2", log=[1, 1, 1], term=1, **PLAIN)
    # The leader has committed 5, but this append only proves that our log matches up to 2: commit 2.
    n.step(AppendRequest(frm=N1, to=N2, term=1, prev_index=1, prev_term=1, commit=5, entries=ents(1, start=2)))
    assert n.status().commit == 2
    n.step(AppendRequest(frm=N1, to=N2, term=1, prev_index=3, prev_term=1, commit=5))
    assert n.status().commit == 3


def test_5_3_a_follower_refuses_entries_that_do_not_follow_a_matching_entry() -> None:
    n = make_node("2", log=[1, 1], term=2, **PLAIN)
    n.step(AppendRequest(frm=N1, to=N2, term=2, prev_index=2, prev_term=2, commit=0, entries=ents(2, start=3)))
    [reply] = msgs(n)
    assert isinstance(reply, AppendResponse) and reply.reject and reply.index == 2
    # The hint: the last entry at or below 2 whose term is at most 2, so the leader skips in one step.
    assert (reply.hint_index, reply.hint_term) == (2, 1)
    assert n.status().last_index == 2


def test_5_3_conflicting_entries_are_replaced_by_the_leaders() -> None:
    n = make_node("2", log=[1, 2, 2], term=3, **PLAIN)
    n.step(AppendRequest(frm=N1, to=N2, term=3, prev_index=1, prev_term=1, commit=0, entries=ents(3, start=2)))
    rd = drain(n)
    assert [(e.index, e.term) for e in rd.entries] == [(2, 3)]
    assert n.status().last_index == 2
    assert [e.term for e in n.storage.ents] == [1, 3]  # type: ignore[attr-defined]


# Figure 7 of the paper: the leader of term 8 and six possible follower logs.
FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_5_3_the_leader_brings_every_follower_log_in_line_with_its_own(case: str) -> None:
    # Node 3 holds the leader's log and votes for it; node 2 holds one of the follower logs of Figure 7.
    voters = ("1", "2", "3")
    leader = make_node("1", voters, log=FIGURE_7_LEADER, term=7, **PLAIN)
    follower = make_node("2", voters, log=FIGURE_7_FOLLOWERS[case], term=7, **PLAIN)
    net = Net([leader, follower, make_node("3", voters, log=FIGURE_7_LEADER, term=7, **PLAIN)])
    net.elect("1")
    assert leader.term == 8
    leader.propose(b"new")
    net.stabilize()
    expected = [*FIGURE_7_LEADER, 8, 8]
    assert [e.term for e in follower.storage.ents] == expected  # type: ignore[attr-defined]
    net.heartbeat("1")
    assert follower.status().commit == len(expected)


def test_5_3_log_matching_a_follower_accepts_entries_only_after_a_matching_prefix() -> None:
    # If two logs hold an entry with the same index and term, they are identical up to it: an entry is only
    # appended after the consistency check on the one before it, so identical prefixes are all that exist.
    leader = make_node("1", ("1", "2"), log=[1, 2, 3], term=3, **PLAIN)
    follower = make_node("2", ("1", "2"), log=[1, 1, 1, 1], term=3, **PLAIN)
    net = Net([leader, follower])
    net.elect("1")
    net.stabilize()
    assert [e.term for e in follower.storage.ents] == [1, 2, 3, 4]  # type: ignore[attr-defined]
    assert follower.storage.ents == leader.storage.ents  # type: ignore[attr-defined]


# --- §5.4 Safety ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("their_last_term", "their_last_index", "granted"),
    [
        (2, 3, True),  # same last term and index
        (2, 4, True),  # same term, longer
        (2, 2, False),  # same term, shorter
        (3, 1, True),  # higher last term wins whatever the length
        (1, 9, False),  # lower last term loses whatever the length
    ],
)
def test_5_4_1_vote_requires_up_to_date_log(their_last_term: int, their_last_index: int, granted: bool) -> None:
    n = make_node("1", log=[1, 2, 2], term=2, **PLAIN)
    n.step(VoteRequest(frm=N2, to=N1, term=3, last_index=their_last_index, last_term=their_last_term))
    [answer] = msgs(n)
    assert isinstance(answer, VoteResponse) and answer.reject is not granted


def test_5_4_1_a_candidate_without_every_committed_entry_cannot_win() -> None:
    nodes = [make_node(n, **PLAIN) for n in ("1", "2", "3")]
    net = Net(nodes)
    net.isolate("1")
    net.elect("2")  # commits its no-op on 2 and 3, while 1 misses it
    net.heartbeat("2")
    assert nodes[2].status().commit == 1 and nodes[0].status().last_index == 0
    net.heal()
    net.isolate("2")
    nodes[0].campaign()
    net.stabilize()
    assert nodes[0].role is not Role.LEADER  # 3 refuses: its log holds a committed entry 1 lacks


def test_5_4_2_a_leader_never_commits_an_earlier_term_entry_by_counting_replicas() -> None:
    # Figure 8 (c): S1 leads term 4 and has replicated the term-2 entry at index 2 to a majority, but must not
    # commit it by counting: S5 (term-3 entry at index 2) could still be elected and overwrite it.
    s1 = make_node("1", ("1", "2", "3", "4", "5"), log=[1, 2], term=3, commit=1, **PLAIN)
    s2 = make_node("2", ("1", "2", "3", "4", "5"), log=[1, 2], term=3, **PLAIN)
    s3 = make_node("3", ("1", "2", "3", "4", "5"), log=[1], term=3, **PLAIN)
    s1.campaign()
    for v in (N2, N3):
        s1.step(VoteResponse(frm=v, to=N1, term=4))
    assert s1.role is Role.LEADER and s1.term == 4
    drain(s1)  # the no-op at index 3 goes out; pretend only the term-2 entry reached s3
    s1.step(AppendResponse(frm=N2, to=N1, term=4, index=2))
    s1.step(AppendResponse(frm=N3, to=N1, term=4, index=2))
    assert s1.status().commit == 1  # three of five hold index 2, yet it stays uncommitted
    # Once an entry of term 4 reaches a majority, it and everything before it commit (§5.4.2).
    s1.step(AppendResponse(frm=N2, to=N1, term=4, index=3))
    s1.step(AppendResponse(frm=N3, to=N1, term=4, index=3))
    assert s1.status().commit == 3
    del s2, s3


def test_5_4_3_leader_completeness_every_new_leader_holds_every_committed_entry() -> None:
    voters = ("1", "2", "3", "4", "5")
    net = elect("1", voters, **PLAIN)
    for i in range(3):
        net.nodes[N1].propose(f"c{i}".encode())
    net.isolate("4")
    net.isolate("5")
    net.stabilize()
    committed = net.nodes[N1].status().commit
    net.heal()
    net.isolate("1")
    for candidate in ("4", "5", "2"):  # the stale ones cannot win; 2 holds everything and can
        net.elect(candidate) if candidate == "2" else (net.nodes[NodeId(candidate)].campaign(), net.stabilize())
    leader = next(n for n in net.nodes.values() if n.role is Role.LEADER and n.id != N1)
    assert leader.id in (N2, N3)
    assert leader.status().last_index >= committed


# --- §5.5 Follower and candidate crashes ----------------------------------------------------------------------


def test_5_5_raft_rpcs_are_idempotent() -> None:
    n = make_node("2", log=[1], term=1, **PLAIN)
    m = AppendRequest(frm=N1, to=N2, term=1, prev_index=1, prev_term=1, commit=2, entries=ents(1, start=2))
    n.step(m)
    first = drain(n)
    n.step(m)  # a retransmission after a lost response
    second = drain(n)
    assert [e.index for e in first.entries] == [2] and second.entries == []
    assert [r.index for r in second.messages if isinstance(r, AppendResponse)] == [2]
    assert n.status().last_index == 2


def test_5_5_a_crashed_follower_catches_up_after_restart() -> None:
    net = elect("1", **PLAIN)
    net.isolate("3")  # down: the leader's appends to it are lost
    for i in range(5):
        net.nodes[N1].propose(f"x{i}".encode())
    net.stabilize()
    net.nodes[N3] = restart(net.nodes[N3])
    net.heal()
    # The leader retries indefinitely: heartbeat answers show that 3 made no progress, so it probes again.
    for _ in range(2):
        net.nodes[N1].tick()
        net.stabilize()
    assert net.nodes[N3].status().commit == net.nodes[N1].status().commit == 6


# --- §5.6 Timing and availability ---------------------------------------------------------------------------


def test_5_6_broadcast_time_must_be_well_below_the_election_timeout() -> None:
    with pytest.raises(ConfigError):
        RaftConfig(id=N1, election_tick=5, heartbeat_tick=5)
    with pytest.raises(ConfigError):
        RaftConfig(id=N1, election_tick=10, read_only="lease", lease_ticks=10)


# --- §6 Cluster membership changes ----------------------------------------------------------------------------


def test_6_a_joint_configuration_needs_a_majority_of_both_old_and_new() -> None:
    net = elect("1", **PLAIN)
    leader = net.nodes[N1]
    cc = ConfChange(
        changes=[
            ConfChangeSingle(type=ChangeType.ADD_VOTER, node=N4),
            ConfChangeSingle(type=ChangeType.ADD_VOTER, node=N5),
            ConfChangeSingle(type=ChangeType.REMOVE_NODE, node=N3),
        ],
        transition=Transition.JOINT_EXPLICIT,
    )
    index = leader.propose_conf_change(cc)
    cs = leader.status().conf_state
    assert cs.joint and set(cs.voters) == {N1, N2, N4, N5} and set(cs.voters_outgoing) == {N1, N2, N3}
    drain(leader)
    # 2 of the old {1,2,3} but only 2 of the new {1,2,4,5}: no commit.
    leader.step(AppendResponse(frm=N2, to=N1, term=1, index=index))
    assert leader.status().commit < index
    leader.step(AppendResponse(frm=N4, to=N1, term=1, index=index))
    assert leader.status().commit == index


def test_6_a_configuration_takes_effect_as_soon_as_it_is_appended() -> None:
    net = elect("1", **PLAIN)
    net.isolate("2")
    net.isolate("3")
    index = net.nodes[N1].propose_conf_change(ConfChange.add_voter(N4))
    assert set(net.nodes[N1].status().conf_state.voters) == {N1, N2, N3, N4}
    assert net.nodes[N1].status().commit < index
    # A follower switches when it appends the entry, before it is committed.
    f = make_node("2", **PLAIN)
    entries = net.nodes[N1]._raft.log.slice(1, index + 1, 1 << 20)
    f.step(AppendRequest(frm=N1, to=N2, term=1, prev_index=0, prev_term=0, commit=0, entries=entries))
    assert set(f.status().conf_state.voters) == {N1, N2, N3, N4}


def test_6_a_configuration_whose_entry_is_truncated_is_abandoned() -> None:
    f = make_node("2", term=1, **PLAIN)
    leader = make_node("1", term=1, **PLAIN)
    leader.campaign()
    for v in (N2, N3):
        leader.step(VoteResponse(frm=v, to=N1, term=2))
    drain(leader)
    leader.propose_conf_change(ConfChange.add_voter(N4))
    entries = leader._raft.log.slice(1, leader.status().last_index + 1, 1 << 20)
    f.step(AppendRequest(frm=N1, to=N2, term=2, prev_index=0, prev_term=0, commit=0, entries=entries))
    assert N4 in f.status().conf_state.voters
    # A leader of term 3 never saw it and overwrites index 2.
    f.step(AppendRequest(frm=N3, to=N2, term=3, prev_index=1, prev_term=2, commit=0, entries=ents(3, start=2)))
    assert N4 not in f.status().conf_state.voters


def test_6_a_leader_that_is_removed_steps_down_once_the_change_is_committed() -> None:
    net = elect("1", **PLAIN)
    leader = net.nodes[N1]
    index = leader.propose_conf_change(ConfChange.remove(N1))
    assert leader.role is Role.LEADER  # it manages the cluster until the change is committed
    net.stabilize()
    assert leader.role is Role.FOLLOWER
    assert net.nodes[N2].status().commit >= index
    for _ in range(30):
        for n in net.nodes.values():
            n.tick()
        net.stabilize()
    assert leader.role is Role.FOLLOWER  # not a voter: it never campaigns
    assert any(n.role is Role.LEADER for n in (net.nodes[N2], net.nodes[N3]))


def test_6_new_servers_join_as_learners_that_do_not_count_toward_majorities() -> None:
    net = Net(make_node(n, ("1", "2"), learners=("3",), **PLAIN) for n in ("1", "2", "3"))
    net.elect("1")
    leader = net.nodes[N1]
    net.isolate("2")
    index = leader.propose(b"x")
    net.stabilize()
    assert net.nodes[N3].status().last_index == index  # the learner has it
    assert leader.status().commit < index  # but it does not count
    for _ in range(40):
        net.nodes[N3].tick()
    assert net.nodes[N3].role is Role.FOLLOWER  # and it never campaigns


def test_6_servers_ignore_vote_requests_while_they_hear_from_a_leader() -> None:
    # §6 (disruptive servers), as the thesis' §4.2.3 fixes it: within the minimum election timeout of hearing
    # from a leader, a server neither grants a vote nor updates its term.
    net = elect("1")
    follower = net.nodes[N2]
    follower.step(VoteRequest(frm=N3, to=N2, term=9, last_index=99, last_term=9))
    assert follower.term == 1 and msgs(follower) == []
    for _ in range(10):
        follower.tick()
    follower.step(VoteRequest(frm=N3, to=N2, term=9, last_index=99, last_term=9))
    assert follower.term == 9


# --- §8 Client interaction ------------------------------------------------------------------------------------


def test_8_a_new_leader_commits_a_no_op_entry_at_the_start_of_its_term() -> None:
    net = elect("1")
    entry = net.applied["1"][-1]
    assert (entry.term, entry.data, entry.kind) == (1, b"", EntryKind.NORMAL)


def test_8_read_only_requests_wait_until_the_leader_committed_in_its_term_and_confirmed_leadership() -> None:
    n = make_node("1", log=[1, 1], term=1, commit=2)
    n.campaign()
    drain(n)
    n.step(VoteResponse(frm=N2, to=N1, term=2, pre_vote=True))
    drain(n)
    n.step(VoteResponse(frm=N2, to=N1, term=2))
    assert n.role is Role.LEADER
    n.read_index(b"r")
    drain(n)
    n.step(AppendResponse(frm=N2, to=N1, term=2, index=3))  # our no-op commits: the read may now proceed
    rd = drain(n)
    assert rd.read_states == []  # it still needs a heartbeat round acknowledged by a quorum
    [hb] = [m for m in rd.messages if isinstance(m, Heartbeat) and m.to == N2]
    n.step(HeartbeatResponse(frm=N2, to=N1, term=2, seq=hb.seq))
    [rs] = drain(n).read_states
    assert (rs.index, rs.context) == (3, b"r")
