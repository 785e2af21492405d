"""SWIM cores in the synchronous simulator: the issue's detection properties over many seeds and sizes.

Hypothesis picks seeds, cluster sizes and victims; every failure prints the example that replays it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from borough.ring.membership import DETECTION_BOUND
from borough.ring.messages import Liveness

from .budget import examples
from .swimsim import SwimSim, assert_no_flapping, node_name


@settings(max_examples=examples(25, soak_divisor=10))
@given(n=st.integers(min_value=2, max_value=20), seed=st.integers(min_value=0, max_value=2**32), data=st.data())
def test_crash_is_detected_by_everyone_within_the_bound(n: int, seed: int, data: st.DataObject) -> None:
    sim = SwimSim(n, seed=seed)
    warmup = data.draw(st.floats(min_value=0.0, max_value=5.0), label="warmup")
    sim.run_until(warmup)
    victim = node_name(data.draw(st.integers(min_value=0, max_value=n - 1), label="victim"))
    sim.crash(victim)
    sim.run_until(warmup + DETECTION_BOUND)
    assert sim.member_events(about=None) == sim.member_events(about=victim)  # no one else was doubted
    done = sim.first_time_all(victim, Liveness.DEAD, sim.live())
    assert done is not None and done - warmup <= DETECTION_BOUND


@pytest.mark.soak
@settings(max_examples=examples(3, soak_divisor=200))
@given(seed=st.integers(min_value=0, max_value=2**32), n=st.sampled_from([3, 5, 8]))
def test_ten_percent_loss_never_kills_anyone_over_ten_minutes(seed: int, n: int) -> None:
    sim = SwimSim(n, seed=seed)
    sim.loss[node_name(0)] = 0.10
    sim.run_until(600.0)
    assert [e for e in sim.member_events() if e[2].liveness is Liveness.DEAD] == []


@pytest.mark.soak
@settings(max_examples=examples(8, soak_divisor=20))
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    n=st.integers(min_value=3, max_value=12),
    duration=st.floats(min_value=1.0, max_value=60.0),
)
def test_partition_heals_without_flapping(seed: int, n: int, duration: float) -> None:
    sim = SwimSim(n, seed=seed)
    sim.run_until(3.0)
    minority = [node_name(i) for i in range(n // 2 + 1, n)] or [node_name(n - 1)]
    majority = [x for x in sim.nodes if x not in minority]
    sim.partition(majority, minority)
    sim.run_until(3.0 + duration)
    sim.heal()
    healed = sim.now
    sim.run_until(healed + DETECTION_BOUND)
    for obs in sim.nodes:
        for subject in sim.nodes:
            assert sim.liveness(obs, subject) is Liveness.ALIVE, (obs, subject)
    settled = sim.now
    sim.run_until(settled + 60.0)
    assert sim.member_events(since=settled) == []
    assert_no_flapping(sim.member_events(since=healed))


def test_runs_are_reproducible_from_their_seed() -> None:
    def trace(seed: int) -> list[tuple[float, str, object]]:
        sim = SwimSim(8, seed=seed)
        sim.loss[node_name(1)] = 0.2
        sim.at(5.0, lambda: sim.crash(node_name(3)))
        sim.run_until(30.0)
        return [(t, o, e) for t, o, e in sim.events]

    assert trace(11) == trace(11)
    assert trace(11) != trace(12)
