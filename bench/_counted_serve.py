"""``borough serve`` with a trio instrument that counts task steps (by task name) and event-loop passes.

Run by ``bench/steps.py`` in place of ``python -m borough serve``: on SIGUSR2 it appends its counts so far, as
one JSON line, to the file named by ``BOROUGH_STEPS_OUT``. Nothing else differs from a normal node.
"""

from __future__ import annotations

import collections
import json
import os
import runpy
import signal
import sys
from typing import Any

import trio

steps: collections.Counter[str] = collections.Counter()
passes = 0


class Counter(trio.abc.Instrument):
    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        steps[task.name] += 1

    def before_io_wait(self, timeout: float) -> None:
        global passes
        passes += 1


def dump(signum: int, frame: Any) -> None:
    with open(os.environ["BOROUGH_STEPS_OUT"], "a") as out:
        out.write(json.dumps({"passes": passes, "steps": dict(steps)}) + "\n")


signal.signal(signal.SIGUSR2, dump)
_run = trio.run


def run(*args: Any, **kwargs: Any) -> Any:
    kwargs["instruments"] = [*kwargs.get("instruments", ()), Counter()]
    return _run(*args, **kwargs)


trio.run = run  # type: ignore[assignment]
sys.argv = ["borough", *sys.argv[1:]]
runpy.run_module("borough", run_name="__main__")
