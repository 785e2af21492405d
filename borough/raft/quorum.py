"""Quorum math: which index a majority (or a joint pair of majorities) has reached, and who won a vote.

This module owns counting and nothing else. It knows node ids and numbers, not progress, logs or messages.
A joint configuration (§6) needs a majority of *each* of its two voter sets, so a joint result is the worse of
the two majority results. An empty voter set is vacuous (it agrees to anything), which is what makes a
non-joint configuration a joint one with an empty outgoing half.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from borough.raft.records import NodeId

__all__ = ["VoteResult", "committed_index", "joint_committed_index", "joint_vote_result", "vote_result"]

# The committed index of an empty voter set: larger than any real index, so min() with the other half wins.
_VACUOUS = 1 << 64


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def committed_index(voters: Collection[NodeId], acked: Mapping[NodeId, int]) -> int:
    """The largest index that a majority of ``voters`` has acknowledged (``acked``; a missing voter counts 0).

    Sorting only the voters' values (a handful of ints) keeps this cheap on the commit hot path.
    """
    n = len(voters)
    if n == 0:
        return _VACUOUS
    if n == 1:
        for v in voters:
            return acked.get(v, 0)
    values = sorted([acked.get(v, 0) for v in voters], reverse=True)
    return values[n // 2]


def joint_committed_index(
    incoming: Collection[NodeId], outgoing: Collection[NodeId], acked: Mapping[NodeId, int]
) -> int:
    """The committed index of a (possibly joint) configuration: a majority of both halves must have it."""
    idx = committed_index(incoming, acked)
    if outgoing:
        idx = min(idx, committed_index(outgoing, acked))
    return 0 if idx == _VACUOUS else idx


def vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Whether ``votes`` (True = granted, False = rejected, missing = not yet answered) win ``voters``."""
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    quorum = len(voters) // 2 + 1
    if granted >= quorum:
        return VoteResult.WON
    if len(voters) - rejected < quorum:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_vote_result(
    incoming: Collection[NodeId], outgoing: Collection[NodeId], votes: Mapping[NodeId, bool]
) -> VoteResult:
    """A joint election is won when both halves are won, and lost as soon as either half is lost."""
    a = vote_result(incoming, votes)
    b = vote_result(outgoing, votes)
    if a is b:
        return a
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    return VoteResult.PENDING
