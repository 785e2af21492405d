"""Carrying out placement: one configuration step at a time for a group this node leads.

This module owns turning ``borough.ring.placement.next_step``'s decision into Raft: a learner added, a learner
promoted or a voter removed through joint consensus (left automatically), or leadership transferred. The
node's ``_system`` duties call it so ``_system`` grows to min(members, replicas) voters as nodes join; moving
ordinary partitions will call the same function. It knows nothing of timers or of which groups to visit.
"""

from __future__ import annotations

import logging
from collections.abc import Set

from borough.ids import NodeId
from borough.node.replica import Replica
from borough.raft.confchange import ChangeType, ConfChange, ConfChangeSingle, Transition
from borough.ring.hashring import HashRing
from borough.ring.placement import AddLearner, Nothing, PromoteVoter, RemoveNode, ReplicaProgress, Step, TransferLeader
from borough.ring.placement import next_step as plan

__all__ = ["reconcile_once"]

logger = logging.getLogger(__name__)


async def reconcile_once(replica: Replica, ring: HashRing, live: Set[str]) -> Step:
    """Plan and carry out the next placement step for ``replica``'s group (this node must lead it)."""
    status = replica.status()
    # A quiet group's leader hears nothing, so its followers' activity flags say nothing of them: the failure
    # detector's word stands in for them (a group goes quiet only with a quorum answering and its followers
    # holding the whole log, and ``plan`` still checks each one's match). Else a quiet group waiting for its ring
    # owner to be "active" to hand it the lead would wait for ever.
    quiet = replica.quiesced
    progress = {
        node: ReplicaProgress(match=p.match, recent_active=p.recent_active or (quiet and node in live))
        for node, p in status.progress.items()
    }
    conf = status.conf_state
    step = plan(
        ring=ring,
        name=replica.name,
        conf=conf,
        leader=status.leader,
        progress=progress,
        last_index=status.last_index,
        live={NodeId(n) for n in live},
        conf_change_pending=replica.conf_change_in_flight,
    )
    if isinstance(step, Nothing):
        return step
    logger.info("partition %r: placement step %s", replica.name, step)
    if isinstance(step, AddLearner):
        await replica.propose_conf_change(ConfChange.add_learner(step.node))
    elif isinstance(step, PromoteVoter):
        changes = [ConfChangeSingle(type=ChangeType.ADD_VOTER, node=step.node)]
        if step.replaces is not None:  # an atomic swap: the dead voter leaves in the same joint change
            changes.append(ConfChangeSingle(type=ChangeType.REMOVE_NODE, node=step.replaces))
        await replica.propose_conf_change(ConfChange(changes=tuple(changes), transition=Transition.JOINT_IMPLICIT))
    elif isinstance(step, RemoveNode):
        await replica.propose_conf_change(
            ConfChange(
                changes=(ConfChangeSingle(type=ChangeType.REMOVE_NODE, node=step.node),),
                transition=Transition.JOINT_IMPLICIT if step.voter else Transition.AUTO,
            )
        )
    elif isinstance(step, TransferLeader):
        await replica.transfer_leadership(step.node)
    return step
