"""Leader loss, noticed by the node rather than by each group: followers of a gone leader campaign at once.

This module owns what a node does when it learns that another node is gone or back, for every group it hosts:
- Gone (the failure detector says DEAD, or dialling the node failed right after its connection broke, which is
  how a killed process shows up): each replica that follows a leader on that node forgets it and campaigns
  (pre-vote first) without waiting out an election timeout. SUSPECT is weaker: the followers wake and campaign
  soon, but the leader's lease still holds, so a leader that is alive keeps its groups. A quiesced follower could
  not notice otherwise: it hears nothing, by design. To avoid split votes, the remaining voters of a group campaign one
  after another, in the order of their node ids, ``STAGGER_TICKS`` apart (each one stops waiting as soon as it
  hears from a new leader). Safety is Raft's; disruption is bounded by pre-vote and check-quorum: a member that
  still hears from the leader refuses the pre-vote, so one node's false suspicion deposes nobody.
- Back (the detector says ALIVE again): a quiesced leader with a follower there that lacks part of the log
  wakes and heartbeats, so the follower catches up now rather than at the group's next write.
Only the groups concerned are touched (a detector blip wakes nothing else). It knows nothing of Raft beyond the
two commands it sends to replicas (``RawNode.forget_leader``, ``RawNode.wake``), nor of the wire.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable

from borough.ids import NodeId
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


class Failover:
    def __init__(self, *, node_id: str, replicas: Replicas, members: Callable[[], MemberTable]) -> None:
        self._node_id = node_id
        self._replicas = replicas
        self._members = members
        #: Followers told to campaign because their leader's node was gone, and quiesced leaders woken for a
        #: follower that came back (for metrics and tests).
        self.campaigns = 0
        self.wakes = 0

    def on_member_event(self, event: MemberEvent) -> None:
        """The failure detector changed its mind about a member."""
        if event.liveness is Liveness.ALIVE:
            self.node_back(event.node_id)
        else:
            # Suspected: the followers wake and campaign, but still honour the leader's lease (a false suspicion
            # under load must not move every leadership of a node). Dead: they forget it and campaign now.
            self.node_gone(event.node_id, event.liveness.name.lower(), sure=event.liveness is Liveness.DEAD)

    def on_unreachable(self, address: str) -> None:
        """Dialling ``address`` failed (the transport's report): if a member listens there, it is gone for us."""
        for member in self._members().members:
            if member.address == address and member.node_id != self._node_id:
                self.node_gone(member.node_id, "unreachable")
                return

    def node_gone(self, node_id: str, why: str, sure: bool = True) -> int:
        """Every follower here of a leader on ``node_id`` campaigns, staggered by rank (see
        ``RawNode.forget_leader`` for ``sure``); returns how many."""
        me = NodeId(self._node_id)
        told = 0
        for _, replica in self._replicas.items():
            if replica.is_leader or replica.leader != node_id:
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
        for _, replica in self._replicas.items():
            if not (replica.is_leader and replica.quiesced):
                continue
            status = replica.status()
            peer = status.progress.get(NodeId(node_id))
            if peer is not None and peer.match < status.last_index:
                replica.command(_WAKE)
                woken += 1
        self.wakes += woken
        return woken
