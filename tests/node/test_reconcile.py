"""One placement step for a group this node leads (``reconcile_once``): what it reads of the leader's view.

A quiet group's leader hears nothing, so its followers' activity flags are stale: the failure detector's word
stands in for them (fuzz --nodes 4 --topology --client-faults, seed 138: a quiet group led by a node that was not
its ring owner waited for ever for the owner to look active before handing it the lead)."""

from __future__ import annotations

from typing import Any

import pytest

from borough.node.reconcile import reconcile_once
from borough.raft.progress import ProgressState
from borough.raft.rawnode import PeerStatus, Status
from borough.raft.records import ConfState, NodeId
from borough.raft.role import Role
from borough.ring.hashring import HashRing
from borough.ring.placement import Nothing, TransferLeader

NODES = ("a", "b", "c")
LAST = 40


class FakeReplica:
    """A leader's replica as ``reconcile_once`` sees it: its status, whether it is quiet, what it was asked."""

    def __init__(self, name: str, leader: str, *, quiesced: bool, active: bool) -> None:
        self.name = name
        self.quiesced = quiesced
        self.conf_change_in_flight = False
        self.transfers: list[str] = []
        progress = {
            NodeId(n): PeerStatus(
                match=LAST,
                next=LAST + 1,
                state=ProgressState.REPLICATE,
                recent_active=n == leader or active,
                learner=False,
                inflight=0,
            )
            for n in NODES
        }
        self._status = Status(
            id=NodeId(leader),
            role=Role.LEADER,
            term=3,
            vote=NodeId(leader),
            leader=NodeId(leader),
            commit=LAST,
            applied=LAST,
            last_index=LAST,
            learner=False,
            conf_state=ConfState(voters=[NodeId(n) for n in NODES]),
            lead_transferee=None,
            progress=progress,
        )

    def status(self) -> Status:
        return self._status

    async def transfer_leadership(self, to: str) -> None:
        self.transfers.append(to)

    async def propose_conf_change(self, change: Any) -> None:
        raise AssertionError(f"no configuration change expected, got {change}")


def misled(ring: HashRing) -> tuple[str, str, str]:
    """A partition name, its ring owner, and another voter to lead it."""
    name = "users"
    owner = ring.owner(name)
    assert owner is not None
    return name, owner, next(n for n in NODES if n != owner)


@pytest.mark.parametrize(
    ("quiesced", "active", "owner_live", "hands_over"),
    [
        (True, False, True, True),  # quiet: the owner's flag is stale (it said nothing); the detector's word counts
        (True, False, False, False),  # quiet, and the detector does not list the owner
        (False, True, True, True),  # awake: the owner answered lately
        (False, False, True, False),  # awake: the flags are fresh and say the owner has not answered lately
    ],
)
async def test_the_lead_goes_to_a_ring_owner_known_alive(
    quiesced: bool, active: bool, owner_live: bool, hands_over: bool
) -> None:
    ring = HashRing.from_node_ids(NODES)
    name, owner, other = misled(ring)
    replica = FakeReplica(name, other, quiesced=quiesced, active=active)
    live = set(NODES) if owner_live else set(NODES) - {owner}
    step = await reconcile_once(replica, ring, live)  # type: ignore[arg-type]
    if hands_over:
        assert step == TransferLeader(node=NodeId(owner)) and replica.transfers == [owner]
    else:
        assert isinstance(step, Nothing) and replica.transfers == []
