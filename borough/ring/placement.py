"""Placement: the next single safe step that moves a partition's Raft group towards its ring replica set.

This module owns one pure function, ``next_step``, and the step records it returns. Given the ring, the
partition's current Raft configuration, its leader, the replicas' progress and which nodes are live, it says
what the group's leader should do next: add a node as a learner, promote a caught-up learner to voter
(through joint consensus), remove a node, move leadership to the ring owner, or nothing. It knows nothing of
how a step is carried out (Raft proposes it), of time or of the network, and it keeps no state: the leader
calls it again after each step has been applied, so every decision is taken on fresh facts.

Rules, in the order they are tried (DESIGN.md, "Cluster, ring and partitions"):

1. Nothing while a configuration change is in flight or the configuration is joint (the Raft core leaves a
   joint configuration by itself, ``auto_leave``): at most one change per group at a time.
2. Nothing if the current voters do not have a quorum of live nodes: no change could commit, and placement
   must never make things worse.
3. Add the first live ring target that is not yet a member, as a learner (learners do not count in quorums,
   so this is always safe); the new replica then catches up by snapshot and log.
4. Promote the first ring target that is a live learner caught up to within ``catch_up_slack`` entries of
   the leader's last index (and holding something: a match index above 0, so an empty replica still waiting for
   its snapshot is never promoted, however short the log), through joint consensus. If a dead voter has left
   the ring, swap the learner in for it in the same joint change (atomic: the voter set never shrinks).
   Otherwise, while a voter is down, promote only if the group keeps a live quorum without counting the new
   voter, so a new node that fails right after its promotion cannot wedge the group.
5. Remove a learner that is not a ring target (always safe).
6. Never remove a voter without a replacement while a ring target is still missing, however dead it looks (even
   declared DEAD: a declaration can be wrong, and the node may come back). Removing it would leave the group two
   voters, and losing either would wedge it for good; kept, it costs nothing, and it is swapped out in one joint
   change once its replacement has caught up (rule 4), or removed once every ring target votes (rule 7).
7. Once every ring target is a voter, remove the voters that are not ring targets (live or not), one at a time; if
   one of them is the leader, first move leadership to a caught-up ring target (the owner if it can).
8. Move leadership to the ring owner once it is a live, recently active voter that is caught up.
9. Otherwise nothing: converged, or waiting (for a target to come up or catch up).

Every removal is checked to leave a live quorum among the remaining voters, and a promotion to leave one in
the new (incoming) voter set, so both halves of each joint configuration can commit. The safety and
convergence claims are tested exhaustively in tests/ring/test_placement.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set

import attrs

from borough.ids import NodeId
from borough.raft.records import ConfState
from borough.ring.hashring import HashRing

__all__ = [
    "DEFAULT_CATCH_UP_SLACK",
    "AddLearner",
    "Nothing",
    "PromoteVoter",
    "RemoveNode",
    "ReplicaProgress",
    "Step",
    "TransferLeader",
    "has_live_quorum",
    "next_step",
]

# A learner (or a leadership-transfer target) within this many entries of the leader's last index counts
# as caught up: promoting it will not stall commits while it fetches the rest.
DEFAULT_CATCH_UP_SLACK = 64


@attrs.frozen(kw_only=True, slots=True)
class ReplicaProgress:
    """What the leader knows of one replica: its match index and whether it answered recently."""

    match: int
    recent_active: bool = True


def _conf(voters: Iterable[NodeId], learners: Iterable[NodeId]) -> ConfState:
    return ConfState(voters=tuple(voters), learners=tuple(learners))


@attrs.frozen(kw_only=True, slots=True)
class AddLearner:
    """Add ``node`` as a learner (a simple configuration change: learners do not vote)."""

    node: NodeId

    def target_conf(self, conf: ConfState) -> ConfState:
        return _conf(conf.voters, {*conf.learners, self.node})


@attrs.frozen(kw_only=True, slots=True)
class PromoteVoter:
    """Make learner ``node`` a voter through joint consensus: enter C(old, new) with ``auto_leave``. With
    ``replaces``, the same joint change also drops that (dead) voter: an atomic swap, so the group never passes
    through a smaller voter set than it has."""

    node: NodeId
    replaces: NodeId | None = None

    def target_conf(self, conf: ConfState) -> ConfState:
        return _conf({*conf.voters, self.node} - {self.replaces}, set(conf.learners) - {self.node})

    def joint_conf(self, conf: ConfState) -> ConfState:
        """The joint configuration the change passes through (both voter sets must agree on commits)."""
        final = self.target_conf(conf)
        return attrs.evolve(final, voters_outgoing=conf.voters, auto_leave=True)


@attrs.frozen(kw_only=True, slots=True)
class RemoveNode:
    """Remove ``node``: a voter through joint consensus (``voter`` is True), a learner by a simple change."""

    node: NodeId
    voter: bool

    def target_conf(self, conf: ConfState) -> ConfState:
        return _conf(set(conf.voters) - {self.node}, set(conf.learners) - {self.node})

    def joint_conf(self, conf: ConfState) -> ConfState:
        final = self.target_conf(conf)
        if not self.voter:
            return final
        return attrs.evolve(final, voters_outgoing=conf.voters, auto_leave=True)


@attrs.frozen(kw_only=True, slots=True)
class TransferLeader:
    """Move leadership to ``node`` (a caught-up live voter) by Raft's leadership transfer (§3.10)."""

    node: NodeId

    def target_conf(self, conf: ConfState) -> ConfState:
        return conf


@attrs.frozen(kw_only=True, slots=True)
class Nothing:
    """No step now. ``converged`` is True when the group is exactly the ring's replica set, led by the owner;
    otherwise ``reason`` says what placement is waiting for."""

    reason: str
    converged: bool = False

    def target_conf(self, conf: ConfState) -> ConfState:
        return conf


Step = AddLearner | PromoteVoter | RemoveNode | TransferLeader | Nothing


def has_live_quorum(voters: Iterable[NodeId], live: Set[NodeId]) -> bool:
    """Whether a majority of ``voters`` is live (an empty voter set has none)."""
    vs = set(voters)
    return bool(vs) and len(vs & live) >= len(vs) // 2 + 1


def next_step(
    *,
    ring: HashRing,
    name: str,
    conf: ConfState,
    leader: NodeId | None,
    progress: Mapping[NodeId, ReplicaProgress],
    last_index: int,
    live: Set[NodeId],
    conf_change_pending: bool,
    catch_up_slack: int = DEFAULT_CATCH_UP_SLACK,
) -> Step:
    """The next single step for partition ``name`` (see the module docstring for the rules). Pure: the same
    arguments always give the same step. ``leader`` is the caller (the group's leader) and counts as live and
    caught up; ``live`` is the set of nodes the failure detector believes alive."""
    if conf_change_pending or conf.joint:
        return Nothing(reason="a configuration change is in flight")
    voters = set(conf.voters)
    learners = set(conf.learners)
    if leader is None or leader not in voters:
        return Nothing(reason="no leader among the voters")
    live = set(live) | {leader}
    if not has_live_quorum(voters, live):
        return Nothing(reason="the voters have no live quorum: no change could commit")
    target = ring.replica_set(name)
    if not target:
        return Nothing(reason="the ring has no members")
    wanted = set(target)
    owner = target[0]

    def caught_up(node: NodeId) -> bool:
        if node == leader:
            return True
        p = progress.get(node)
        # match 0: nothing acknowledged yet, an empty replica waiting for its snapshot however short the log.
        # Promoting it (or handing it the lead) would make the group wait for that snapshot to commit anything.
        if node not in live or p is None or not p.recent_active:
            return False
        return p.match > 0 and p.match >= last_index - catch_up_slack

    for node in target:  # rule 3
        if node not in voters and node not in learners and node in live:
            return AddLearner(node=node)
    dead_extras = sorted(n for n in voters - wanted if n not in live)
    for node in target:  # rule 4
        if node not in learners or not caught_up(node):
            continue
        grown = voters | {node}
        if dead_extras:
            # Swap the learner in for a dead voter that left the ring, in one joint change: both halves keep
            # a live quorum, and the group is never smaller than before (removing first would leave fewer
            # voters for a while; promoting first would let a new node that dies young wedge the group).
            swapped = grown - {dead_extras[0]}
            if has_live_quorum(swapped, live) and has_live_quorum(swapped, live - {node}):
                return PromoteVoter(node=node, replaces=dead_extras[0])
        # While a voter is down, the new voter does not count towards the live quorum it must keep: if it
        # failed right after its promotion, the group would be wedged for good.
        if has_live_quorum(grown, live) and (voters <= live or has_live_quorum(grown, live - {node})):
            return PromoteVoter(node=node)
    for node in sorted(learners - wanted):  # rule 5
        return RemoveNode(node=node, voter=False)
    extras = sorted(voters - wanted)
    if extras and wanted <= voters:  # rule 7 (rule 6: no voter leaves before every replacement votes)
        for node in extras:
            if node != leader and has_live_quorum(voters - {node}, live):
                return RemoveNode(node=node, voter=True)
        if leader in extras:
            for node in target:
                if node in voters and caught_up(node):
                    return TransferLeader(node=node)
            return Nothing(reason=f"leader {leader} must leave, but no ring target is a caught-up voter yet")
    if leader != owner and owner in voters and caught_up(owner):  # rule 8
        return TransferLeader(node=owner)
    if voters == wanted and not learners and leader == owner:
        return Nothing(reason="converged", converged=True)
    missing = [n for n in target if n not in voters]
    if missing:
        return Nothing(reason=f"waiting for ring targets {missing} to come up and catch up")
    if extras:
        return Nothing(reason=f"cannot remove {extras} yet without losing the live quorum")
    return Nothing(reason=f"waiting for owner {owner} to catch up before it takes the lead")
