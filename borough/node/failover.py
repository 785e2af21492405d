"""Leader loss, noticed by the node rather than by each group: followers of a gone leader campaign at once.

This module owns what a node does when it learns that another node is gone or back, for every group it hosts:
- Gone (the failure detector says DEAD, or dialling the node failed right after its connection broke, which is
  how a killed process shows up): each replica that follows a leader on that node forgets it and campaigns
  (pre-vote first) without waiting out an election timeout. A quiesced follower could not notice otherwise: it
  hears nothing, by design. To avoid split votes, the remaining voters of a group campaign one after another, in
  the order of their node ids, ``STAGGER_TICKS`` apart (each one stops waiting as soon as it hears from a new
  leader). Safety is Raft's; disruption is bounded by pre-vote and check-quorum: a member that still hears from
  the leader refuses the pre-vote.
- Suspected (SUSPECT) is not acted on: the detector suspects a node whose event loop is merely busy (a node
  under load answers probes late), and waking every group that node leads (thousands, on a node with many
  partitions) would add an election's worth of work per group to the load that caused the suspicion, and so
  the next suspicion (measured: a cluster creating partitions fell into such a storm and never left it). A
  suspect that is really gone is DEAD within the detector's bound (``DETECTION_BOUND``); a busy group's
  followers notice a silent leader by their own election timeout anyway.
- Back (the detector says ALIVE again): a quiesced leader with a follower there that lacks part of the log
  wakes and heartbeats, so the follower catches up now rather than at the group's next write.
Only the groups concerned are touched, found through the index of this node's replicas by the node their leader
is on (``borough.node.leaders``), so the work of a member event is proportional to the groups led there, not to
the replicas hosted. It knows nothing of Raft beyond the two commands it sends to replicas
(``RawNode.forget_leader``, ``RawNode.wake``), nor of the wire.
"""

from __future__ import annotations

import logging
import operator
from typing import Protocol

from borough.ids import NodeId
from borough.node.leaders import Leaders
from borough.node.registry import Replicas
from borough.ring.members import MemberTable
from borough.ring.membership import MemberEvent
from borough.ring.messages import Liveness

__all__ = ["STAGGER_TICKS", "Failover"]

logger = logging.getLogger(__name__)

#: Ticks between the campaigns of a group's remaining voters after its leader's node is gone.
STAGGER_TICKS = 2
#: The commands sent to a replica's core (``RawNode.forget_leader(campaign_in)``, ``RawNode.wake()``).
_WAKE = operator.methodcaller("wake")


class MemberSource(Protocol):
    """Where the newest member table is (the node's ``Directory``)."""

    @property
    def members(self) -> MemberTable: ...


class Failover:
    def __init__(self, *, node_id: str, replicas: Replicas, leaders: Leaders, members: MemberSource) -> None:
        self._node_id = node_id
        self._replicas = replicas
        self._leaders = leaders
        self._members = members
        #: Followers told to campaign because their leader's node was gone, and quiesced leaders woken for a
        #: follower that came back (for metrics and tests).
        self.campaigns = 0
        self.wakes = 0

    def on_member_event(self, event: MemberEvent) -> None:
        """The failure detector changed its mind about a member."""
        if event.liveness is Liveness.ALIVE:
            self.node_back(event.node_id)
        elif event.liveness is Liveness.DEAD:
            self.node_gone(event.node_id, "dead")
        else:  # SUSPECT: nothing (see the module's docstring)
            logger.debug("node %s is suspected: no group acts on it before it is dead", event.node_id)

    def on_unreachable(self, address: str) -> None:
        """Dialling ``address`` failed (the transport's report): if a member listens there, it is gone for us."""
        for member in self._members.members:
            if member.address == address and member.node_id != self._node_id:
                self.node_gone(member.node_id, "unreachable")
                return

    def node_gone(self, node_id: str, why: str, sure: bool = True) -> int:
        """Every follower here of a leader on ``node_id`` campaigns, staggered by rank (see
        ``RawNode.forget_leader`` for ``sure``); returns how many."""
        me = NodeId(self._node_id)
        told = 0
        leaders = self._leaders
        for name in leaders.led_by(node_id):
            replica = self._replicas.get(name)
            if replica is None or replica.is_leader or replica.leader != node_id:
                # Gone, or its leader changed since it last said (it will say again): the index is fixed up.
                leaders.changed(name, None if replica is None else replica.leader)
                continue
            voters = sorted(v for v in replica.status().conf_state.voters if v != node_id)
            rank = voters.index(me) if me in voters else len(voters)
            replica.command(operator.methodcaller("forget_leader", rank * STAGGER_TICKS, sure))
            told += 1
        if told:
            self.campaigns += told
            logger.info("node %s is %s: %d local followers of its groups campaign", node_id, why, told)
        return told

    def node_back(self, node_id: str) -> int:
        """Every quiesced leader here with a follower on ``node_id`` that lacks entries wakes; returns how many."""
        woken = 0
        for name in self._leaders.led_by(self._node_id):
            replica = self._replicas.get(name)
            if replica is None or not (replica.is_leader and replica.quiesced):
                continue
            status = replica.status()
            peer = status.progress.get(NodeId(node_id))
            if peer is not None and peer.match < status.last_index:
                replica.command(_WAKE)
                woken += 1
        self.wakes += woken
        return woken
