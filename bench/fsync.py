"""What one durable write costs on this disk, by the way it is made, alone and with other processes syncing at once.

A synced write is on every put's path (the leader's and a follower's), and three ``borough serve`` processes on
one machine sync at the same moments. This measures the ways a small durable write can be made, each in
``--writers`` processes released together (one writer each, as the three nodes are), and prints each way's p50
and p90 per write:

- ``leveldb``: a synced plyvel ``WriteBatch`` of one 300-byte put (what the store does: LevelDB appends to its log
  and calls ``fdatasync``);
- ``append``: 300 bytes appended to a growing file, then ``fdatasync`` (LevelDB's log, without LevelDB);
- ``prealloc``: 4 KiB written in place into a preallocated, zero-filled file, then ``fdatasync``;
- ``direct``: 4 KiB written in place with ``O_DIRECT | O_DSYNC`` into a preallocated, zero-filled file (skipped
  where the file system refuses ``O_DIRECT``).

    .venv/bin/python bench/fsync.py [--writes 300] [--writers 1,3] [--dir DIR]

The files go in a temporary directory under ``--dir`` (default: the system's temporary directory, which should be
on the disk the nodes' data would use) and are removed afterwards.
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import plyvel  # type: ignore[import-untyped]

WAYS = ("leveldb", "append", "prealloc", "direct")
BLOCK = 4096


def _prepared_file(path: str, blocks: int) -> None:
    with open(path, "wb") as f:
        f.write(b"\0" * (blocks * BLOCK))
        f.flush()
        os.fsync(f.fileno())


def _writer(way: str, folder: str, writes: int) -> Callable[[int], None] | None:
    """A function making write ``i`` durable the ``way`` named (None: not possible here)."""
    if way == "leveldb":
        db = plyvel.DB(os.path.join(folder, "ldb"), create_if_missing=True)
        value = b"x" * 300

        def leveldb(i: int) -> None:
            batch = db.write_batch(sync=True)
            batch.put(b"k%08d" % i, value)
            batch.write()

        return leveldb
    if way == "append":
        fd = os.open(os.path.join(folder, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        record = b"y" * 300

        def append(i: int) -> None:
            os.write(fd, record)
            os.fdatasync(fd)

        return append
    path = os.path.join(folder, way)
    _prepared_file(path, writes)
    if way == "prealloc":
        fd = os.open(path, os.O_WRONLY)
        block = b"z" * BLOCK

        def prealloc(i: int) -> None:
            os.pwrite(fd, block, i * BLOCK)
            os.fdatasync(fd)

        return prealloc
    try:
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    except (AttributeError, OSError):
        return None
    aligned = mmap.mmap(-1, BLOCK)  # (page-aligned, as O_DIRECT needs)
    aligned.write(b"d" * BLOCK)
    try:
        os.pwrite(fd, aligned, 0)
    except OSError:  # (a file system that takes the flag but not the write)
        return None

    def direct(i: int) -> None:
        os.pwrite(fd, aligned, i * BLOCK)

    return direct


def _run(way: str, folder: str, writes: int, start: Any, out: Any) -> None:
    os.makedirs(folder, exist_ok=True)
    write = _writer(way, folder, writes)
    start.wait()
    if write is None:
        out.put(None)
        return
    took = []
    for i in range(writes):
        t0 = time.perf_counter()
        write(i)
        took.append(time.perf_counter() - t0)
    out.put(took)


def measure(way: str, root: str, writes: int, writers: int) -> list[float] | None:
    """Every write's seconds over ``writers`` processes doing ``way`` at once (None: not possible here)."""
    start = multiprocessing.Barrier(writers)
    out: multiprocessing.Queue[list[float] | None] = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_run, args=(way, os.path.join(root, f"{way}-{n}"), writes, start, out))
        for n in range(writers)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    if any(r is None for r in results):
        return None
    return sorted(t for r in results if r is not None for t in r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=300, help="durable writes per writer")
    parser.add_argument("--writers", default="1,3", help="how many processes write at once, comma-separated")
    parser.add_argument("--dir", default=None, help="where the temporary files go")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="borough-fsync-", dir=args.dir)
    try:
        print(f"durable writes in {root} ({args.writes} a writer): p50 and p90 per write")
        for writers in (int(n) for n in args.writers.split(",")):
            for way in WAYS:
                took = measure(way, os.path.join(root, f"w{writers}"), args.writes, writers)
                if took is None:
                    print(f"  {writers} writer(s)  {way:9} not possible here")
                    continue
                p50, p90 = took[len(took) // 2], took[int(len(took) * 0.9)]
                print(f"  {writers} writer(s)  {way:9} p50 {p50 * 1e6:6.0f} us   p90 {p90 * 1e6:6.0f} us", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
