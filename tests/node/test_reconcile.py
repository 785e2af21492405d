"""One placement step for a group this node leads (``reconcile_once``): what it reads of the leader's view.

A quiet group's leader hears nothing, so its followers' activity flags are stale: the failure detector's word
stands in for them (fuzz --nodes 4 --topology --client-faults, seed 138: a quiet group led by a node that was not
its ring owner waited for ever for the owner to look active before handing it the lead). And only a member the
table declares DEAD (or no longer lists) is removed without a replacement; one the detector merely doubts is not
(fuzz --nodes 4 --topology --client-faults --read-mode lease --quiesce-ticks 2 --partitions 6, seed 419: a voter
paused for 3 s was removed, the group was left with two voters, and the kill of one of them wedged it)."""

from __future__ import annotations

from typing import Any

import pytest

from borough.node.reconcile import reconcile_once
from borough.raft.progress import ProgressState
from borough.raft.rawnode import PeerStatus, Status
from borough.raft.records import ConfState, NodeId
from borough.raft.role import Role
from borough.ring.hashring import HashRing
from borough.ring.members import Member, MemberState, MemberTable
from borough.ring.placement import Nothing, RemoveNode, TransferLeader

NODES = ("a", "b", "c")
LAST = 40


class FakeReplica:
    """A leader's replica as ``reconcile_once`` sees it: its status, whether it is quiet, what it was asked."""

    def __init__(
        self, name: str, leader: str, *, quiesced: bool, active: bool, voters: tuple[str, ...] = NODES
    ) -> None:
        self.name = name
        self.quiesced = quiesced
        self.conf_change_in_flight = False
        self.transfers: list[str] = []
        self.changes: list[Any] = []
        progress = {
            NodeId(n): PeerStatus(
                match=LAST,
                next=LAST + 1,
                state=ProgressState.REPLICATE,
                recent_active=n == leader or active,
                learner=False,
                inflight=0,
            )
            for n in voters
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
            conf_state=ConfState(voters=[NodeId(n) for n in voters]),
            lead_transferee=None,
            progress=progress,
        )

    def status(self) -> Status:
        return self._status

    async def transfer_leadership(self, to: str) -> None:
        self.transfers.append(to)

    async def propose_conf_change(self, change: Any) -> None:
        self.changes.append(change)


def table_of(**states: MemberState) -> MemberTable:
    return MemberTable(
        version=1, members=[Member(node_id=NodeId(n), address=f"{n}:1", state=s) for n, s in states.items()]
    )


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
    assert replica.changes == []


@pytest.mark.parametrize("state", [MemberState.DEAD, MemberState.LEAVING, None])
async def test_no_voter_is_removed_without_a_replacement_however_gone_it_looks(state: MemberState | None) -> None:
    """Voters a, b and x; the ring is a, b and t (x left it); t is down, so nothing can replace x yet, and x does
    not answer either. x stays, even declared DEAD or out of the table: a declaration can be wrong (seed 5750: a
    node declared DEAD came back), and two voters would wedge for good on losing either. It leaves in the joint
    change that brings t in (rule 4)."""
    states = {"a": MemberState.ACTIVE, "b": MemberState.ACTIVE, "t": MemberState.ACTIVE}
    if state is not None:
        states["x"] = state
    table = table_of(**states)
    replica = FakeReplica("users", "a", quiesced=False, active=True, voters=("a", "b", "x"))
    step = await reconcile_once(replica, HashRing(table), {"a", "b"})  # type: ignore[arg-type]
    assert not isinstance(step, RemoveNode) and replica.changes == []  # (it may hand the lead to the owner)
