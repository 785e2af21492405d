"""Scheduling cost of one operation: trio task steps and event-loop passes per put (or get) on each node.

Starts 3 ``borough serve`` processes on 127.0.0.1 (fsync on), each with a trio instrument that counts task steps
by task name and event-loop passes (``bench/_counted_serve.py``); runs a closed-loop load from one
``open_client`` in this process; prints, for each node, the steps and passes per operation over the load window
and the tasks that took most steps. Every task switch costs CPU and, on the path of a lone write, latency; unlike
ops/s, these counts hardly move with the machine's load, so they compare two trees reliably.

    .venv/bin/python bench/steps.py                        # put, 1 partition, 1 client, 3 s
    .venv/bin/python bench/steps.py --clients 64 --partitions 64

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time
from collections import Counter

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cluster import WindowedCluster, percentile  # noqa: E402

import borough  # noqa: E402


class CountedCluster(WindowedCluster):
    wrapper, out_env, out_name = "_counted_serve.py", "BOROUGH_STEPS_OUT", "steps-n{i}.jsonl"

    def counts(self, i: int) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.window_lines(i, 2)]


async def load(
    cluster: WindowedCluster, op: str, clients: int, partitions: int, seconds: float
) -> tuple[int, list[float]]:
    names = [f"p{i}" for i in range(partitions)]
    latencies: list[float] = []
    async with borough.open_client(cluster.addresses) as client:
        for name in names:
            await client.partition(name).put("k", b"v")
        await trio.sleep(1.0)  # elections, first heartbeats
        done = 0
        stop = trio.current_time() + seconds

        async def worker(w: int) -> None:
            nonlocal done
            n = 0
            while trio.current_time() < stop:
                n += 1
                partition = client.partition(names[(w + n) % partitions])
                started = time.perf_counter()
                if op == "put":
                    await partition.put(f"{w}-{n}", b"x" * 100)
                else:
                    await partition.get("k")
                latencies.append(time.perf_counter() - started)
                done += 1

        cluster.snapshot()
        async with trio.open_nursery() as nursery:
            for w in range(clients):
                nursery.start_soon(worker, w)
        cluster.snapshot()
    return done, sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=("put", "get"), default="put")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-steps-"))
    cluster = CountedCluster(root)
    try:
        cluster.start()
        done, latencies = trio.run(load, cluster, args.op, args.clients, args.partitions, args.seconds)
        print(
            f"{args.op}, {args.partitions} partition(s), {args.clients} client(s): {done} ops in {args.seconds:g} s, "
            f"p50 {percentile(latencies, 0.5) * 1e3:.2f} ms"
        )
        for i in range(3):
            before, after = cluster.counts(i)
            steps = Counter(after["steps"]) - Counter(before["steps"])  # type: ignore[call-overload]
            passes = int(after["passes"]) - int(before["passes"])  # type: ignore[call-overload]
            top = ", ".join(f"{name.rsplit('.', 1)[-1]} {n / done:.1f}" for name, n in steps.most_common(6))
            print(f"  node {i}: {sum(steps.values()) / done:5.1f} steps/op, {passes / done:5.1f} passes/op  ({top})")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
