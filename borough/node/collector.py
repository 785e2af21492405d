"""The interpreter's cycle collector while nodes run in this process (the ``gc_threshold`` setting).

A node holds many long-lived objects (thousands of replicas, each with its Raft core, queues and records) and
makes little cyclic garbage. CPython collects its young generation every 700 net allocations by default, and the
older generations in proportion, so a node with many partitions spends much of its CPU walking the same
long-lived objects, in pauses of its event loop: three nodes creating 3,000 partitions measured 818 partitions/s
and 1.95 ms of server CPU a partition with the default thresholds, against 1,254/s and 1.35 ms with the young
generation collected every 50,000 (``bench/scale.py --partitions 3000 --only-create``, 2026-12-08); and at 10,000
partitions 652 against 1,104/s. ``borough serve`` always raised it; an application embedding a node (``open_node``,
``borough.serve``) did not, and paid for it.

``collector_tuned`` raises the young generation's threshold to at least ``gc_threshold`` while any node runs in
the process (never lowers it: an application that set a higher one keeps it), and puts back what it replaced once
the last node stops, unless something else changed the thresholds meanwhile. Cycles are still collected, only less
often; ``gc_threshold=0`` leaves the interpreter's settings alone. Process-wide state, so it counts the nodes
running (the simulator runs many in one process).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_tuned"]

logger = logging.getLogger(__name__)

#: The middle generation is collected after this many young collections at least (CPython's default is 10).
_MIDDLE = 20

_running = 0  # nodes inside ``collector_tuned``
_replaced: tuple[int, int, int] | None = None  # the thresholds before the first raise, to put back
_ours: tuple[int, int, int] | None = None  # the thresholds last set here


@contextmanager
def collector_tuned(threshold: int) -> Iterator[None]:
    """Hold the young generation's threshold at ``threshold`` or above for the block (0: leave it alone)."""
    global _running, _replaced, _ours
    if threshold > 0:
        young, middle, old = gc.get_threshold()
        if young < threshold:
            if _replaced is None:
                _replaced = (young, middle, old)
            _ours = (threshold, max(middle, _MIDDLE), old)
            gc.set_threshold(*_ours)
            logger.debug("cycle collector: young generation every %d allocations (was %d)", threshold, young)
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0 and _replaced is not None:
            if gc.get_threshold() == _ours:  # (not if the application changed them since)
                gc.set_threshold(*_replaced)
            _replaced = _ours = None
