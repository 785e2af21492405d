"""Storage benchmark: the store's apply path against raw plyvel, and synced group commit.

Run from the worktree root: ``/work/venv/bin/python bench/store.py`` (``--quick`` for a smoke run). Prints:

1. Unsynced throughput of raw plyvel ``WriteBatch`` puts against ``WriteBatch.apply`` + ``Store.write`` for
   the same bytes (the same keys and values land on disk; the raw side is handed the final key/value bytes).
   Target: the apply path reaches at least half of raw plyvel.
2. Synced group commit: log entries/s when each synced write carries batches of 1, 10, 100, 1000 entries spread
   over 1, 10, 100 partitions (one committing task per partition, as replicas do), through
   ``open_group_commit`` with the writes offloaded to a thread. Target: 100-entry batches reach at least 20x
   the synced one-entry-at-a-time rate ("vs 1x1": the store with one entry per write; "vs put": raw plyvel
   ``put(sync=True)``). fsync latency varies a lot on virtual disks, so compare within one run.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import plyvel  # type: ignore[import-untyped]  # noqa: E402
import trio  # noqa: E402

from borough.raft.records import Entry  # noqa: E402
from borough.store import LevelDBStore, encode_value, open_group_commit  # noqa: E402
from borough.store import encoding as enc  # noqa: E402


def run_raw(path: str, raw_batches: list[list[tuple[bytes, bytes]]]) -> float:
    db = plyvel.DB(path, create_if_missing=True, write_buffer_size=16 << 20)
    t0 = time.perf_counter()
    for rb in raw_batches:
        w = db.write_batch()
        put = w.put
        for k, v in rb:
            put(k, v)
        w.write()
    elapsed = time.perf_counter() - t0
    db.close()
    return elapsed


def run_store(store: LevelDBStore, batches: list[list[tuple[str, str, bytes]]]) -> float:
    t0 = time.perf_counter()
    for n, ops in enumerate(batches):
        wb = store.write_batch()
        wb.apply("bench", ops, n + 1)
        store.write(wb, sync=False)
    elapsed = time.perf_counter() - t0
    assert store.applied_index("bench") == len(batches)
    return elapsed


def apply_vs_raw(tmp: str, total_ops: int, per_batch: int, rounds: int = 2) -> list[tuple[str, float, float]]:
    """Best of ``rounds`` runs each (fresh databases, the order alternating), as LevelDB's background
    compactions make single runs noisy."""
    values = [encode_value({"n": i, "payload": "x" * 80}) for i in range(per_batch)]
    batches = []
    for b in range(total_ops // per_batch):
        batches.append([("put", f"user:{b:06d}:{i:04d}", values[i]) for i in range(per_batch)])
    raw_best = store_best = float("inf")
    nbytes = 0
    for r in range(rounds):
        store = LevelDBStore.open(os.path.join(tmp, f"store-{r}"))
        # Warm the partition up so it exists; then build the raw key/values the store will write.
        wb = store.write_batch()
        wb.apply("bench", [], 0)
        store.write(wb)
        gen_prefix = enc.data_prefix(store._data_gen("bench"))
        applied_key = store._v().parts.get("bench").applied_key
        raw_batches = [
            [(gen_prefix + op[1].encode(), op[2]) for op in ops] + [(applied_key, enc.u64(n + 1))]
            for n, ops in enumerate(batches)
        ]
        nbytes = sum(len(k) + len(v) for rb in raw_batches for k, v in rb)

        raw_path = os.path.join(tmp, f"raw-{r}")
        if r % 2:
            store_best = min(store_best, run_store(store, batches))
            raw_best = min(raw_best, run_raw(raw_path, raw_batches))
        else:
            raw_best = min(raw_best, run_raw(raw_path, raw_batches))
            store_best = min(store_best, run_store(store, batches))
        store.close()
    count = len(batches) * per_batch
    return [
        ("raw plyvel WriteBatch", count / raw_best, nbytes / raw_best / 1e6),
        ("store apply + write", count / store_best, nbytes / store_best / 1e6),
    ]


async def group_commit_run(tmp: str, entries: int, partitions: int, seconds: float) -> tuple[float, float]:
    """entries/s and average batches per synced write, with min(partitions, entries) committing tasks."""
    path = os.path.join(tmp, f"gc-{entries}-{partitions}")
    store = LevelDBStore.open(path)
    tasks = min(partitions, entries)
    per_task = entries // tasks
    data = b"c" * 100
    committed = 0
    async with open_group_commit(store, offload=True) as gc:
        deadline = trio.current_time() + seconds

        async def replica(name: str) -> None:
            nonlocal committed
            index = 1
            while trio.current_time() < deadline:
                b = store.write_batch()
                b.append(name, [Entry(term=1, index=i, data=data) for i in range(index, index + per_task)])
                await gc.commit(b)
                index += per_task
                committed += per_task

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for p in range(tasks):
                nursery.start_soon(replica, f"partition-{p}")
        elapsed = time.perf_counter() - t0
        per_write = gc.batches_committed / max(gc.writes, 1)
    store.close()
    shutil.rmtree(path)
    return committed / elapsed, per_write


def synced_put_rate(tmp: str, seconds: float) -> float:
    db = plyvel.DB(os.path.join(tmp, "sync-raw"), create_if_missing=True)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        db.put(b"k%d" % n, b"c" * 100, sync=True)
        n += 1
    rate = n / (time.perf_counter() - t0)
    db.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke run")
    args = parser.parse_args()
    total_ops = 20_000 if args.quick else 300_000
    seconds = 0.2 if args.quick else 1.5
    # Set TMPDIR to a directory on a real disk (not tmpfs) so that fsync costs what it costs.
    tmp = tempfile.mkdtemp(prefix="borough-store-bench-")
    try:
        print(f"## apply path vs raw plyvel (unsynced, {total_ops} puts of ~100 B in batches of 100, best of 2)")
        print(f"{'path':<24}{'ops/s':>12}{'MB/s':>9}{'vs raw':>8}")
        rows = apply_vs_raw(tmp, total_ops, 100)
        for name, ops_s, mb_s in rows:
            print(f"{name:<24}{ops_s:>12,.0f}{mb_s:>9.1f}{ops_s / rows[0][1]:>8.2f}")
        print()
        print(f"## group commit, sync on ({seconds}s per cell; entries of 100 B; one task per partition)")
        base_rate = synced_put_rate(tmp, seconds)
        print(f"raw plyvel put(sync=True), one at a time: {base_rate:,.0f} puts/s")
        head = f"{'entries/batch':>13}{'partitions':>11}{'entries/s':>12}{'batches/write':>14}"
        print(f"{head}{'vs 1x1':>8}{'vs put':>8}")
        one = None
        for entries in (1, 10, 100, 1000):
            for partitions in (1, 10, 100):
                if entries == 1 and partitions > 1:
                    continue  # one entry cannot be spread over several partitions
                rate, per_write = trio.run(group_commit_run, tmp, entries, partitions, seconds)
                one = one or rate
                print(
                    f"{entries:>13}{partitions:>11}{rate:>12,.0f}{per_write:>14.1f}{rate / one:>8.1f}"
                    f"{rate / base_rate:>8.1f}"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
