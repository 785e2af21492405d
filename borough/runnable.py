"""How many tasks trio has ready to run: the one figure of the event loop's statistics Borough's hot paths ask.

A write found with nothing else to run is made on the spot (``borough.store.group_commit``), a lone frame is sent
at once (``borough.wire.mux``), and a round starts without yielding first (``borough.node.rounds``): each asks
whether any other task is runnable, several times a request. ``trio.lowlevel.current_statistics()`` answers
that, but builds the rest of its statistics too, and among them counts every socket the loop watches: about 5 us
with 40 connections, more than the decision saves on a lone request. ``tasks_runnable`` reads the same figure
(the length of trio's run queue, which is what the statistics report) without the rest. Should a trio release
move it, it falls back to the public call, which gives the same answer more slowly.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import trio

_CONTEXT: Any
try:
    from trio._core._run import GLOBAL_RUN_CONTEXT as _CONTEXT
except ImportError:  # pragma: no cover - a trio that moved it: the public call answers
    _CONTEXT = None

__all__ = ["tasks_runnable"]


def tasks_runnable() -> int:
    """``trio.lowlevel.current_statistics().tasks_runnable``: the tasks ready to run besides the caller's (which
    is running). Raises ``RuntimeError`` outside a ``trio.run``, as that does."""
    if _CONTEXT is not None:
        try:
            runq: Sized = _CONTEXT.runner.runq
            return len(runq)
        except (AttributeError, TypeError):  # (outside a run; or a trio whose run queue is not what it was)
            pass
    return trio.lowlevel.current_statistics().tasks_runnable
