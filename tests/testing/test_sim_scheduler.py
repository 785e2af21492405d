"""trio's scheduler under the simulator: seeded task order, and freezing a subtree of tasks (pause)."""

from __future__ import annotations

import trio
import trio.testing

from borough.testing.scenario import run_simulation
from borough.testing.scheduler import TaskGate, check_trio_internals, descends_from, seed_scheduler


def test_this_trio_has_the_internals_the_simulator_relies_on() -> None:
    check_trio_internals()


def _interleaving(seed: int) -> list[int]:
    order: list[int] = []

    async def worker(i: int) -> None:
        for _ in range(3):
            await trio.lowlevel.checkpoint()
            order.append(i)

    async def main() -> None:
        seed_scheduler(seed)
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(worker, i)

    run_simulation(main)
    return order


def test_the_same_seed_gives_the_same_task_order_and_seeds_differ() -> None:
    assert _interleaving(1) == _interleaving(1)
    assert len({tuple(_interleaving(seed)) for seed in range(5)}) > 1


async def test_a_frozen_subtree_neither_runs_nor_fires_timers_until_opened(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = TaskGate()
    ticks: list[float] = []
    woke: list[float] = []
    event = trio.Event()
    roots: list[trio.lowlevel.Task] = []

    async def ticker() -> None:
        while True:
            await trio.sleep(1)
            ticks.append(trio.current_time())

    async def waiter() -> None:
        await event.wait()
        woke.append(trio.current_time())

    async def frozen_root(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        roots.append(trio.lowlevel.current_task())
        async with trio.open_nursery() as inner:
            inner.start_soon(ticker)
            inner.start_soon(waiter)
            task_status.started()

    async def other() -> None:
        while True:
            await trio.sleep(1)
            woke.append(-trio.current_time())  # an unrelated task keeps running

    async with trio.open_nursery() as nursery:
        await nursery.start(frozen_root)
        nursery.start_soon(other)
        await trio.sleep(2.5)
        assert ticks == [1.0, 2.0]
        gate.close(roots[0])
        assert gate.frozen(roots[0])
        event.set()  # the waiter becomes runnable, but must not run while frozen
        await trio.sleep(5)
        assert ticks == [1.0, 2.0]
        assert [t for t in woke if t >= 0] == []
        assert len([t for t in woke if t < 0]) >= 5  # the other task ran all along
        assert gate.open(roots[0]) >= 2  # the ticker's expired sleep and the woken waiter
        await trio.sleep(0.01)
        # On resume the expired timer fires at once, as for a resumed process, then ticks go on from there.
        assert ticks == [1.0, 2.0, 7.5]
        assert [t for t in woke if t >= 0] == [7.5]
        await trio.sleep(1)
        assert ticks[-1] == 8.5
        nursery.cancel_scope.cancel()


async def test_descends_from_finds_the_root_of_a_nested_task(autojump_clock: trio.testing.MockClock) -> None:
    found: list[object] = []
    root = trio.lowlevel.current_task()

    async def child() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(grandchild)

    async def grandchild() -> None:
        found.append(descends_from(trio.lowlevel.current_task(), [root]))
        found.append(descends_from(trio.lowlevel.current_task(), []))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)
    assert found == [root, None]
