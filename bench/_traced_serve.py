"""``borough serve`` with the system calls of a request's path stamped in time: each socket read and write, each
wait for a readable socket, each engine write (with its fsync), as ``(monotonic ns, event)``.

Run by ``bench/timeline.py`` in place of ``python -m borough serve``. The first SIGUSR2 starts a window (what was
stamped before is dropped); the second writes the window's events as one JSON line to the file named by
``BOROUGH_TRACE_OUT``. CLOCK_MONOTONIC is one clock for every process on the machine, so the events of the three
nodes and the client line up. Each stamp costs well under a microsecond.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _trace import install, install_steps, take  # noqa: E402

install()
if os.environ.get("BOROUGH_TRACE_STEPS"):
    install_steps()
windows = 0


def snapshot(signum: int, frame: Any) -> None:
    global windows
    windows += 1
    events = take()
    if windows >= 2:
        with open(os.environ["BOROUGH_TRACE_OUT"], "w") as f:
            f.write(json.dumps(events) + "\n")


signal.signal(signal.SIGUSR2, snapshot)
sys.argv = ["borough", *sys.argv[1:]]
runpy.run_module("borough", run_name="__main__")
