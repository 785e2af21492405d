"""Errors the Raft core raises beyond those of ``borough.errors``, each a subclass of one of them.

This module owns only these classes. Callers that do not care about the detail catch the parent
(``NotLeader``, ``Unavailable``, ``ConfigError``), so routing and retry logic stays generic.
"""

from __future__ import annotations

from borough.errors import NotLeader, Unavailable
from borough.raft.confchange import InvalidConfChange

__all__ = ["ConfChangeInProgress", "InvalidConfChange", "LeadershipTransferInProgress"]


class LeadershipTransferInProgress(NotLeader):
    """The leader is handing leadership to ``leader`` (the hint) and refuses proposals meanwhile: retry there
    shortly (or here, if the transfer is abandoned after an election timeout)."""

    def __init__(self, partition: str, target: str) -> None:
        super().__init__(partition, target)
        self.args = (
            f"the leader of partition {partition!r} is transferring leadership to {target} and refuses "
            f"proposals meanwhile; retry on {target} shortly",
        )


class ConfChangeInProgress(Unavailable):
    """A membership change is not applied yet, so another may not start (one change at a time): retry once it
    is applied."""
