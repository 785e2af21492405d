"""The roles a Raft replica plays (§5.1, with the pre-candidate of Ongaro's thesis §9.6)."""

from __future__ import annotations

import enum

__all__ = ["Role"]


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"  # polls for votes without bumping its term (pre-vote)
    CANDIDATE = "candidate"
    LEADER = "leader"
