"""Hypothesis strategies for simulated runs: workloads, fault schedules and whole scenarios.

Owns how Hypothesis draws (and shrinks) what ``borough.testing.scenario`` runs. Everything shrinks towards
fewer steps, node 0, no delay and the mildest fault, so a failure shrinks to a small schedule. Every drawn
schedule is valid (``apply_fault`` makes impossible steps no-ops; ``decommission`` and ``kill`` are no-ops unless
the cluster can spare the node). Topology steps are drawn only when asked (``topology=True``): without them every
strategy draws exactly what it always drew, so saved examples keep replaying. Importing this module imports
Hypothesis (a test dependency, not one of Borough's). Must not run anything.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from borough.testing.scenario import TOPOLOGY_DEAD_AFTER, Fault, Scenario, Step

__all__ = ["delays", "fault_schedules", "faults", "scenarios", "steps", "workloads"]


def delays(max_seconds: float = 3.0) -> st.SearchStrategy[float]:
    """Virtual seconds in steps of 50 ms, shrinking to 0."""
    return st.integers(0, int(max_seconds * 20)).map(lambda n: n / 20)


def steps(*, partitions: int = 2, keys: int = 2, max_delay: float = 1.0) -> st.SearchStrategy[Step]:
    """One client operation on one of ``partitions`` x ``keys`` registers."""
    return st.builds(
        Step,
        delay=delays(max_delay),
        kind=st.sampled_from(["get", "put", "cas", "delete"]),
        partition=st.integers(0, partitions - 1),
        key=st.integers(0, keys - 1),
    )


def workloads(
    *, clients: int = 3, max_ops: int = 10, partitions: int = 2, keys: int = 2
) -> st.SearchStrategy[tuple[tuple[Step, ...], ...]]:
    """``clients`` lists of up to ``max_ops`` operations each."""
    one = st.lists(steps(partitions=partitions, keys=keys), max_size=max_ops).map(tuple)
    return st.lists(one, min_size=1, max_size=clients).map(tuple)


def faults(
    nodes: int, *, membership: bool = False, clients: int = 0, topology: bool = False, max_delay: float = 3.0
) -> st.SearchStrategy[Fault]:
    """One fault of a ``nodes``-node cluster (``membership``: also adding and removing nodes; ``clients``: also
    cutting links between nodes and that many clients, which finds the open retry bug of
    tests/testing/test_sim_retries.py; ``topology``: also adding nodes, decommissioning them through a client
    or another node, and killing them for good, targets including up to two added nodes)."""
    node = st.integers(0, nodes - 1)
    delay = delays(max_delay)

    def fault(name: str, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[Fault]:
        return st.builds(lambda d, *a: Fault(delay=d, name=name, args=tuple(a)), delay, *args)

    groups = st.permutations(list(range(nodes))).flatmap(
        lambda order: st.integers(1, nodes - 1).map(lambda k: (tuple(order[:k]), tuple(order[k:])))
    )
    options = [
        fault("heal"),
        fault("crash", node),
        fault("restart", node),
        fault("partition", groups),
        fault("isolate", node),
        fault("cut", node, node, st.booleans()),
        fault("pause", node),
        fault("resume", node),
        fault("latency", node, node, st.sampled_from([0.01, 0.05, 0.2, 1.0]), st.sampled_from([0.0, 0.01, 0.1])),
        fault("rst", node),
    ]
    if membership:
        options += [fault("add"), fault("remove", node)]
    if clients:
        options.append(fault("cut-client", node, st.integers(0, clients - 1), st.booleans()))
    if topology:
        member = st.integers(0, nodes + 1)  # taken modulo the cluster's size when applied
        options += [
            fault("kill", member),
            fault("decommission", member, st.one_of(st.just(-1), member)),
            fault("add"),
        ]
    return st.one_of(options)


def fault_schedules(
    nodes: int,
    *,
    max_faults: int = 8,
    membership: bool = False,
    clients: int = 0,
    topology: bool = False,
    max_delay: float = 3.0,
) -> st.SearchStrategy[tuple[Fault, ...]]:
    """Up to ``max_faults`` faults in order, each after its delay (see ``faults``)."""
    one = faults(nodes, membership=membership, clients=clients, topology=topology, max_delay=max_delay)
    return st.lists(one, max_size=max_faults).map(tuple)


def scenarios(
    *,
    nodes: int = 3,
    clients: int = 3,
    max_ops: int = 10,
    max_faults: int = 8,
    partitions: int = 2,
    keys: int = 2,
    membership: bool = False,
    client_faults: bool = False,
    topology: bool = False,
    config: dict[str, Any] | None = None,
) -> st.SearchStrategy[Scenario]:
    """Whole scenarios: a seed, a workload and a fault schedule for a ``nodes``-node cluster. With ``topology``
    the schedule also adds, decommissions and kills nodes, and ``dead_after`` defaults to
    ``TOPOLOGY_DEAD_AFTER`` so a killed node's partitions move within the run."""
    if topology:
        config = {"dead_after": TOPOLOGY_DEAD_AFTER, **(config or {})}
    return st.builds(
        Scenario,
        seed=st.integers(0, 2**32 - 1),
        nodes=st.just(nodes),
        clients=workloads(clients=clients, max_ops=max_ops, partitions=partitions, keys=keys),
        faults=fault_schedules(
            nodes,
            max_faults=max_faults,
            membership=membership,
            clients=clients if client_faults else 0,
            topology=topology,
        ),
        config=st.just(tuple(sorted((config or {}).items()))),
    )
