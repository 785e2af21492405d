"""``borough serve`` under cProfile for a window: the first SIGUSR2 starts profiling the event loop's thread, the
second writes the profile to the file named by ``BOROUGH_PROFILE_OUT`` (and a line to say it is there).

Run by ``bench/profile_path.py`` in place of ``python -m borough serve``. cProfile slows each call down by a
constant or so; compare functions' shares, not absolute times, against the unprofiled node.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys
from typing import Any

profiler = cProfile.Profile()
windows = 0


def snapshot(signum: int, frame: Any) -> None:
    global windows
    windows += 1
    if windows == 1:
        profiler.enable()
    elif windows == 2:
        profiler.disable()
        path = os.environ["BOROUGH_PROFILE_OUT"]
        profiler.dump_stats(path + ".prof")
        with open(path, "w") as f:
            f.write("done\n")


signal.signal(signal.SIGUSR2, snapshot)
sys.argv = ["borough", *sys.argv[1:]]
runpy.run_module("borough", run_name="__main__")
