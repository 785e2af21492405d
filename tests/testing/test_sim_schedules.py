"""Hypothesis draws workloads and fault schedules; every run must stay linearizable, keep every acknowledged
write, elect a leader for every partition soon after healing, and end with equal replicas.

A failure shrinks to a small schedule and prints the report with the command that replays it
(``python -m borough.testing replay FILE``). CI runs small budgets; ``BOROUGH_SOAK=1`` (the "soak" Hypothesis
profile) runs thousands of schedules: ``BOROUGH_SOAK=1 python -m pytest tests/testing -m soak``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings

from borough.testing.scenario import Scenario, random_scenario, run_scenario
from borough.testing.strategies import scenarios

# The loaded profile's budget ("ci": 50 examples, "soak": 20,000), scaled to what one whole-cluster run costs.
BUDGET = settings().max_examples
# CI explores a fixed set of examples (the simulation is deterministic, so they pass or fail the same way on
# every run); soak runs explore afresh. A failure prints the replay command either way.
SOAK = os.environ.get("BOROUGH_SOAK") == "1"


@settings(max_examples=max(4, BUDGET // 5), derandomize=not SOAK)
@given(scenario=scenarios(nodes=3, clients=3, max_ops=8, max_faults=6))
def test_three_nodes_under_random_faults(scenario: Scenario) -> None:
    run_scenario(scenario).raise_for_problems()


@pytest.mark.soak
@settings(max_examples=max(3, BUDGET // 10), derandomize=not SOAK)
@given(scenario=scenarios(nodes=5, clients=4, max_ops=10, max_faults=10, partitions=3, membership=True))
def test_five_nodes_under_random_faults_and_membership_churn(scenario: Scenario) -> None:
    run_scenario(scenario).raise_for_problems()


@pytest.mark.soak
@settings(max_examples=max(4, BUDGET // 10), derandomize=not SOAK)
@given(scenario=scenarios(nodes=3, clients=4, max_ops=14, max_faults=8, partitions=2, keys=1))
def test_hot_keys_under_random_faults(scenario: Scenario) -> None:
    # One key per partition and four clients: the most contention the checker still searches quickly.
    run_scenario(scenario).raise_for_problems()


@pytest.mark.soak
def test_random_scenarios_by_seed() -> None:
    # Seed-only scenarios (replay one with `python -m borough.testing replay --seed N`).
    first = int(os.environ.get("BOROUGH_SIM_FIRST_SEED", "0"))
    for seed in range(first, first + max(3, BUDGET // 10)):
        run_scenario(random_scenario(seed)).raise_for_problems()
