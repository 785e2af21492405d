"""A deterministic random workload over a store, for the SIGKILL soak test.

``run_round(store, rng, n)`` does round ``n``: one write (some synced) mixing key/value applies, log appends,
truncations, snapshot metas, compactions, destroys and snapshot installs between partitions whose names
prefix each other, plus a little garbage collection. Given the same seed, the same rounds produce the same
bytes in any store (the ids are allocated deterministically), so a replay in a MemoryStore tells what a
killed LevelDB writer's data dir must look like after any round.
"""

from __future__ import annotations

import random
from typing import Any

from borough.raft.records import Entry, HardState, SnapshotMeta
from borough.store import InvalidLogOperation, Store, encode_value

NAMES = ["p", "p\x00", "pp", "q", "é"]


def run_round(store: Store, rng: random.Random, n: int) -> bool:
    """Do round ``n``; return whether its write was synced."""
    sync = rng.random() < 0.4
    b = store.write_batch()
    install = None
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(NAMES)
        roll = rng.random()
        if roll < 0.45:
            ops: list[Any] = []
            for _ in range(rng.randint(1, 6)):
                text = f"k{rng.randint(0, 30)}"
                key: str | bytes = text.encode() if rng.random() < 0.3 else text
                if rng.random() < 0.8:
                    ops.append(("put", key, encode_value([n, "x" * rng.randint(0, 300)])))
                else:
                    ops.append(("del", key))
            b.apply(name, ops, n)
        elif roll < 0.7:
            first = store.last_index(name) + 1 - rng.randint(0, 2)
            first = max(first, store.first_index(name))
            b.append(name, [Entry(term=n, index=i, data=b"e%d" % n) for i in range(first, first + rng.randint(1, 4))])
        elif roll < 0.8:
            last = store.last_index(name)
            index = rng.randint(store.snapshot_meta(name).index, last)
            b.set_snapshot_meta(name, SnapshotMeta(index=index, term=n))
            b.compact(name, index - rng.randint(0, 1) if index else 0)
        elif roll < 0.85:
            b.set_hard_state(name, HardState(term=n, commit=n))
        elif roll < 0.9:
            b.destroy(name)
        elif install is None:
            src = rng.choice(NAMES)
            with store.snapshot_chunks(src, max_chunk_bytes=rng.randint(50, 2000)) as reader:
                chunks = list(reader)
            install = store.begin_snapshot_install(name)
            for c in chunks:
                install.add_chunk(c)
            install.finish(b, SnapshotMeta(index=reader.applied_index, term=n))
    try:
        store.write(b, sync=sync)
    except InvalidLogOperation:
        # Ops drawn from the state before the batch may clash within it; the same happens in every replay.
        if install is not None:
            install.abort()
        store.write(store.write_batch(), sync=sync)
    if rng.random() < 0.3:
        store.collect_garbage(rng.randint(1, 50))
    return sync


def dump(store: Store) -> list[tuple[bytes, bytes]]:
    """Every key and value, after collecting all garbage."""
    while store.collect_garbage(1 << 20):
        pass
    return list(store._engine_reader().scan(b"", b"\xff" * 16))
