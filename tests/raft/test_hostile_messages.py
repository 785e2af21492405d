"""Messages no correct peer sends, stepped into the core: each is ignored (or answered as Raft says), and the
core neither raises nor moves its commit index. A member's bug or a forged message must not crash a replica."""

from __future__ import annotations

import pytest

from borough.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from borough.raft.rawnode import RawNode
from borough.raft.records import Entry
from borough.raft.role import Role

from .helpers import drain, make_node


def leader() -> RawNode:
    n = make_node("1", log=[1, 1], term=1, commit=2, pre_vote=False)
    n.campaign()
    drain(n)
    n.step(VoteResponse(frm="2", to="1", term=n.status().term))
    drain(n)
    assert n.status().role is Role.LEADER
    return n


def test_an_answer_about_entries_the_leader_never_had_is_ignored() -> None:
    n = leader()
    term, commit, last = n.status().term, n.status().commit, n.status().last_index
    for frm in ("2", "3"):  # were both believed, a quorum would "hold" index 10**6
        n.step(AppendResponse(frm=frm, to="1", term=term, index=10**6))
        drain(n)
    assert n.status().commit == commit and n.status().progress["2"].match <= last
    n.step(AppendResponse(frm="2", to="1", term=term, index=10**6, reject=True, hint_index=10**7, hint_term=5))
    drain(n)
    n.step(AppendResponse(frm="2", to="1", term=term, index=last, reject=True, hint_index=10**7, hint_term=0))
    drain(n)
    assert n.status().role is Role.LEADER and n.status().commit == commit


def test_a_heartbeat_commit_beyond_the_log_commits_only_what_is_there() -> None:
    n = make_node("2", log=[1, 1, 1], term=1, commit=1)
    n.step(Heartbeat(frm="1", to="2", term=1, commit=10**9))
    drain(n)
    assert n.status().commit == 3


def test_a_quiesce_heartbeat_from_a_sender_outside_the_configuration_quiets_nobody() -> None:
    """A forged sender id (not a voter) must not leave a follower quiet under a leader nobody watches: it would
    never campaign again. The same heartbeat from the real leader, a voter, does quiet it."""
    n = make_node("2", log=[1, 1, 1], term=1, commit=3)
    n.step(Heartbeat(frm="intruder", to="2", term=1, commit=3, quiesce=True))
    drain(n)
    assert not n.quiesced
    n.step(Heartbeat(frm="1", to="2", term=1, commit=3, quiesce=True))
    drain(n)
    assert n.quiesced and n.leader == "1"


# --- a node outside the configuration (the live-port fuzzer's non-members, whose `_system` frames a node takes) --


def follower() -> RawNode:
    """Replica 2 of voters 1, 2, 3, following leader 1 in term 1."""
    n = make_node("2", log=[1, 1], term=1, commit=2)
    n.step(Heartbeat(frm="1", to="2", term=1, commit=2, seq=1))
    drain(n)
    assert n.status().role is Role.FOLLOWER and n.leader == "1"
    return n


def outsider_messages(to: str, term: int) -> list[Message]:
    """What a made-up node (not in the configuration) may send, at a term above the group's."""
    entry = Entry(term=term, index=3, data=b"forged")
    return [
        AppendRequest(frm="mallory", to=to, term=term, prev_index=2, prev_term=1, commit=3, entries=[entry]),
        AppendRequest(frm="mallory", to=to, term=term, prev_index=0, prev_term=0, commit=0, entries=[]),
        Heartbeat(frm="mallory", to=to, term=term, commit=2, seq=9),
        VoteRequest(frm="mallory", to=to, term=term, last_index=100, last_term=term, transfer=True),
        VoteRequest(frm="mallory", to=to, term=term, last_index=100, last_term=term, pre_vote=True),
        ReadIndexRequest(frm="mallory", to=to, term=term, context=b"ctx"),
        TimeoutNow(frm="mallory", to=to, term=term),
        AppendResponse(frm="mallory", to=to, term=term, index=2),
        HeartbeatResponse(frm="mallory", to=to, term=term, seq=9),
        VoteResponse(frm="mallory", to=to, term=term),
        ReadIndexResponse(frm="mallory", to=to, term=term, index=4, context=b"ctx"),
    ]


@pytest.mark.parametrize("index", range(len(outsider_messages("1", 5))))
@pytest.mark.parametrize("term", [1, 5, 2**62])
def test_a_node_outside_the_configuration_cannot_depose_a_leader_a_quorum_follows(index: int, term: int) -> None:
    """Before, any of these from a made-up id with a higher term made the leader a follower (of "mallory", for
    its heartbeats and appends): under the live-port fuzzer `_system` lost its leader again and again."""
    n = leader()
    before = n.status()
    n.step(outsider_messages("1", term)[index])
    drain(n)
    after = n.status()
    assert (after.role, after.term, after.leader) == (Role.LEADER, before.term, "1")
    assert after.last_index == before.last_index


@pytest.mark.parametrize("index", range(len(outsider_messages("2", 5))))
@pytest.mark.parametrize("term", [1, 5])
def test_a_node_outside_the_configuration_cannot_take_a_follower_from_its_leader(index: int, term: int) -> None:
    """Nor lead a follower that hears from its leader, start its election (TimeoutNow) or append to its log."""
    n = follower()
    n.step(outsider_messages("2", term)[index])
    rd = drain(n)
    after = n.status()
    assert (after.role, after.term, after.leader, after.last_index) == (Role.FOLLOWER, 1, "1", 2)
    assert not [m for m in rd.messages if m.to == "1"]  # nothing said to the leader either


def test_only_the_leader_hands_its_lead_over() -> None:
    """TimeoutNow is the leader's (§3.10): from a fellow voter, or for another term, it starts no election."""
    n = follower()
    for m in (TimeoutNow(frm="3", to="2", term=1), TimeoutNow(frm="1", to="2", term=2)):
        n.step(m)
        drain(n)
        assert n.status().role is Role.FOLLOWER and n.status().term == 1
    n.step(TimeoutNow(frm="1", to="2", term=1))
    drain(n)
    assert n.status().role is Role.CANDIDATE and n.status().term == 2


def test_a_replica_out_of_touch_follows_a_leader_its_configuration_does_not_list_yet() -> None:
    """A replica whose log is behind a later configuration (or a new, empty one) must still take that
    configuration's leader and answer its candidates, once it hears from no leader of its own."""
    n = make_node("2", log=[1, 1], term=1, commit=2)  # no leader heard since it started
    n.step(VoteRequest(frm="9", to="2", term=3, last_index=2, last_term=1))
    rd = drain(n)
    assert [(m.to, m.reject) for m in rd.messages if isinstance(m, VoteResponse)] == [("9", False)]
    n.step(Heartbeat(frm="9", to="2", term=3, commit=2, seq=1))
    drain(n)
    assert n.status().role is Role.FOLLOWER and n.leader == "9" and n.status().term == 3
    # Its new leader is known now: its messages are taken, though no configuration here lists it.
    entries = [Entry(term=3, index=3)]
    n.step(AppendRequest(frm="9", to="2", term=3, prev_index=2, prev_term=1, commit=3, entries=entries))
    drain(n)
    assert n.status().last_index == 3 and n.status().commit == 3
