"""Benchmark of the hash ring: replica-set lookups per second (cold and cached) for 100 members with the
default virtual points, and the time to rebuild the ring after one member changes. Target: >= 200,000
cached lookups/s.

    /work/venv/bin/python bench/ring.py                  # the benchmark table
    /work/venv/bin/python bench/ring.py --choose-vnodes  # the measurements behind DEFAULT_VNODES
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from borough.raft.records import NodeId  # noqa: E402
from borough.ring.hashring import DEFAULT_REPLICAS, DEFAULT_VNODES, HashRing  # noqa: E402
from borough.ring.members import Member, MemberTable  # noqa: E402

MEMBERS = 100
NAMES = 100_000


def table_of(n: int, version: int = 1) -> MemberTable:
    return MemberTable(
        version=version,
        members=[Member(node_id=NodeId(f"node-{i:03d}"), address=f"10.0.{i // 256}.{i % 256}:7000") for i in range(n)],
    )


def best_of(repeats: int, fn) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def benchmark() -> None:
    table = table_of(MEMBERS)
    names = [f"partition-{i}" for i in range(NAMES)]
    rows: list[tuple[str, str]] = []

    build = best_of(5, lambda: HashRing(table))
    rows.append((f"build ring, {MEMBERS} members x {DEFAULT_VNODES} points", f"{build * 1000:8.1f} ms"))

    def cold() -> None:
        ring = HashRing(table)  # a fresh ring: every lookup misses the name cache and the per-point memo
        for n in names:
            ring.replica_set(n)

    cold_s = best_of(3, cold) - build
    rows.append(("lookups/s, cold (new ring, first lookup of each name)", f"{NAMES / cold_s:12,.0f}"))

    ring = HashRing(table, cache_size=NAMES)
    for n in names:
        ring.replica_set(n)
    uncached = best_of(3, lambda: [ring.replica_set_uncached(n) for n in names])
    rows.append(("lookups/s, name cache bypassed (hash + bisect)", f"{NAMES / uncached:12,.0f}"))
    cached = best_of(5, lambda: [ring.replica_set(n) for n in names])
    rows.append(("lookups/s, cached", f"{NAMES / cached:12,.0f}"))

    grown = table.with_member(Member(node_id=NodeId("node-new"), address="10.9.9.9:7000"))
    rows.append(
        ("rebuild after one member joins (updated())", f"{best_of(5, lambda: ring.updated(grown)) * 1000:8.1f} ms")
    )
    shrunk = table.without(NodeId("node-042"))
    rows.append(
        ("rebuild after one member leaves (updated())", f"{best_of(5, lambda: ring.updated(shrunk)) * 1000:8.1f} ms")
    )
    rows.append(
        ("rebuild from scratch after one member joins", f"{best_of(5, lambda: HashRing(grown)) * 1000:8.1f} ms")
    )

    width = max(len(k) for k, _ in rows)
    print(f"hash ring: {MEMBERS} members, {DEFAULT_VNODES} points each, R={DEFAULT_REPLICAS}, {NAMES:,} names")
    print("-" * (width + 16))
    for k, v in rows:
        print(f"{k:<{width}}  {v:>12}")
    print("-" * (width + 16))
    verdict = "meets" if NAMES / cached >= 200_000 else "MISSES"
    print(f"cached lookups {verdict} the target of 200,000/s")


def choose_vnodes(tables: int) -> None:
    """For each candidate: the worst max/mean replica count over random 5-member tables, and the worst moved
    slots / fair share when one member joins 4..12, over ``tables`` random tables each, 10,000 names."""
    names = [f"partition-{i}" for i in range(10_000)]
    rng = random.Random(2024)
    print(f"{'vnodes':>6}  {'max/mean (5 members)':>21}  {'moved/fair (join)':>17}  {'build 100 members':>17}")
    for v in [32, 64, 128, 160, 256]:
        worst_balance = worst_move = 0.0
        for _ in range(tables):
            ids = [f"n{rng.getrandbits(40):x}" for _ in range(5)]
            five = HashRing.from_node_ids(ids, vnodes=v)
            counts = Counter(x for n in names for x in five.replica_set_uncached(n))
            worst_balance = max(worst_balance, max(counts.values()) / (len(names) * 3 / 5))
            ids = [f"n{rng.getrandbits(40):x}" for _ in range(rng.randint(4, 12))]
            a = HashRing.from_node_ids(ids, vnodes=v)
            b = HashRing.from_node_ids([*ids, "newcomer"], vnodes=v)
            moved = sum(len(set(b.replica_set_uncached(n)) - set(a.replica_set_uncached(n))) for n in names)
            worst_move = max(worst_move, moved / (len(names) * 3 / (len(ids) + 1)))
        build = best_of(3, lambda v=v: HashRing(table_of(100), vnodes=v))  # type: ignore[misc]
        print(f"{v:>6}  {worst_balance:>21.3f}  {worst_move:>17.3f}  {build * 1000:>14.1f} ms", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--choose-vnodes", action="store_true", help="measure balance and movement per vnode count")
    parser.add_argument("--tables", type=int, default=200, help="random tables per vnode count (--choose-vnodes)")
    args = parser.parse_args()
    if args.choose_vnodes:
        choose_vnodes(args.tables)
    else:
        benchmark()
