"""``borough.runnable.tasks_runnable``: the run queue's length, as trio's statistics report it."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from borough.runnable import tasks_runnable


def _public() -> int:
    return trio.lowlevel.current_statistics().tasks_runnable


async def test_it_counts_what_trios_statistics_count() -> None:
    assert tasks_runnable() == _public() == 0
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(trio.sleep, 0)
        assert tasks_runnable() == _public() == 3  # (spawned: ready to run, not yet run)
        await trio.testing.wait_all_tasks_blocked()
        lot = trio.lowlevel.ParkingLot()
        nursery.start_soon(lot.park)
        await trio.testing.wait_all_tasks_blocked()
        assert tasks_runnable() == _public() == 0  # (parked)
        lot.unpark_all()
        assert tasks_runnable() == _public() == 1  # (rescheduled)


def test_outside_trio_it_raises_as_the_statistics_do() -> None:
    with pytest.raises(RuntimeError):
        _public()
    with pytest.raises(RuntimeError):
        tasks_runnable()
