"""A register workload for tests against real processes (the live-port fuzzer, the process nemesis): clients
reading and writing a few keys through ``borough.testing.ClientOps``, so the history can be checked for
linearizability and lost writes."""

from __future__ import annotations

import random
from collections.abc import Sequence

import trio

from borough.testing import ClientOps, Status


async def register_workload(
    ops: ClientOps,
    rng: random.Random,
    stop: trio.Event,
    partitions: Sequence[str],
    keys: Sequence[str],
    *,
    gets: float = 0.5,
    deletes: float = 0.1,
) -> None:
    """Sequential random gets, puts (of values unique in the history) and deletes of (partition, key) registers,
    until ``stop`` is set; ``gets`` and ``deletes`` are their shares, the rest are puts."""
    n = 0
    while not stop.is_set():
        n += 1
        partition, key = rng.choice(partitions), rng.choice(keys)
        roll = rng.random()
        if roll < gets:
            await ops.get(partition, key)
        elif roll < 1.0 - deletes:
            await ops.put(partition, key, f"{ops.client_id}-{n}")
        else:
            await ops.delete(partition, key)


async def final_read(ops: ClientOps, partition: str, key: str) -> object:
    """The register's value (or NOT_FOUND), read until a read answers; recorded in the history too."""
    with trio.fail_after(60):
        while True:
            op = await ops.get(partition, key)
            if op.status is Status.OK:
                return op.result
