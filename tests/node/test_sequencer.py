"""The caller's numbering of its writes (``borough.node.sequencer``): seqs, and ``low``, the lowest in flight."""

from __future__ import annotations

import contextlib
import random

from hypothesis import given
from hypothesis import strategies as st

from borough.node.sequencer import Sequencer


def test_low_is_the_lowest_seq_still_in_flight_to_that_partition_whatever_order_writes_end_in() -> None:
    seq = Sequencer(random.Random(1))
    with contextlib.ExitStack() as first:
        a = first.enter_context(seq.write("p"))
        with seq.write("p") as b, seq.write("q") as other:
            assert (a.seq, b.seq, other.seq) == (1, 2, 3)
            assert (a.low, b.low, other.low) == (1, 1, 3)  # (per partition)
            first.close()  # the first write ends while the second is in flight
            assert seq.in_flight("p") == 1
            with seq.write("p") as c:
                assert (c.seq, c.low) == (4, 2)
    assert seq.in_flight("p") == 0 and seq.in_flight("q") == 0
    with seq.write("p") as d:
        assert (d.seq, d.low) == (5, 5)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 63)), max_size=300))
def test_low_matches_the_minimum_of_the_writes_in_flight(steps: list[tuple[bool, int]]) -> None:
    """Any interleaving of writes starting and ending: each new write's ``low`` is the least seq in flight."""
    seq = Sequencer(random.Random(2))
    open_writes: dict[int, contextlib.ExitStack] = {}
    for start, pick in steps:
        if start or not open_writes:
            stack = contextlib.ExitStack()
            ref = stack.enter_context(seq.write("p"))
            open_writes[ref.seq] = stack
            assert ref.low == min(open_writes)
        else:
            victim = sorted(open_writes)[pick % len(open_writes)]
            open_writes.pop(victim).close()
        assert seq.in_flight("p") == len(open_writes)
    for stack in open_writes.values():
        stack.close()
    assert seq.in_flight("p") == 0
