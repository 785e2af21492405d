"""Exactly-once writes under fault schedules (issue 16): whatever Hypothesis draws (crashes, restarts, cuts,
pauses, lost replies), each acknowledged put appears exactly once in its partition's applied history, and no
put appears that no client sent.

The applied history is what every replica's state machine actually applied (a duplicate of a session's write
is a no-op and applies nothing); the test watches ``KvStateMachine.apply`` entry by entry on every replica, so
it also checks that replicas agree on what each log index applied. Values are unique in a scenario's history,
so a value names its put.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings

from borough.kv import decode_value
from borough.node.statemachine import KvStateMachine
from borough.raft.records import Entry
from borough.testing.history import Kind, Status
from borough.testing.scenario import Scenario, run_scenario
from borough.testing.strategies import scenarios

BUDGET = settings().max_examples
SOAK = os.environ.get("BOROUGH_SOAK") == "1"


def _run_watching(scenario: Scenario) -> tuple[Any, dict[tuple[str, int], set[tuple[Any, ...]]]]:
    """Run ``scenario``; return its result and, per (partition, log index), the put values each replica
    applied there."""
    applied: dict[tuple[str, int], set[tuple[Any, ...]]] = defaultdict(set)
    original = KvStateMachine.apply

    def watched(self: KvStateMachine, entries: Sequence[Entry]) -> tuple[list[Any], dict[int, Any]]:
        ops: list[Any] = []
        results: dict[int, Any] = {}
        for entry in entries:  # one at a time: the same decisions, and each index's own ops
            new_ops, new_results = original(self, [entry])
            ops += new_ops
            results.update(new_results)
            puts = tuple(decode_value(op[2]) for op in new_ops if op[0] == "put")
            applied[(self.partition, entry.index)].add(puts)
        return ops, results

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(KvStateMachine, "apply", watched)
        result = run_scenario(scenario)
    return result, applied


@settings(max_examples=max(4, BUDGET // 5), derandomize=not SOAK)
@given(scenario=scenarios(nodes=3, clients=3, max_ops=8, max_faults=6))
def test_each_acknowledged_put_is_applied_exactly_once_and_nothing_unsent_is(scenario: Scenario) -> None:
    result, applied = _run_watching(scenario)
    result.raise_for_problems()
    report = result.report()
    where: dict[Any, list[tuple[str, int]]] = defaultdict(list)
    for (partition, index), seen in applied.items():
        assert len(seen) == 1, f"replicas applied different puts at {partition}[{index}]: {seen}\n{report}"
        for value in next(iter(seen)):
            where[value].append((partition, index))
    sent = {op.value for op in result.history.operations if op.kind in (Kind.PUT, Kind.CAS)}
    acknowledged = {
        op.value
        for op in result.history.operations
        if op.status is Status.OK and (op.kind is Kind.PUT or (op.kind is Kind.CAS and op.result is True))
    }
    for value, indexes in where.items():
        assert value in sent, f"put of {value!r} was applied at {indexes} but never sent\n{report}"
        assert len(indexes) == 1, f"put of {value!r} was applied {len(indexes)} times: {indexes}\n{report}"
    for value in acknowledged:
        assert value in where, f"acknowledged put of {value!r} was never applied\n{report}"
