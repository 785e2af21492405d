"""Scenarios: a seed, a workload and a fault schedule, run on a ``SimCluster`` and checked; replayable as data.

Owns the ``Scenario`` record (plain data, with a JSON form, so a failing one can be saved, printed and replayed),
the fault vocabulary (``Fault``) and how a schedule is applied (``run_faults``: robust to any order, so that any
schedule Hypothesis makes or shrinks is valid), how the workload's clients run, ``play`` (the whole run: the
fault schedule and the clients together; as soon as the schedule ends, every fault is undone and every partition
must have a leader within a bound; once the clients are done, every key is read once more, and the replicas, the
member table, linearizability and lost writes are checked, and, when the schedule changes the topology (``add``,
``decommission``, ``kill``), that every partition ends up where the ring puts it), ``run_scenario`` (one trio run
on virtual time), ``random_scenario`` (a scenario that is a function of one seed, for soak runs) and the failure
report with the command that replays it.

Topology steps keep the cluster able to recover: ``decommission`` and ``kill`` are no-ops (recorded in the trace as
skipped) unless at least ``min_nodes`` (3, or the ``replicas`` setting if larger) members that are neither removed
nor being drained remain, and every configuration of every running replica keeps a majority of voters that are
neither removed nor the target (a node being drained still counts: it runs until no group lists it). So no node
that is the last holder of anything, or one of the last of a quorum, ever leaves, whatever else the schedule does.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shlex
import sys
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import attrs
import trio
import trio.testing

from borough.errors import BoroughError
from borough.request import Handler
from borough.testing.checks import (
    ClusterCheck,
    check_leaders,
    check_members,
    check_placement,
    check_replicas,
    lost_writes,
    partitions_of,
)
from borough.testing.history import NOT_FOUND, History, Status
from borough.testing.linearizability import CheckResult, check
from borough.testing.sim import SimCluster, SimNode
from borough.testing.workload import ClientOps, cas_handler

__all__ = [
    "FAULTS",
    "TOPOLOGY",
    "Fault",
    "Scenario",
    "ScenarioFailed",
    "ScenarioResult",
    "Step",
    "play",
    "random_scenario",
    "run_faults",
    "run_scenario",
    "run_simulation",
]

T = TypeVar("T")

#: Fault names and their arguments (node indexes are taken modulo the cluster's size when applied).
FAULTS: Final = {
    "crash": "node",  # power cut: unsynced writes lost; a no-op if it is down
    "restart": "node",  # boot it again on its disk, in the background; a no-op if it is up or removed
    "pause": "node",  # SIGSTOP
    "resume": "node",
    # Paused and cut off from the other nodes (not from clients), resumed `seconds` later still cut off (a `heal`
    # reconnects it): a lease leader's worst case, it hears of no newer term while its clients' reads reach it.
    "stall": "node, seconds",
    "isolate": "node",
    "rst": "node",  # reset every connection of the node
    "partition": "groups",  # [[0, 1], [2]]: cut every link between groups
    "cut": "a, b, one_way",
    "cut-client": "node, client, one_way",  # one_way: the client's calls arrive, the node's replies are lost
    "latency": "a, b, mean, jitter",
    "heal": "",  # every cut and isolation removed
    "add": "",  # a new node joins
    "remove": "node",  # the node leaves for good (stopped and marked DEAD)
    "decommission": "node, by",  # drained through node `by`'s decommission (by < 0: a client's), then stopped
    "kill": "node",  # crash for good: never restarted (give the scenario a short dead_after)
}

#: The steps that change which machines are members (``remove`` predates placement and is not one of them): a
#: scenario with any of them also checks, after healing, that every partition is where the ring puts it.
TOPOLOGY: Final = ("add", "decommission", "kill")

#: How long, in virtual seconds after the other checks, partitions may take to reach the ring's replica sets.
PLACEMENT_BOUND: Final = 120.0
#: ``random_scenario(topology=True)``: how many nodes at most it adds, and the ``dead_after`` it sets.
MAX_ADDS: Final = 2
TOPOLOGY_DEAD_AFTER: Final = 10.0
#: How long a node that ``add`` started keeps trying to join before it is abandoned.
JOIN_BOUND: Final = 120.0
#: How long a ``decommission`` may take (draining waits for the schedule to end and the network to heal).
DRAIN_BOUND: Final = 300.0


@attrs.frozen(kw_only=True)
class Fault:
    """One step of a fault schedule: wait ``delay`` virtual seconds, then do ``name`` with ``args``."""

    delay: float
    name: str
    args: tuple[Any, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.name not in FAULTS:
            raise ValueError(f"unknown fault {self.name!r}; known: {', '.join(FAULTS)}")
        if not self.delay >= 0:
            raise ValueError(f"a fault's delay must be >= 0, not {self.delay!r}")

    def to_json(self) -> list[Any]:
        return [self.delay, self.name, *self.args]

    @classmethod
    def from_json(cls, item: Sequence[Any]) -> Fault:
        delay, name, *args = item
        return cls(delay=float(delay), name=str(name), args=tuple(_tuples(a) for a in args))


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@attrs.frozen(kw_only=True)
class Step:
    """One client operation: wait ``delay``, then ``kind`` (get, put, delete, cas) on key ``k{key}`` of partition
    ``p{partition}``. Values written are made unique when the step runs; a cas expects what this client last
    saw of the key. Odd partitions take every write through ``cas_handler``; on even ones (plain partition API)
    a cas step is a get."""

    delay: float
    kind: str
    partition: int
    key: int

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("get", "put", "delete", "cas"):
            raise ValueError(f"unknown operation {self.kind!r}: use get, put, delete or cas")

    def to_json(self) -> list[Any]:
        return [self.delay, self.kind, self.partition, self.key]

    @classmethod
    def from_json(cls, item: Sequence[Any]) -> Step:
        delay, kind, partition, key = item
        return cls(delay=float(delay), kind=str(kind), partition=int(partition), key=int(key))


@attrs.frozen(kw_only=True)
class Scenario:
    """Everything a run depends on. ``clients[i]`` is client i's steps; ``config`` is every node's settings."""

    seed: int
    nodes: int = 3
    clients: tuple[tuple[Step, ...], ...] = ()
    faults: tuple[Fault, ...] = ()
    config: tuple[tuple[str, Any], ...] = ()
    op_timeout: float = 5.0
    leader_bound: float = 15.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "seed": self.seed,
                "nodes": self.nodes,
                "clients": [[s.to_json() for s in steps] for steps in self.clients],
                "faults": [f.to_json() for f in self.faults],
                "config": dict(self.config),
                "op_timeout": self.op_timeout,
                "leader_bound": self.leader_bound,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        try:
            doc = json.loads(text)
            return cls(
                seed=int(doc["seed"]),
                nodes=int(doc["nodes"]),
                clients=tuple(tuple(Step.from_json(s) for s in steps) for steps in doc["clients"]),
                faults=tuple(Fault.from_json(f) for f in doc["faults"]),
                config=tuple(sorted(doc.get("config", {}).items())),
                op_timeout=float(doc.get("op_timeout", 5.0)),
                leader_bound=float(doc.get("leader_bound", 15.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a saved scenario: {exc!r}") from None


# --- faults ------------------------------------------------------------------------------------------------


async def apply_fault(sim: SimCluster, fault: Fault, nursery: trio.Nursery) -> None:
    """Do one fault now; whatever would be invalid (crashing a node that is down, ...) is a no-op, so every
    schedule is valid. Restarts, additions and removals run in ``nursery`` so the schedule keeps its timing."""
    n = len(sim.nodes)
    args = fault.args

    def node(i: Any) -> Any:
        return sim.nodes[int(i) % n]

    name = fault.name
    if name == "crash":
        target = node(args[0])
        if target.up:
            await sim.crash(target.index)
    elif name == "restart":
        target = node(args[0])
        nursery.start_soon(_restart_if_down, sim, target.index)
    elif name == "pause":
        target = node(args[0])
        if target.up:
            sim.pause(target.index)
    elif name == "resume":
        sim.resume(node(args[0]).index)
    elif name == "stall":
        target = node(args[0])
        if target.up and not target.paused:
            sim.pause(target.index)
            sim.partition([target.index], [s.index for s in sim.nodes if s is not target])
            nursery.start_soon(_resume_later, sim, target.index, float(args[1]))
    elif name == "isolate":
        sim.isolate(node(args[0]).index)
    elif name == "rst":
        sim.kill_connections(node(args[0]).index)
    elif name == "partition":
        groups = [sorted({int(i) % n for i in group}) for group in args[0]]
        sim.partition(*groups)
    elif name == "cut":
        a, b, one_way = node(args[0]).index, node(args[1]).index, bool(args[2])
        if a != b:
            sim.cut(a, b, one_way=one_way)
    elif name == "cut-client":
        sim.cut_client(node(args[0]).index, client_host(int(args[1])), one_way=bool(args[2]))
    elif name == "latency":
        a, b = node(args[0]).index, node(args[1]).index
        if a != b:
            sim.set_latency(a, b, float(args[2]), float(args[3]))
    elif name == "heal":
        sim.heal()
    elif name == "add":
        _topology(sim).done.append("add")
        nursery.start_soon(_add, sim)
    elif name == "remove":
        target = node(args[0])
        # Keep a majority of the original replicas of every partition: at most one node removed, never below 3.
        removed = sum(1 for s in sim.nodes if s.removed)
        if not target.removed and target.node_id is not None and removed == 0 and n - 1 >= 3:
            nursery.start_soon(sim.remove_node, target.index)
    elif name == "decommission":
        target = node(args[0])
        by = int(args[1]) if len(args) > 1 else -1
        if _may_remove(sim, target.index, "decommission"):
            _topology(sim).leaving.add(target.index)
            via = sim.nodes[by % n].index if by >= 0 else None
            nursery.start_soon(_decommission, sim, target.index, via)
    elif name == "kill":
        target = node(args[0])
        if _may_remove(sim, target.index, "kill"):
            target.removed = True  # first: nothing may restart it
            state = _topology(sim)
            state.done.append(f"kill {target.index}")
            sim.record("kill", target.index)
            if target.booting:
                nursery.start_soon(_crash_when_booted, sim, target.index)
            elif target.up:
                await sim.crash(target.index)


async def _resume_later(sim: SimCluster, index: int, seconds: float) -> None:
    await trio.sleep(seconds)
    sim.resume(index)  # (a no-op if something else resumed it, or it was crashed, meanwhile)


async def _restart_if_down(sim: SimCluster, index: int) -> None:
    # Checked when the task runs, not when it was scheduled: healing may have restarted the node meanwhile.
    target = sim.nodes[index]
    if not target.up and not target.removed and not target.booting:
        await sim.restart(index)


# --- topology steps ------------------------------------------------------------------------------------------


@attrs.define
class _Topology:
    """What a run's topology steps are doing: nodes being drained, what was done or skipped, what went wrong."""

    leaving: set[int] = attrs.Factory(set)
    done: list[str] = attrs.Factory(list)
    problems: list[str] = attrs.Factory(list)
    #: The partitions the clients write (each is registered by its first write, at a time no schedule knows).
    written: set[str] = attrs.Factory(set)


_topologies: weakref.WeakKeyDictionary[SimCluster, _Topology] = weakref.WeakKeyDictionary()


def _topology(sim: SimCluster) -> _Topology:
    state = _topologies.get(sim)
    if state is None:
        state = _topologies[sim] = _Topology()
    return state


def min_nodes(sim: SimCluster) -> int:
    """How many members must remain (neither removed nor being drained) for a ``decommission`` or ``kill``."""
    return max(3, int(sim.config.get("replicas", 3)))


def removal_refused(sim: SimCluster, index: int) -> str | None:
    """Why node ``index`` may not leave now (None: it may): see the module docstring."""
    state = _topology(sim)
    target = sim.nodes[index]
    if target.removed or index in state.leaving:
        return "already leaving"
    if target.node_id is None:
        return "never joined"
    remaining = [
        n for n in sim.nodes if not n.removed and n.index not in state.leaving and n.node_id and n.index != index
    ]
    if len(remaining) < min_nodes(sim):
        return f"only {len(remaining)} members would remain"
    # (A node being drained still counts: it runs, and serves, until no group lists it.)
    gone = {n.node_id for n in sim.nodes if n.removed or n.index == index}
    hosted: set[str] = set()
    for sim_node in sim.running():
        assert sim_node.node is not None
        for name, replica in sim_node.node.replicas.items():
            hosted.add(name)
            conf = replica.status().conf_state
            # (Its learners too: one may be promoted at any time, and a joint configuration whose incoming half
            # counts it and a node already gone needs a majority of that half.)
            for voters in (conf.voters, conf.voters_outgoing, (*conf.voters, *conf.learners)):
                if voters and sum(1 for v in voters if v not in gone) <= len(voters) // 2:
                    return f"{name} on node {sim_node.index} would keep no majority of {len(voters)} voters"
    registered = partitions_of(sim)
    unseen = [name for name in registered if name not in hosted]
    if unseen:
        return f"no running replica of {unseen[0]} to judge it by"
    # A partition not registered yet may be registered right after this check, on the voters the ring gives it
    # now, which may include the node leaving and one already gone (the member table lists both until they are
    # declared dead): it would be wedged from birth. Every running node's ring counts: whichever leads `_system`
    # registers it, on the table it has (one that saw a node's join first places partitions on that node).
    for sim_node in sim.running():
        assert sim_node.node is not None
        ring = sim_node.node.directory.ring()
        for name in sorted(state.written.difference(registered)):
            voters = ring.replica_set(name)
            if voters and sum(1 for v in voters if v not in gone) <= len(voters) // 2:
                return f"{name}, not registered yet, would be placed on no majority of live voters"
    return None


def _may_remove(sim: SimCluster, index: int, step: str) -> bool:
    reason = removal_refused(sim, index)
    if reason is not None:
        sim.record("skip", step, index, reason)
        _topology(sim).done.append(f"{step} {index} skipped: {reason}")
    return reason is None


async def _add(sim: SimCluster) -> None:
    """A new machine joins. If its join fails (it gives up after its request timeout when ``_system`` cannot
    answer, e.g. during a partition), it is booted again every second, as an operator would, until it joins or
    something else (healing, a ``restart`` step) booted it; after ``JOIN_BOUND`` the machine is abandoned."""
    index = len(sim.nodes)  # the index add_node gives it (it appends before its first checkpoint)
    if await _try_boot(sim.add_node):
        return
    with trio.move_on_after(JOIN_BOUND):
        while True:
            sim.record("add-retry", index)
            await trio.sleep(1.0)
            target = sim.nodes[index]
            if target.up or target.booting or target.removed:
                return
            if await _try_boot(functools.partial(sim.restart, index)):
                return
    sim.nodes[index].removed = True
    _topology(sim).done.append(f"add {index} abandoned: it could not join within {JOIN_BOUND:g} s")


async def _try_boot(boot: Callable[[], Awaitable[object]]) -> bool:
    failed = False
    try:
        await boot()
    except* BoroughError:
        failed = True
    return not failed


def wedged_groups(sim: SimCluster) -> list[str]:
    """Groups that can never commit again: a running replica's configuration (voters, or the outgoing voters of
    a joint one) where at most half the voters are nodes that still exist (not removed). Each says
    ``WEDGED``. (The removal guard never kills or drains a voter into this; a group gets here when placement
    changed its configuration afterwards, e.g. promoting a learner that had just been killed.)"""
    removed = {n.node_id for n in sim.nodes if n.removed}
    found: dict[str, str] = {}
    for sim_node in sim.running():
        assert sim_node.node is not None
        for name, replica in sim_node.node.replicas.items():
            conf = replica.status().conf_state
            for voters in (conf.voters, conf.voters_outgoing):
                gone = [sim._short(v) for v in voters if v in removed]
                if voters and len(voters) - len(gone) <= len(voters) // 2 and name not in found:
                    found[name] = (
                        f"{name}: {WEDGED}: {len(gone)} of its {len(voters)} voters "
                        f"[{', '.join(sim._short(v) for v in voters)}] are gone for good ({', '.join(gone)})"
                        + (" in a joint configuration" if conf.joint else "")
                    )
    return [found[name] for name in sorted(found)]


async def _booted(sim: SimCluster, index: int) -> None:
    while True:  # polled: a boot has no event to wait on
        if not sim.nodes[index].booting:
            return
        await trio.sleep(0.05)


async def _crash_when_booted(sim: SimCluster, index: int) -> None:
    await _booted(sim, index)
    if sim.nodes[index].up:
        await sim.crash(index)


#: Said of a decommission that did not finish when its node restarted meanwhile (as in
#: tests/testing/scenarios/decommission-restart-578.json, before a restarted LEAVING node stayed LEAVING).
RESTARTED_WHILE_DRAINED: Final = "the node restarted while it was being drained"

#: Said of a group left with no majority of voters that still exist (``wedged_groups``), as in
#: tests/testing/scenarios/promoted-dead-learner-165.json and stale-member-table-352.json.
WEDGED: Final = "wedged, no majority of its voters can ever answer again"

_DRAIN_ERRORS = (BoroughError, OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError)


async def _try_decommission(sim: SimCluster, node_id: str, by: SimNode | None, host: str) -> str | None:
    """One ``decommission`` call, through node ``by`` or (None) a new client on ``host``; None if it returned,
    else the name of the error (the outcome is unknown, or the node it ran on stopped: the caller asks again)."""
    error: str | None = None
    try:
        if by is not None and by.node is not None:
            with trio.fail_after(60):
                await by.node.decommission(node_id)
        else:
            async with sim.client(request_timeout=10.0, host=host) as client:
                await client.decommission(node_id)
    except* _DRAIN_ERRORS as group:
        error = type(group.exceptions[0]).__name__
    except* RuntimeError as group:
        # The node it ran on stopped under it (its nursery takes no new replica task): like a lost connection.
        if by is None or not all("closed to new arrivals" in str(e) for e in group.exceptions):
            raise
        error = "the node stopped under the call"
    return error


async def _decommission(sim: SimCluster, index: int, via: int | None) -> None:
    """Drain node ``index`` through node ``via``'s ``decommission`` (while that node runs; else, or after it
    failed, a client's), then stop it for good. Retried until ``DRAIN_BOUND``: decommissioning is idempotent."""
    state = _topology(sim)
    target = sim.nodes[index]
    node_id = target.node_id
    assert node_id is not None
    sim.record("decommission", index, via)
    started, boots = trio.current_time(), target.boots
    attempt = 0
    with trio.move_on_after(DRAIN_BOUND) as bound:
        while True:
            attempt += 1
            by = sim.nodes[via] if via is not None else None
            if by is None or by.node is None or by.paused or by.removed or via == index:
                via = None  # from now on, through a client
            error = await _try_decommission(sim, node_id, by if via is not None else None, f"admin-{index}-{attempt}")
            if error is None:
                break
            sim.record("decommission-retry", index, error)
            via = None
            await trio.sleep(1.0)
    if bound.cancelled_caught:
        restarted = f" ({RESTARTED_WHILE_DRAINED})" if target.boots > boots else ""
        state.problems.append(
            f"the decommission of node {index} did not finish within {DRAIN_BOUND:g} s{restarted}\n{sim.describe()}"
        )
        return
    how = f"by node {via}" if via is not None else "by a client"
    state.done.append(f"decommission {index} {how} in {trio.current_time() - started:.1f} s")
    target.removed = True  # first: nothing may restart it while it stops
    state.leaving.discard(index)
    await _booted(sim, index)
    if target.up:
        await sim.stop(index)


def client_host(index: int) -> str:
    """The simulated host of the scenario's client ``index``."""
    return f"client-{index}"


async def run_faults(sim: SimCluster, faults: Sequence[Fault], background: trio.Nursery | None = None) -> None:
    """Apply a fault schedule (each fault after its delay). Restarts, additions and removals run in
    ``background`` (when given, they may finish after this returns, e.g. once the network is healed; else this
    waits for them)."""
    async with trio.open_nursery() as own:
        for fault in faults:
            await trio.sleep(fault.delay)
            await apply_fault(sim, fault, background or own)


# --- a run ---------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ScenarioResult:
    """What a run found. ``ok`` is True when the history is linearizable and every other check passed."""

    scenario: Scenario
    history: History
    linearizability: CheckResult
    problems: tuple[str, ...]
    digest: str
    leader_wait: float | None
    virtual_seconds: float
    wall_seconds: float
    trace_tail: tuple[str, ...]
    #: What each ``decommission`` and ``kill`` did (or that it was skipped), in order.
    topology: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        """A failure report: what went wrong, the history's failing part, and how to replay the run."""
        lines = [f"borough.testing: scenario with seed {self.scenario.seed} failed:"]
        lines += [f"  - {p}" for p in self.problems]
        lines.append(f"replay: {replay_command(self.scenario)}")
        lines.append(f"scenario: {self.scenario.to_json()}")
        lines.append(f"trace digest {self.digest}; last events:")
        lines += [f"    {line}" for line in self.trace_tail[-30:]]
        return "\n".join(lines)

    def raise_for_problems(self) -> None:
        if self.problems:
            raise ScenarioFailed(self.report())


class ScenarioFailed(AssertionError):
    """A simulated run broke a property; the message says which, and the command that replays the run."""


def replay_command(scenario: Scenario) -> str:
    """The one command that replays ``scenario`` (saved to a file in the temp directory)."""
    folder = os.path.join(tempfile.gettempdir(), "borough-sim")
    os.makedirs(folder, exist_ok=True)
    text = scenario.to_json()
    import hashlib

    name = f"scenario-{scenario.seed}-{hashlib.blake2b(text.encode(), digest_size=6).hexdigest()}.json"
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return f"{shlex.quote(sys.executable)} -m borough.testing replay {shlex.quote(path)}"


def run_simulation(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``trio.run(async_fn, *args)`` on a fresh ``MockClock(autojump_threshold=0)``: virtual time from 0."""
    return trio.run(async_fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


async def _run_client(sim: SimCluster, history: History, index: int, steps: Sequence[Step], op_timeout: float) -> None:
    async with sim.client(request_timeout=op_timeout, host=client_host(index)) as client:
        ops = ClientOps(client, history, index, timeout=op_timeout, record=sim.record)
        for seq, step in enumerate(steps):
            await trio.sleep(step.delay)
            partition, key = f"p{step.partition}", f"k{step.key}"
            value = (index + 1) * 1_000_000 + seq  # unique in the whole history
            # Odd partitions take every write through cas_handler (so their cas is atomic); even ones write
            # through the partition API, and a cas step there is a get (it could not be atomic).
            handled = step.partition % 2 == 1
            if step.kind == "get" or (step.kind == "cas" and not handled):
                await ops.get(partition, key)
            elif step.kind == "put":
                await ops.put(partition, key, value, via_handler=handled)
            elif step.kind == "delete":
                await ops.delete(partition, key, via_handler=handled)
            else:
                await ops.cas(partition, key, ops.seen.get((partition, key), NOT_FOUND), value)


async def play(scenario: Scenario, *, handler: Handler | None = None) -> ScenarioResult:
    """Run ``scenario`` in the current trio run (on virtual time) and check it; see the module docstring."""
    started = time.perf_counter()
    history = History()
    problems: list[str] = []
    async with SimCluster(
        scenario.nodes, seed=scenario.seed, handler=handler or cas_handler, **dict(scenario.config)
    ) as sim:
        t0 = trio.current_time()
        leaders: list[ClusterCheck] = []

        async def faults_then_heal(background: trio.Nursery) -> None:
            await run_faults(sim, scenario.faults, background)
            # Heal as soon as the schedule ends (clients may still be running), and time the elections.
            leaders.append(await check_leaders(sim, leader_bound=scenario.leader_bound))

        _topology(sim).written.update(
            f"p{step.partition}" for steps in scenario.clients for step in steps if step.kind != "get"
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(faults_then_heal, nursery)
            for index, steps in enumerate(scenario.clients):
                nursery.start_soon(_run_client, sim, history, index, steps, scenario.op_timeout)
        leader_wait = leaders[0].leader_wait
        topology_steps = any(fault.name in TOPOLOGY for fault in scenario.faults)
        problems.extend(leaders[0].problems)
        # Read every key once more, after healing: this is what "no acknowledged write lost" is checked against.
        keys: list[tuple[str, str]] = sorted({op.key for op in history}, key=repr)  # type: ignore[misc]
        final: dict[Any, object] = {}
        if leader_wait is not None:
            async with sim.client(request_timeout=30.0) as client:
                reader = ClientOps(client, history, "final", timeout=30.0, record=sim.record)
                for partition, key in keys:
                    op = await reader.get(partition, key)
                    if op.status is Status.OK:
                        final[op.key] = op.result
                    else:
                        problems.append(f"the final read of {op.key!r} failed after healing: {op.error}")
            problems.extend(await check_replicas(sim))
            problems.extend(await check_members(sim))
            if topology_steps:
                misplaced = await check_placement(sim, bound=PLACEMENT_BOUND)
                if misplaced:
                    misplaced[-1] += "\n" + sim.describe()
                problems.extend(misplaced)
        topology = _topology(sim)
        problems.extend(topology.problems)
        if topology_steps and problems:
            problems.extend(wedged_groups(sim))  # why a group is stuck, if it can never commit again
        virtual = trio.current_time() - t0
        result = check(history)
        if not result.ok:
            problems.insert(0, f"history is {result.outcome.value}: {result.explanation}")
        problems.extend(lost_writes(history, final))
        sim.record("result", len(history), result.outcome.value, len(problems))
        return ScenarioResult(
            scenario=scenario,
            history=history,
            linearizability=result,
            problems=tuple(problems),
            digest=sim.trace.digest(),
            leader_wait=leader_wait,
            virtual_seconds=virtual,
            wall_seconds=time.perf_counter() - started,
            trace_tail=tuple(sim.trace.lines),
            topology=tuple(topology.done),
        )


def run_scenario(scenario: Scenario, *, handler: Handler | None = None) -> ScenarioResult:
    """Run and check ``scenario`` in a trio run of its own, on virtual time (call ``raise_for_problems`` on the
    result to fail a test with the report)."""
    return run_simulation(functools.partial(play, scenario, handler=handler))


def random_scenario(
    seed: int,
    *,
    nodes: int = 3,
    clients: int = 3,
    ops: int = 12,
    faults: int = 6,
    partitions: int = 2,
    keys: int = 2,
    client_faults: bool = False,
    topology: bool = False,
    quiesce_ticks: int | None = None,
    read_mode: str | None = None,
) -> Scenario:
    """A scenario that is a function of ``seed`` alone (for soak runs replayed by seed). ``client_faults`` adds
    cuts between nodes and clients (which find the open retry bug of tests/testing/test_sim_retries.py);
    ``topology`` adds ``add``, ``decommission`` and ``kill`` steps (at most ``MAX_ADDS`` additions) and a short
    ``dead_after`` (``TOPOLOGY_DEAD_AFTER``), so a killed node's partitions are re-replicated. Without them the
    random draws are what they always were, so every seed keeps replaying the same run. ``quiesce_ticks`` sets the
    nodes' setting (small values make groups go quiet, and wake, many times in a run), and ``read_mode`` theirs
    (``"lease"``: leaders answer reads from their lease; the schedule then also draws ``stall`` steps, which with
    its pauses are what tests the lease's clock)."""
    rng = random.Random(seed)
    added = 0

    def node() -> int:  # (nodes added so far are drawn too; with no additions, this is what it always was)
        return rng.randrange(nodes + added)

    steps = tuple(
        tuple(
            Step(
                delay=round(rng.expovariate(2.0), 3),
                kind=rng.choice(["get", "get", "put", "put", "delete", "cas", "cas"]),
                partition=rng.randrange(partitions),
                key=rng.randrange(keys),
            )
            for _ in range(ops)
        )
        for _ in range(clients)
    )
    schedule = []
    for _ in range(faults):
        names = ["crash", "restart", "pause", "resume", "partition", "cut", "isolate", "heal", "latency", "rst"]
        lease = read_mode == "lease"
        name = rng.choice(
            names + ["cut-client"] * client_faults + [*TOPOLOGY, *TOPOLOGY] * topology + ["stall", "stall"] * lease
        )
        if name == "add" and added >= MAX_ADDS:
            name = rng.choice(["decommission", "kill"])
        args: tuple[Any, ...]
        if name == "add":
            added += 1
            args = ()
        elif name == "decommission":  # through a client, or through one of the nodes
            args = (node(), rng.choice([-1, node()]))
        elif name in ("kill", "crash", "restart", "pause", "resume", "isolate", "rst"):
            args = (node(),)
        elif name == "partition":
            order = list(range(nodes + added))
            rng.shuffle(order)
            split = rng.randrange(1, nodes + added)
            args = ((tuple(order[:split]), tuple(order[split:])),)
        elif name == "cut":
            args = (node(), node(), rng.random() < 0.5)
        elif name == "latency":
            args = (node(), node(), round(rng.uniform(0.001, 0.3), 3), round(rng.uniform(0, 0.1), 3))
        elif name == "cut-client":
            args = (node(), rng.randrange(clients), rng.random() < 0.7)
        elif name == "stall":
            args = (node(), round(rng.uniform(0.5, 5.0), 3))
        else:
            args = ()
        schedule.append(Fault(delay=round(rng.expovariate(0.5), 3), name=name, args=args))
    config = (("dead_after", TOPOLOGY_DEAD_AFTER),) if topology else ()
    if quiesce_ticks is not None:
        config = (*config, ("quiesce_ticks", quiesce_ticks))
    if read_mode is not None:
        config = (*config, ("read_mode", read_mode))
    return Scenario(seed=seed, nodes=nodes, clients=steps, faults=tuple(schedule), config=config)
