"""A simulated run is a function of its seed: the same scenario gives the same trace, in this process or another."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import trio
import trio.testing

from borough.testing import SimCluster
from borough.testing.scenario import random_scenario, run_scenario, run_simulation
from borough.testing.trace import first_difference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def _faulty_run(seed: int) -> SimCluster:
    async with SimCluster(5, seed=seed, keep_trace=None) as sim, sim.client() as client:
        for i in range(12):
            await client.partition(f"p{i % 4}").put(f"k{i}", i)
        sim.partition([0, 1], [2, 3, 4])
        sim.set_latency(2, 3, 0.05, 0.02)
        for i in range(8):
            try:
                with trio.fail_after(2):
                    await client.partition(f"p{i % 4}").put(f"k{i}", -i)
            except Exception as exc:  # noqa: BLE001 - the outcome is part of the trace
                sim.record("error", type(exc).__name__)
        sim.pause(4)
        await sim.crash(2)
        await trio.sleep(2)
        sim.heal()
        sim.resume(4)
        await sim.restart(2)
        for i in range(4):
            with trio.fail_after(10):
                sim.record("read", await client.partition(f"p{i}").get(f"k{i}", default=None))
        return sim


def _digest(seed: int) -> SimCluster:
    return run_simulation(_faulty_run, seed)


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    first, second = _digest(21), _digest(21)
    assert first.trace.count > 1000
    assert first.trace.digest() == second.trace.digest(), first_difference(first.trace.lines, second.trace.lines)
    assert first.trace.lines == second.trace.lines
    assert _digest(22).trace.digest() != first.trace.digest()


def test_a_checked_scenario_replays_to_the_same_digest() -> None:
    scenario = random_scenario(5)
    a, b = run_scenario(scenario), run_scenario(scenario)
    assert a.ok, a.report()
    assert a.digest == b.digest
    assert a.history.to_json() == b.history.to_json()


@pytest.mark.parametrize("hash_seed", ["4242"])
def test_another_process_with_other_string_hashes_replays_to_the_same_digest(hash_seed: str) -> None:
    # Set and dict order of strings changes with PYTHONHASHSEED; no behaviour may depend on it.
    expected = run_scenario(random_scenario(3)).digest
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    out = subprocess.run(
        [sys.executable, "-m", "borough.testing", "replay", "--seed", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    match = re.search(r"trace digest ([0-9a-f]+)", out)
    assert match is not None, out
    assert match.group(1) == expected


async def test_sim_cluster_refuses_to_run_on_the_real_clock() -> None:
    with pytest.raises(RuntimeError, match="MockClock"):
        async with SimCluster(1, seed=1):
            pass


async def test_a_failure_inside_a_cluster_carries_its_seed_and_how_to_replay_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.RaisesGroup(ZeroDivisionError) as caught:
        async with SimCluster(1, seed=5):
            raise ZeroDivisionError
    (error,) = caught.value.exceptions
    (note,) = error.__notes__
    assert "SimCluster(seed=5)" in note and "python -m pytest tests/testing/test_sim_determinism.py::" in note
