"""Checks of a simulated run after healing: acknowledged writes kept, replicas equal, leaders elected in time.

Owns the pure checks (``lost_writes`` over a history and the values read at the end; ``divergent_replicas``
over what each replica holds; ``member_problems`` over the member table), ``check_leaders``, which heals a
``SimCluster`` (every fault undone, every node that is not removed running) and waits, within a bound, for every
partition to have a leader, ``check_replicas``, which waits, within a bound, for replicas to catch up and
compares them, ``check_members``, and ``check_placement`` (every partition where the ring
puts it). Each check returns human-readable problems (empty: passed); none raises.
Linearizability itself is ``borough.testing.linearizability``'s. Must not know fault schedules.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import attrs
import trio

from borough.node.system_state import SYSTEM
from borough.testing.history import NOT_FOUND, History, Kind, Operation, Status

__all__ = [
    "ClusterCheck",
    "check_leaders",
    "check_members",
    "check_placement",
    "check_replicas",
    "created_partitions",
    "divergent_replicas",
    "heal_all",
    "lost_writes",
    "placement_problems",
    "member_problems",
    "partitions_of",
]


def _writes_value(op: Operation, value: object) -> bool:
    """Whether ``op`` may have left ``value`` in its key (if it took effect)."""
    if op.status is Status.FAILED:
        return False
    if op.kind is Kind.DELETE:
        return value is NOT_FOUND
    if op.kind is Kind.PUT:
        return value is not NOT_FOUND and op.value == value
    if op.kind is Kind.CAS:
        if op.status is Status.OK and op.result is not True:
            return False
        return value is not NOT_FOUND and op.value == value
    return False


def _acknowledged(op: Operation) -> bool:
    if op.status is not Status.OK:
        return False
    if op.kind is Kind.CAS:
        return op.result is True
    return op.kind in (Kind.PUT, Kind.DELETE)


def lost_writes(history: History | Iterable[Operation], final: Mapping[Hashable, object]) -> list[str]:
    """Acknowledged writes that the values read at the end (``final``: key -> value or NOT_FOUND) contradict.

    A write is lost when every write that could have left the final value (and, for NOT_FOUND, the initial
    absence) certainly finished before that acknowledged write began: then the acknowledged write must have been
    overwritten by nothing, yet it is gone. A final value that no write produced is reported too. Values must be
    unique per key for this to name the right writes."""
    ops = list(history)
    by_key: dict[Hashable, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    problems = []
    for key, value in final.items():
        key_ops = by_key.get(key, [])
        writers = [op for op in key_ops if _writes_value(op, value)]
        if value is not NOT_FOUND and not writers:
            problems.append(f"key {key!r}: the final read returned {value!r}, which no write of this history wrote")
            continue
        for acked in (op for op in key_ops if _acknowledged(op)):
            if acked in writers:
                continue
            # (For NOT_FOUND the initial absence is one more source, and it is before everything.)
            if all(
                w.status is Status.OK and w.completed_at is not None and w.completed_at < acked.invoked_at
                for w in writers
            ):
                source = ", ".join(f"#{w.id}" for w in writers) or "the initial absence"
                problems.append(
                    f"acknowledged write lost: {acked.describe()}; the final read returned {value!r}, left by "
                    f"{source}, which finished before it began"
                )
    return problems


def divergent_replicas(states: Mapping[int, tuple[int, list[tuple[Any, bytes]]]], partition: str) -> list[str]:
    """Problems if the replicas of ``partition`` (node index -> (applied index, items)) do not hold equal data."""
    if len(states) < 2:
        return []
    reference_node = min(states)
    _, reference = states[reference_node]
    problems = []
    for index, (applied, items) in sorted(states.items()):
        if items != reference:
            ours = dict(reference)
            theirs = dict(items)
            differing = sorted(
                (k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)), key=lambda k: repr(k)
            )[:5]
            problems.append(
                f"partition {partition!r}: node {index} (applied {applied}) differs from node {reference_node} "
                f"(applied {states[reference_node][0]}) at keys {differing}"
            )
    return problems


def partitions_of(sim: Any) -> list[str]:
    """``_system`` and every partition registered in the directory, as any running ``_system`` replica knows it."""
    names = {SYSTEM}
    for sim_node in sim.running():
        replica = sim_node.node.replicas.get(SYSTEM) if sim_node.node is not None else None
        if replica is not None:
            names.update(replica.machine.state.directory)
    return sorted(names)


async def heal_all(sim: Any) -> None:
    """Undo every fault: links healed, latencies back to default, paused nodes resumed, every node that is
    down and not removed restarted."""
    sim.heal()
    sim.reset_latency()
    for sim_node in sim.nodes:
        if sim_node.paused:
            sim.resume(sim_node.index)
    for sim_node in sim.nodes:
        if not sim_node.up and not sim_node.removed and not sim_node.booting:
            await sim.restart(sim_node.index)


@attrs.frozen(kw_only=True)
class ClusterCheck:
    """What a check of the healed cluster found: problems (empty: every check passed) and how long leaders took."""

    problems: tuple[str, ...]
    leader_wait: float | None  # virtual seconds from healing until every partition had a leader (None: not in bound)
    partitions: tuple[str, ...]


def created_partitions(sim: Any) -> list[str]:
    """Partitions of the directory whose Raft group exists: some running node hosts a replica of it. (A group is
    created when a request first reaches one of its voters, so a partition registered by a request that then
    failed has none until it is used again.)"""
    hosted = {name for n in sim.running() if n.node is not None for name in n.node.replicas}
    return [p for p in partitions_of(sim) if p in hosted]


async def check_leaders(sim: Any, *, leader_bound: float = 15.0) -> ClusterCheck:
    """Heal ``sim`` (``heal_all``) and check that every created partition has a leader that a quorum of its
    voters recognises within ``leader_bound`` virtual seconds."""
    await heal_all(sim)
    partitions = created_partitions(sim)
    leader_wait: float | None = None
    with trio.move_on_after(leader_bound):
        leader_wait = await sim.wait_for_leaders(partitions)
    if leader_wait is not None:
        return ClusterCheck(problems=(), leader_wait=leader_wait, partitions=tuple(partitions))
    stuck = [p for p in partitions if sim.leader_replica(p) is None]
    problem = f"no leader within {leader_bound:g} s after healing for partitions {stuck}\n{sim.describe()}"
    return ClusterCheck(problems=(problem,), leader_wait=None, partitions=tuple(partitions))


async def check_replicas(sim: Any, *, converge_bound: float = 30.0) -> list[str]:
    """Within ``converge_bound`` virtual seconds, every partition's running replicas (members of its leader's
    configuration) have applied the leader's commit index and hold equal data; else the problems."""
    partitions = partitions_of(sim)
    with trio.move_on_after(converge_bound):
        while True:
            await sim.wait_converged(partitions)
            diverging = [problem for p in partitions for problem in divergent_replicas(sim.replica_states(p), p)]
            if not diverging:
                return []
            await trio.sleep(0.5)  # replicas at different applied indexes may still be catching up
    problems = [problem for p in partitions for problem in divergent_replicas(sim.replica_states(p), p)]
    if not problems:
        problems.append(f"replicas did not catch up with their leaders within {converge_bound:g} s")
    problems[-1] += "\n" + sim.describe()
    return problems


def member_problems(sim: Any) -> list[str]:
    """Differences between the member table (as ``_system``'s leader has applied it) and the cluster: every
    node that was not removed must be ACTIVE, every removed one must not be. Empty when they agree (or when
    ``_system`` has no leader: ``check_leaders`` reports that)."""
    leader = sim.leader_replica(SYSTEM)
    if leader is None:
        return []
    table = leader.machine.state.members
    problems = []
    for sim_node in sim.nodes:
        if sim_node.node_id is None:
            continue
        member = table.get(sim_node.node_id)
        state = member.state.name if member is not None else "absent"
        if sim_node.removed and state == "ACTIVE":
            problems.append(f"node {sim_node.index} was removed but is ACTIVE in the member table")
        elif not sim_node.removed and state != "ACTIVE":
            problems.append(f"node {sim_node.index} runs but is {state} in the member table (version {table.version})")
    return problems


async def check_members(sim: Any, *, bound: float = 30.0) -> list[str]:
    """Within ``bound`` virtual seconds of healing, the member table agrees with the cluster
    (``member_problems``): a live node wrongly declared dead must come back."""
    with trio.move_on_after(bound):
        while True:  # polled: the member table changes inside the nodes, with no event to wait on
            if not member_problems(sim):
                return []
            await trio.sleep(0.25)
    problems = member_problems(sim)
    if problems:
        problems[-1] += "\n" + sim.describe()
    return problems


def placement_problems(sim: Any, partitions: Iterable[str] | None = None) -> list[str]:
    """Where partitions are not yet where the ring puts them: for each one (default: every registered
    partition and ``_system``), its leader's configuration must be exactly the ring's replica set (as voters, no
    learners, not joint), the ring owner must lead, and no other running node may still hold a replica."""
    problems = []
    for name in sorted(partitions_of(sim) if partitions is None else partitions):
        leader = sim.leader_replica(name)
        if leader is None:
            problems.append(f"{name}: no leader")
            continue
        node = sim[sim.index_of(leader.host.node_id)]
        wanted = node.directory.ring().replica_set(name)
        conf = leader.status().conf_state
        if set(conf.voters) != set(wanted) or conf.learners or conf.voters_outgoing or conf.learners_next:
            voters, learners = sorted(conf.voters), sorted(conf.learners)
            problems.append(f"{name}: voters {voters} learners {learners}, ring {sorted(wanted)}")
        elif wanted and leader.host.node_id != wanted[0]:
            problems.append(f"{name}: led by {leader.host.node_id}, the ring owner is {wanted[0]}")
        for sim_node in sim.running():
            if sim_node.node_id not in wanted and name in sim_node.node.replicas:
                problems.append(f"{name}: node {sim_node.index} still holds a replica")
    return problems


async def check_placement(sim: Any, *, bound: float = 60.0, partitions: Iterable[str] | None = None) -> list[str]:
    """Within ``bound`` virtual seconds, every partition is where the ring puts it (``placement_problems``)."""
    names = None if partitions is None else list(partitions)
    with trio.move_on_after(bound):
        while True:  # polled: configurations change inside the nodes, with no event to wait on
            if not placement_problems(sim, names):
                return []
            await trio.sleep(0.5)
    return placement_problems(sim, names)
