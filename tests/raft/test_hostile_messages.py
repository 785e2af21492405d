"""Messages no correct peer sends, stepped into the core: each is ignored (or answered as Raft says), and the
core neither raises nor moves its commit index. A member's bug or a forged message must not crash a replica."""

from __future__ import annotations

from borough.raft.messages import AppendResponse, Heartbeat, VoteResponse
from borough.raft.rawnode import RawNode
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
