"""What the simulator needs from trio's scheduler: seeded task order, and freezing a group of tasks (a pause).

This module owns the two places where ``borough.testing`` reaches into trio's private run loop, so they sit
behind one small, tested surface:

- ``seed_scheduler(seed)``: trio runs each batch of runnable tasks in an order drawn from the module-level
  ``random.Random`` ``trio._core._run._r`` (shuffled after sorting by task creation when
  ``_ALLOW_DETERMINISTIC_SCHEDULING`` is set, which Hypothesis's trio plugin does; else reversed at random). We
  set that flag ourselves (so a run is deterministic with or without Hypothesis imported) and seed ``_r``.
  Sorting each batch by creation order is also what makes trio's own id()-based orderings harmless: the
  deadline heap's ``id(CancelScope)`` tie-breaker and a cancel scope's set of tasks only decide in what order
  tasks enter the run queue, and the sort throws that order away.
- ``TaskGate``: freeze every task below some root task, as SIGSTOP freezes a process. Every task trio makes
  runnable ends with ``runner.runq.append(task)``; while a gate is closed we swap the run queue for a deque
  whose ``append`` holds back tasks that descend from a frozen root. Their timers still expire and their events
  still fire (the task is rescheduled as usual, with nothing left to abort), they just do not run until
  ``open`` puts them back, in the order they became runnable. With no gate closed the plain deque is back, so
  an idle gate costs nothing.

If a trio release changes these internals, ``check_trio_internals()`` says so in one clear error (a test
calls it), rather than the simulator silently losing determinism.

Must not know Borough: it freezes tasks and seeds a scheduler, whatever they run.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from typing import Any

import trio
from trio._core import _run as _trio_run

__all__ = ["TaskGate", "check_trio_internals", "descends_from", "seed_scheduler"]


def check_trio_internals() -> None:
    """Raise RuntimeError naming what is missing if this trio lacks the internals the simulator relies on."""
    missing = [
        name for name in ("_r", "_ALLOW_DETERMINISTIC_SCHEDULING", "GLOBAL_RUN_CONTEXT") if not hasattr(_trio_run, name)
    ]
    if not isinstance(getattr(_trio_run, "_r", None), random.Random):
        missing.append("_r as a random.Random")
    if missing:
        raise RuntimeError(
            f"trio {trio.__version__} lacks {', '.join(missing)} in trio._core._run, which borough.testing needs "
            "for deterministic scheduling; use a trio release from the range pyproject.toml allows"
        )


def seed_scheduler(seed: int) -> None:
    """Make trio's order of runnable tasks a function of ``seed`` from now on (for the current process)."""
    check_trio_internals()
    # Hypothesis's trio plugin sets the same flag; setting it here makes runs without Hypothesis deterministic.
    setattr(_trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)  # noqa: B010 - a Final in trio's source
    _trio_run._r.seed(seed)


def _runner() -> Any:
    try:
        return _trio_run.GLOBAL_RUN_CONTEXT.runner
    except AttributeError:
        raise RuntimeError("TaskGate must be used inside trio.run") from None


def descends_from(task: trio.lowlevel.Task, roots: Iterable[trio.lowlevel.Task]) -> trio.lowlevel.Task | None:
    """The root in ``roots`` that ``task`` is (or descends from), or None."""
    wanted = set(roots)
    current: trio.lowlevel.Task | None = task
    while current is not None:
        if current in wanted:
            return current
        nursery = current.parent_nursery
        current = nursery.parent_task if nursery is not None else None
    return None


class _GatedRunQueue(deque[Any]):
    """trio's run queue while some tasks are frozen: ``append`` holds back tasks of a frozen root."""

    def __init__(self, gate: TaskGate, items: Iterable[Any]) -> None:
        super().__init__(items)
        self.gate = gate

    def append(self, task: Any) -> None:
        root = descends_from(task, self.gate._held)
        if root is None:
            super().append(task)
        else:
            self.gate._held[root].append(task)


class TaskGate:
    """Freezes the tasks below chosen root tasks (``close(root)``) until ``open(root)``. One per trio run."""

    def __init__(self) -> None:
        self._held: dict[trio.lowlevel.Task, list[Any]] = {}
        self._queue: _GatedRunQueue | None = None

    def frozen(self, root: trio.lowlevel.Task) -> bool:
        return root in self._held

    def close(self, root: trio.lowlevel.Task) -> None:
        """Freeze ``root`` and every task below it, at once: runnable ones are taken off the run queue too."""
        if root in self._held:
            return
        self._held[root] = []
        runner = _runner()
        if self._queue is None or runner.runq is not self._queue:
            self._queue = _GatedRunQueue(self, ())
            old, runner.runq = runner.runq, self._queue
            for task in old:
                self._queue.append(task)
        else:
            # Re-filter what is queued now, for the newly frozen root.
            queued = list(self._queue)
            self._queue.clear()
            for task in queued:
                self._queue.append(task)

    def open(self, root: trio.lowlevel.Task) -> int:
        """Unfreeze ``root``: its held tasks become runnable, in the order they were made runnable. Returns how
        many tasks were held."""
        held = self._held.pop(root, None)
        if held is None:
            return 0
        runner = _runner()
        if not self._held:
            # Nothing frozen any more: back to trio's plain deque, so the gate costs nothing.
            plain: deque[Any] = deque(runner.runq)
            plain.extend(held)
            runner.runq = plain
            self._queue = None
        else:
            for task in held:
                runner.runq.append(task)
        return len(held)

    def open_all(self) -> None:
        for root in list(self._held):
            self.open(root)
