"""Where an operation's time goes on each node: the hot path's functions timed where they run, per operation.

Starts 3 ``borough serve`` processes on 127.0.0.1 (fsync on; ``--no-fsync`` to take the disk out), each timing
the calls of the functions on a put's and a get's path (``bench/_timed_serve.py``: frame decoding, the outbox,
the quick calls, the rounds and turns, the Raft core's step/ready/advance, the batch, the state machine, the group
commit, the store write and the engine's write with its fsync, the socket send); runs a closed-loop load from one
``open_client`` in this process; prints, for each node, each function's calls per operation, its median call
and the microseconds it took per operation, largest first.

Why: Python runs far slower inside a busy node than in a micro-benchmark of the same code (four processes on two
cores evict each other's caches), and cProfile or py-spy cannot time a 20 µs call in place. These figures are the
cost each step really has on the path. A function's time includes the timed functions it calls (``Rounds._round``
holds the turns it prepares; ``GroupCommit.submit`` holds a write made on the spot and the turns it finishes).
Timing adds about a microsecond per call; compare two trees with the same tool.

    .venv/bin/python bench/step_times.py                     # put, 1 partition, 1 client, 4 s
    .venv/bin/python bench/step_times.py --no-fsync --clients 64 --partitions 64

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cluster import WindowedCluster, percentile  # noqa: E402
from steps import load  # noqa: E402


class TimedCluster(WindowedCluster):
    wrapper, out_env, out_name = "_timed_serve.py", "BOROUGH_TIMES_OUT", "times-n{i}.json"

    def times(self, i: int) -> dict[str, dict[str, object]]:
        result: dict[str, dict[str, object]] = json.loads(self.window_lines(i)[0])
        return result


def report(node: int, times: dict[str, dict[str, object]], done: int) -> None:
    rows = []
    for name, t in times.items():
        n = int(t["calls"])  # type: ignore[call-overload]
        us = sorted(t["us"])  # type: ignore[call-overload]
        if not n or not us:
            continue
        per_op = sum(us) / len(us) * n / done  # (the mean of the durations kept, times the calls)
        rows.append((per_op, name, n / done, percentile(us, 0.5)))
    rows.sort(reverse=True)
    led = " (leads)" if any(name == "QuickCalls.try_call" and per_call >= 0.5 for _, name, per_call, _ in rows) else ""
    print(f"  node {node}{led}:  {'calls/op':>8}  {'median call':>11}  {'per op':>9}")
    for per_op, name, per_call, median in rows:
        print(f"    {name:34s} {per_call:8.2f}  {median:8.1f} us  {per_op:6.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=("put", "get"), default="put")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--no-fsync", action="store_true", help="serve with --no-fsync (the disk out of the path)")
    args = parser.parse_args()
    if args.no_fsync:
        os.environ["BENCH_NO_FSYNC"] = "1"
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-step-times-"))
    cluster = TimedCluster(root)
    try:
        cluster.start()
        done, latencies = trio.run(load, cluster, args.op, args.clients, args.partitions, args.seconds)
        fsync = "off" if args.no_fsync else "on"
        print(
            f"{args.op}, {args.partitions} partition(s), {args.clients} client(s), fsync {fsync}: {done} ops in "
            f"{args.seconds:g} s, p50 {percentile(latencies, 0.5) * 1e3:.2f} ms (each node's functions, timed in place)"
        )
        for i in range(3):
            report(i, cluster.times(i), done)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
