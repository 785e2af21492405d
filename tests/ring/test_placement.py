"""Placement: each rule on its own, then exhaustive and property-based runs that apply steps until nothing
is left to do, checking convergence to the ring's replica set (owner leading) and live-quorum safety."""

from __future__ import annotations

import functools
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from borough.raft.records import ConfState, NodeId
from borough.ring.hashring import HashRing
from borough.ring.members import Member, MemberState, MemberTable
from borough.ring.placement import (
    AddLearner,
    Nothing,
    PromoteVoter,
    RemoveNode,
    ReplicaProgress,
    Step,
    TransferLeader,
    has_live_quorum,
    next_step,
)

from .budget import examples

LAST = 1000
NAMES = ["users", "orders:7", "p-42"]


def ids(*names: str) -> tuple[NodeId, ...]:
    return tuple(NodeId(n) for n in names)


def ring_of(*names: str) -> HashRing:
    return HashRing.from_node_ids(names)


def caught_up(*names: str) -> dict[NodeId, ReplicaProgress]:
    return {NodeId(n): ReplicaProgress(match=LAST) for n in names}


def step_for(ring: HashRing, conf: ConfState, leader: str, live: set[str], **kw: object) -> Step:
    progress = kw.pop("progress", caught_up(*conf.members()))
    return next_step(
        ring=ring,
        name=kw.pop("name", "users"),  # type: ignore[arg-type]
        conf=conf,
        leader=NodeId(leader),
        progress=progress,  # type: ignore[arg-type]
        last_index=LAST,
        live={NodeId(x) for x in live},
        conf_change_pending=kw.pop("pending", False),  # type: ignore[arg-type]
    )


# -- the rules one by one ---------------------------------------------------------------------------------------
RING5 = ring_of("a", "b", "c", "d", "e")
TARGET = RING5.replica_set("users")
OTHERS = [n for n in "abcde" if n not in TARGET]
ALL = set("abcde")


def test_converged_group_does_nothing() -> None:
    conf = ConfState(voters=TARGET)
    step = step_for(RING5, conf, TARGET[0], ALL)
    assert step == Nothing(reason="converged", converged=True)


def test_nothing_while_a_change_is_in_flight_or_joint() -> None:
    conf = ConfState(voters=TARGET[:2])
    assert isinstance(step_for(RING5, conf, TARGET[0], ALL, pending=True), Nothing)
    joint = ConfState(voters=TARGET, voters_outgoing=TARGET[:2], auto_leave=True)
    assert "in flight" in step_for(RING5, joint, TARGET[0], ALL).reason  # type: ignore[union-attr]


def test_missing_target_is_added_as_learner_then_promoted_when_caught_up() -> None:
    conf = ConfState(voters=TARGET[:2])
    assert step_for(RING5, conf, TARGET[0], ALL) == AddLearner(node=TARGET[2])
    conf = AddLearner(node=TARGET[2]).target_conf(conf)
    lagging = {**caught_up(*TARGET[:2]), TARGET[2]: ReplicaProgress(match=LAST - 500)}
    waiting = step_for(RING5, conf, TARGET[0], ALL, progress=lagging)
    assert isinstance(waiting, Nothing) and not waiting.converged
    step = step_for(RING5, conf, TARGET[0], ALL)
    assert step == PromoteVoter(node=TARGET[2])
    assert isinstance(step, PromoteVoter)
    joint = step.joint_conf(conf)
    assert joint.joint and set(joint.voters) == set(TARGET) and set(joint.voters_outgoing) == set(TARGET[:2])
    assert joint.auto_leave and step.target_conf(conf) == ConfState(voters=TARGET)


def test_an_empty_replica_is_never_caught_up_however_short_the_log() -> None:
    """A new replica of a partition whose log is a few entries long (the data was loaded in big entries) gets a
    snapshot: until it holds one (match 0) it is neither promoted nor handed the lead; then it is."""
    short = 20  # well within the slack of the leader's last index
    owner, leader, new = TARGET

    def step(conf: ConfState, behind: str, match: int) -> Step:
        progress = {NodeId(n): ReplicaProgress(match=match if n == behind else short) for n in TARGET}
        return next_step(
            ring=RING5, name="users", conf=conf, leader=NodeId(leader), progress=progress, last_index=short,
            live={NodeId(x) for x in ALL}, conf_change_pending=False,
        )  # fmt: skip

    learning = ConfState(voters=(owner, leader), learners=(new,))
    assert not isinstance(step(learning, new, 0), PromoteVoter)
    assert step(learning, new, short - 5) == PromoteVoter(node=new)
    all_voters = ConfState(voters=TARGET)
    assert isinstance(step(all_voters, owner, 0), Nothing)
    assert step(all_voters, owner, short - 5) == TransferLeader(node=owner)


def test_inactive_learner_is_not_promoted() -> None:
    conf = ConfState(voters=TARGET[:2], learners=TARGET[2:])
    progress = {**caught_up(*TARGET[:2]), TARGET[2]: ReplicaProgress(match=LAST, recent_active=False)}
    assert isinstance(step_for(RING5, conf, TARGET[0], ALL, progress=progress), Nothing)


def test_extra_voter_is_removed_only_after_its_replacement_is_a_voter() -> None:
    extra = OTHERS[0]
    conf = ConfState(voters=(*TARGET[:2], extra))
    assert step_for(RING5, conf, TARGET[0], ALL) == AddLearner(node=TARGET[2])
    conf = ConfState(voters=(*TARGET[:2], extra), learners=TARGET[2:])
    assert step_for(RING5, conf, TARGET[0], ALL) == PromoteVoter(node=TARGET[2])
    conf = ConfState(voters=(*TARGET, extra))
    assert step_for(RING5, conf, TARGET[0], ALL) == RemoveNode(node=NodeId(extra), voter=True)


def test_a_learner_is_swapped_in_for_a_dead_voter_in_one_joint_change() -> None:
    dead = OTHERS[0]
    conf = ConfState(voters=(*TARGET[:2], dead))
    live = ALL - {dead}
    # Adding the learner first is free; then it replaces the dead voter in one joint change, so the group never
    # has fewer voters than before (removing first would leave two; promoting first would let a new node that
    # dies young wedge four).
    assert step_for(RING5, conf, TARGET[0], live) == AddLearner(node=TARGET[2])
    conf = ConfState(voters=(*TARGET[:2], dead), learners=TARGET[2:])
    step = step_for(RING5, conf, TARGET[0], live)
    assert step == PromoteVoter(node=TARGET[2], replaces=NodeId(dead))
    joint = step.joint_conf(conf)
    assert set(joint.voters) == set(TARGET) and set(joint.voters_outgoing) == {*TARGET[:2], dead}
    assert not joint.learners


def test_a_voter_the_ring_left_is_swapped_out_never_removed_before_its_replacement_votes() -> None:
    """A voter the ring moved past that does not answer (paused, cut off, even declared DEAD) may answer again:
    it is swapped out for its replacement in one joint change, or waits, but the group is never left with two
    voters for it (fuzz seed 419: a paused voter was removed, and the kill of another wedged the group; seed
    5750: the same with a voter declared DEAD that came back)."""
    doubted = OTHERS[0]
    conf = ConfState(voters=(*TARGET[:2], doubted))
    live = ALL - {doubted}
    assert step_for(RING5, conf, TARGET[0], live) == AddLearner(node=TARGET[2])
    # Its replacement is down too: nothing can take its place, and it stays.
    waiting = step_for(RING5, conf, TARGET[0], live - {TARGET[2]})
    assert isinstance(waiting, Nothing) and not waiting.converged
    learning = ConfState(voters=(*TARGET[:2], doubted), learners=TARGET[2:])
    step = step_for(RING5, learning, TARGET[0], live)
    assert step == PromoteVoter(node=TARGET[2], replaces=NodeId(doubted))


def test_a_learner_is_promoted_only_if_the_group_survives_its_failure() -> None:
    # Voters T0, T1 and T2 with T2 dead (not yet replaced): promoting the learner would make 4 voters whose
    # quorum of 3 needs the new node itself, so a new node that dies young would wedge the group for good.
    conf = ConfState(voters=TARGET, learners=(OTHERS[0],))
    live = ALL - {TARGET[2]}
    assert has_live_quorum(set(TARGET), set(live))
    assert not isinstance(step_for(RING5, conf, TARGET[0], live), PromoteVoter)


def test_extra_learner_is_removed() -> None:
    conf = ConfState(voters=TARGET, learners=(OTHERS[0],))
    assert step_for(RING5, conf, TARGET[0], ALL) == RemoveNode(node=NodeId(OTHERS[0]), voter=False)
    assert RemoveNode(node=NodeId(OTHERS[0]), voter=False).joint_conf(conf) == ConfState(voters=TARGET)


def test_no_step_without_a_live_quorum() -> None:
    conf = ConfState(voters=TARGET)
    step = step_for(RING5, conf, TARGET[0], {TARGET[0], *OTHERS})
    assert isinstance(step, Nothing) and "quorum" in step.reason


def test_removal_that_would_lose_the_live_quorum_is_refused() -> None:
    # Voters a..e, the ring target is 3 of them and two of those are dead: 3 live of 5. Removing either live
    # extra would leave 2 live of 4, so placement waits (for the table to replace the dead targets).
    conf = ConfState(voters=ids(*"abcde"))
    dead = set(TARGET[1:])
    step = step_for(RING5, conf, TARGET[0], ALL - dead)
    assert isinstance(step, Nothing) and "quorum" in step.reason
    # With only one dead target both extras can go, one at a time.
    dead = {TARGET[1]}
    step = step_for(RING5, conf, TARGET[0], ALL - dead)
    assert step == RemoveNode(node=NodeId(OTHERS[0]), voter=True)
    conf = step.target_conf(conf)
    assert step_for(RING5, conf, TARGET[0], ALL - dead) == RemoveNode(node=NodeId(OTHERS[1]), voter=True)


def test_leadership_moves_to_the_owner_when_it_is_caught_up() -> None:
    conf = ConfState(voters=TARGET)
    lagging = {**caught_up(*TARGET), TARGET[0]: ReplicaProgress(match=0)}
    assert isinstance(step_for(RING5, conf, TARGET[1], ALL, progress=lagging), Nothing)
    assert step_for(RING5, conf, TARGET[1], ALL) == TransferLeader(node=TARGET[0])
    assert isinstance(step_for(RING5, conf, TARGET[1], ALL - {TARGET[0]}), Nothing)


def test_leader_outside_the_ring_set_hands_over_before_it_is_removed() -> None:
    leader = OTHERS[0]
    conf = ConfState(voters=(*TARGET, leader))
    assert step_for(RING5, conf, leader, ALL) == TransferLeader(node=TARGET[0])
    lagging = {**caught_up(*conf.voters), TARGET[0]: ReplicaProgress(match=0)}
    assert step_for(RING5, conf, leader, ALL, progress=lagging) == TransferLeader(node=TARGET[1])


def test_no_leader_or_empty_ring() -> None:
    conf = ConfState(voters=ids("a"))
    assert isinstance(step_for(RING5, conf, "zz", ALL), Nothing)
    empty = HashRing([])
    assert step_for(empty, conf, "a", ALL) == Nothing(reason="the ring has no members")


def test_has_live_quorum() -> None:
    assert has_live_quorum(ids("a", "b", "c"), set(ids("a", "b")))
    assert not has_live_quorum(ids("a", "b", "c", "d"), set(ids("a", "b")))
    assert not has_live_quorum((), set(ids("a")))


# -- running steps to the end ------------------------------------------------------------------------------------
def apply_until_done(
    ring: HashRing,
    name: str,
    conf: ConfState,
    leader: NodeId,
    live: frozenset[NodeId],
    lagging: frozenset[NodeId] = frozenset(),
) -> tuple[ConfState, NodeId, list[Step], Nothing]:
    """Apply placement's steps as the leader would, letting live replicas catch up whenever placement waits.
    Checks, at every step: one change at a time, the leader is never removed, live quorum kept."""
    progress = {n: ReplicaProgress(match=LAST if n in live and n not in lagging else 0) for n in conf.members()}
    had_quorum = has_live_quorum(conf.voters, live | {leader})
    bound = 2 * ring.replicas + len(conf.members()) + 3
    steps: list[Step] = []
    while True:
        step = next_step(
            ring=ring,
            name=name,
            conf=conf,
            leader=leader,
            progress=progress,
            last_index=LAST,
            live=live,
            conf_change_pending=False,
        )
        if isinstance(step, Nothing):
            if step.converged:
                return conf, leader, steps, step
            behind = [n for n in conf.members() if n in live and progress[n].match < LAST]
            if not behind:
                return conf, leader, steps, step
            for n in behind:  # the replicas catch up (snapshot, then log)
                progress[n] = ReplicaProgress(match=LAST)
            continue
        assert had_quorum, f"a step {step} without a live quorum in {conf}"
        steps.append(step)
        assert len(steps) <= bound, steps
        new = step.target_conf(conf)
        halves = [new.voters]
        if isinstance(step, PromoteVoter | RemoveNode):
            joint = step.joint_conf(conf)
            halves += [joint.voters_outgoing] if joint.joint else []
        for half in halves:
            assert has_live_quorum(half, live | {leader}), (step, conf, sorted(live))
        assert leader in new.voters, (step, conf)
        if isinstance(step, RemoveNode) and step.voter:
            # A voter leaves only once every ring target votes (or in the joint change that swaps its replacement
            # in): the group never drops below its ring replica set (fuzz seeds 419 and 5750).
            assert set(ring.replica_set(name)) <= set(new.voters), (step, conf, sorted(live))
        # While the change is in flight (and while its joint configuration lasts) placement waits.
        in_flight = next_step(
            ring=ring,
            name=name,
            conf=conf,
            leader=leader,
            progress=progress,
            last_index=LAST,
            live=live,
            conf_change_pending=True,
        )
        assert isinstance(in_flight, Nothing)
        if isinstance(step, PromoteVoter | RemoveNode) and step.joint_conf(conf).joint:
            joint_wait = next_step(
                ring=ring,
                name=name,
                conf=step.joint_conf(conf),
                leader=leader,
                progress=progress,
                last_index=LAST,
                live=live,
                conf_change_pending=False,
            )
            assert isinstance(joint_wait, Nothing)
        if isinstance(step, AddLearner):
            progress[step.node] = ReplicaProgress(match=0)  # a new replica starts empty
        if isinstance(step, TransferLeader):
            assert step.node in conf.voters and step.node in live and progress[step.node].match == LAST
            leader = step.node
        conf = new


def test_a_joining_owner_takes_over_from_a_leader_that_leaves_the_replica_set() -> None:
    """The whole hand-over, step by step: d joins the ring and owns p5, whose leader c drops out of it."""
    before, after = ring_of("a", "b", "c"), ring_of("a", "b", "c", "d")
    assert before.replica_set("p5") == ids("b", "a", "c") and after.replica_set("p5") == ids("d", "b", "a")
    conf = ConfState(voters=ids("a", "b", "c"))
    final, leader, steps, last = apply_until_done(after, "p5", conf, NodeId("c"), frozenset(ids(*"abcd")))
    assert steps == [
        AddLearner(node=NodeId("d")),
        PromoteVoter(node=NodeId("d")),  # c, leaving, still votes until d can replace it
        TransferLeader(node=NodeId("d")),  # c must not remove itself while leading
        RemoveNode(node=NodeId("c"), voter=True),
    ]
    assert final == ConfState(voters=ids("a", "b", "d")) and leader == "d" and last.converged


def test_a_dead_member_is_replaced_without_ever_losing_the_quorum() -> None:
    ring = ring_of("a", "b", "d")  # c was marked DEAD in the table and left the ring
    conf = ConfState(voters=ids("a", "b", "c"))
    final, leader, steps, _ = apply_until_done(ring, "p5", conf, NodeId("b"), frozenset(ids("a", "b", "d")))
    assert steps[0] == AddLearner(node=NodeId("d"))
    # The replacement takes the dead voter's place in one joint change, once it caught up; the dead voter is not
    # removed first (the group would have two voters meanwhile: fuzz --nodes 5 --topology --client-faults seed
    # 885 lost a second voter during that removal's joint change, and the group was wedged for good).
    assert PromoteVoter(node=NodeId("d"), replaces=NodeId("c")) in steps
    assert RemoveNode(node=NodeId("c"), voter=True) not in steps
    assert set(final.voters) == set(ids("a", "b", "d")) and leader == ring.owner("p5")


STATES = [MemberState.ACTIVE, MemberState.LEAVING, MemberState.DEAD, None]  # None: not in the table


@functools.cache
def ring_for(states: tuple[MemberState | None, ...]) -> HashRing:
    members = [
        Member(node_id=NodeId(f"n{i}"), address=f"n{i}:1", state=s) for i, s in enumerate(states) if s is not None
    ]
    return HashRing(MemberTable(version=1, members=members))


def check_universe(states: tuple[MemberState | None, ...], roles: tuple[int, ...], name: str) -> int:
    """One starting point: ``states`` is the member table, ``roles`` each node's place in the configuration
    (0 absent, 1 learner, 2 voter). Live = in the table and not DEAD. Returns the number of runs checked."""
    nodes = [NodeId(f"n{i}") for i in range(len(states))]
    live = frozenset(n for n, s in zip(nodes, states, strict=True) if s is not None and s is not MemberState.DEAD)
    conf = ConfState(
        voters=[n for n, r in zip(nodes, roles, strict=True) if r == 2],
        learners=[n for n, r in zip(nodes, roles, strict=True) if r == 1],
    )
    ring = ring_for(states)
    target = ring.replica_set(name)
    runs = 0
    for leader in [v for v in conf.voters if v in live]:
        final, final_leader, steps, last = apply_until_done(ring, name, conf, leader, live)
        runs += 1
        if not has_live_quorum(conf.voters, live):
            assert steps == [] and not last.converged
        elif target and set(target) <= live:
            assert set(final.voters) == set(target) and not final.learners, (states, roles, leader, steps, last)
            assert final_leader == target[0] and last.converged
    return runs


def test_exhaustive_four_nodes() -> None:
    """Every member table over 4 nodes (active, leaving, dead, absent), every configuration of voters and
    learners, every live leader, three partition names."""
    runs = 0
    for states in itertools.product(STATES, repeat=4):
        for roles in itertools.product(range(3), repeat=4):
            if 2 in roles:
                for name in NAMES:
                    runs += check_universe(states, roles, name)
    assert runs > 40_000


def test_exhaustive_four_nodes_when_the_failure_detector_disagrees_with_the_table() -> None:
    """Every table of ACTIVE or absent members over 4 nodes, every live set (SWIM may doubt an ACTIVE member
    or trust one the table dropped), every configuration and live leader: safety always, convergence when
    the ring targets are live."""
    nodes = [NodeId(f"n{i}") for i in range(4)]
    runs = 0
    for states in itertools.product([MemberState.ACTIVE, None], repeat=4):
        ring = ring_for(states)
        target = ring.replica_set("users")
        for alive in itertools.product([True, False], repeat=4):
            live = frozenset(n for n, a in zip(nodes, alive, strict=True) if a)
            for roles in itertools.product(range(3), repeat=4):
                voters = [n for n, r in zip(nodes, roles, strict=True) if r == 2]
                conf = ConfState(voters=voters, learners=[n for n, r in zip(nodes, roles, strict=True) if r == 1])
                for leader in [v for v in voters if v in live]:
                    final, final_leader, steps, last = apply_until_done(ring, "users", conf, leader, live)
                    runs += 1
                    if not has_live_quorum(conf.voters, live):
                        assert steps == []
                    elif target and set(target) <= live:
                        assert set(final.voters) == set(target) and not final.learners and last.converged
                        assert final_leader == target[0]
    assert runs > 13_000


@pytest.mark.soak
def test_exhaustive_five_nodes() -> None:
    """The same over 5 nodes (up to 5 voters). BOROUGH_SOAK=1 runs all ~207,000 runs; otherwise a
    fixed stride through them, so CI still covers every kind of table and configuration."""
    stride = 1 if os.environ.get("BOROUGH_SOAK") == "1" else 97
    runs = 0
    universe = (
        (states, roles)
        for states in itertools.product(STATES, repeat=5)
        for roles in itertools.product(range(3), repeat=5)
        if 2 in roles
    )
    for states, roles in itertools.islice(universe, 0, None, stride):
        runs += check_universe(states, roles, NAMES[sum(roles) % 3])
    assert runs > 200_000 // stride


@settings(max_examples=examples(200, soak_divisor=2))
@given(
    n=st.integers(min_value=1, max_value=6),
    data=st.data(),
    name=st.text(min_size=1, max_size=12),
)
def test_property_six_nodes_any_liveness(n: int, data: st.DataObject, name: str) -> None:
    """Any table, any configuration of up to 5 voters plus learners, any live set (the failure detector may
    disagree with the table), replicas lagging: safety always; convergence whenever the targets are live."""
    nodes = [NodeId(f"n{i}") for i in range(n)]
    states = tuple(data.draw(st.sampled_from(STATES), label=f"state n{i}") for i in range(n))
    voters = data.draw(st.lists(st.sampled_from(nodes), min_size=1, max_size=5, unique=True), label="voters")
    learners = data.draw(
        st.lists(st.sampled_from([x for x in nodes if x not in voters] or nodes), unique=True), label="learners"
    )
    learners = [x for x in learners if x not in voters]
    live = frozenset(data.draw(st.sets(st.sampled_from(nodes)), label="live"))
    leader = data.draw(st.sampled_from(voters), label="leader")
    lagging = frozenset(data.draw(st.sets(st.sampled_from(nodes)), label="lagging"))
    live = live | {leader}
    conf = ConfState(voters=voters, learners=learners)
    ring = ring_for(states)
    final, final_leader, steps, last = apply_until_done(ring, name, conf, leader, live, lagging)
    target = ring.replica_set(name)
    if has_live_quorum(conf.voters, live) and target and set(target) <= live:
        assert set(final.voters) == set(target) and not final.learners
        assert final_leader == target[0] and last.converged
    if not has_live_quorum(conf.voters, live):
        assert steps == []
