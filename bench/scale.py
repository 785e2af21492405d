"""Scale benchmark: many partitions on three ``borough serve`` processes (loopback, fsync on).

Creates ``--partitions`` partitions (a first put into each, from ``--create-clients`` concurrent client tasks
of one ``open_client`` in this process) and prints partitions/s; then, with every partition idle, the CPU each
node uses over ``--idle-seconds`` and its RSS; then the latency of a first write to a cold (new) partition
next to a write to an existing one; then a put and a linearizable get load on 100 random partitions while the
rest sit idle (ops/s, p50, p99).

    .venv/bin/python bench/scale.py                      # 10,000 partitions, 30 s idle window
    .venv/bin/python bench/scale.py --quick              # 1,000 partitions, 10 s idle window, 2 s loads

``--only-create`` stops after the creation figure; ``--profile DIR`` records each server with py-spy while it
creates (``DIR/nI.txt``, collapsed stacks: ``py-spy`` must be installed in the venv).

``--watch N`` prints each node's replicas hosted, led and awake (Raft clock running) every N seconds (the nodes
then serve their metrics); ``--keep`` keeps the data dirs and logs (``BENCH_LOG_LEVEL=info`` for more log).

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cluster import Cluster, percentile, proc_cpu  # noqa: E402

import borough  # noqa: E402

VALUE = b"v" * 100


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def scrape(address: str, names: tuple[str, ...]) -> list[float]:
    """The values of the gauges ``names`` (without the ``borough_`` prefix) on a node's ``/metrics``."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("borough_"):
            key, _, value = line.partition(" ")
            values[key.removeprefix("borough_")] = float(value)
    return [values.get(name, float("nan")) for name in names]


async def watch(cluster: Cluster, every: float) -> None:
    """Print, every ``every`` s, each node's replicas hosted / led / awake (their Raft clock runs)."""
    names = ("partitions_hosted", "partitions_led", "replicas_awake")
    while True:
        await trio.sleep(every)
        rows = []
        for address in cluster.metrics_addresses:
            try:
                hosted, led, awake = await trio.to_thread.run_sync(scrape, address, names)
                rows.append(f"{hosted:.0f}/{led:.0f}/{awake:.0f}")
            except OSError as exc:
                rows.append(f"({exc})")
        print(f"  [watch] replicas hosted/led/awake per node: {', '.join(rows)}", flush=True)


def start_profilers(pids: list[int], out: str) -> list[subprocess.Popen[bytes]]:
    """One ``py-spy record`` per server process, writing collapsed stacks to ``out/nI.txt``."""
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    py_spy = pathlib.Path(sys.executable).parent / "py-spy"
    procs = []
    for i, pid in enumerate(pids):
        args = [str(py_spy), "record", "-p", str(pid), "-r", "250", "--format", "raw", "-o", f"{out}/n{i}.txt"]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # (py-spy attaches)
    return procs


def stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        p.wait(timeout=30)


async def settle_system(client: borough.Client, *, stable: float = 2.0, within: float = 30.0) -> float:
    """Wait until every member hosts ``_system`` and its leader has not changed for ``stable`` seconds (a new
    cluster grows ``_system`` to three voters and moves its leadership to the ring owner in its first seconds; a
    creation figure taken meanwhile measures that too). Returns the seconds waited."""
    t0 = time.perf_counter()
    seen: tuple[str, ...] | None = None
    since = t0
    with trio.move_on_after(within):
        while True:
            status = await client.member_status()
            hosting = all(m.replicas is not None and "_system" in m.replicas for m in status)
            leaders = tuple(m.node_id for m in status if m.leaderships and "_system" in m.leaderships)
            now = time.perf_counter()
            if not hosting or leaders != seen:
                seen, since = (leaders if hosting else None), now
            elif now - since >= stable:
                break
            await trio.sleep(0.1)
    return time.perf_counter() - t0


async def create(client: borough.Client, names: list[str], concurrency: int) -> tuple[float, list[str], int]:
    """First put into every partition of ``names`` from ``concurrency`` tasks (one retry after a timeout); returns
    the seconds it took, the partitions created, and how many puts timed out."""
    it = iter(names)
    t0 = time.perf_counter()
    created: list[str] = []
    timeouts = 0

    async def worker() -> None:
        nonlocal timeouts
        for name in it:
            for _ in range(2):
                try:
                    await client.partition(name).put("k", VALUE)
                    created.append(name)
                    break
                except borough.Timeout:
                    timeouts += 1

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - t0, created, timeouts


async def load(
    client: borough.Client, names: list[str], *, op: str, clients: int, seconds: float
) -> tuple[float, float, float]:
    latencies: list[float] = []
    stop_at = trio.current_time() + seconds
    rng = random.Random(clients)

    async def worker() -> None:
        while trio.current_time() < stop_at:
            part = client.partition(names[rng.randrange(len(names))])
            t0 = time.perf_counter()
            try:
                if op == "put":
                    await part.put(os.urandom(8).hex(), VALUE)
                else:
                    await part.get("k")
            except borough.Timeout:
                continue  # (counted by its absence; the p99 then understates)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return len(latencies) / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000


async def run(args: argparse.Namespace) -> None:
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-scale-"))
    cluster = Cluster(root, metrics=args.watch > 0)
    try:
        cluster.start()
        pids = [p.pid for p in cluster.procs]
        async with borough.open_client(cluster.addresses) as client, trio.open_nursery() as watching:
            if args.watch > 0:
                watching.start_soon(watch, cluster, args.watch)
            names = [f"p{i:06d}" for i in range(args.partitions)]
            with trio.fail_after(30):
                await client.partition("warmup").put("k", VALUE)
            waited = await settle_system(client)
            print(f"_system settled (three replicas, a steady leader) {waited:.1f} s after the first write", flush=True)
            cpu0 = [proc_cpu(pid) for pid in pids]
            own0 = proc_cpu(os.getpid())
            profilers = start_profilers(pids, args.profile) if args.profile else []
            took, created, timeouts = await create(client, names, args.create_clients)
            cpu1 = [proc_cpu(pid) for pid in pids]
            own1 = proc_cpu(os.getpid())
            stop_profilers(profilers)
            print(
                f"created {len(created):,} of {len(names):,} partitions in {took:.1f} s: "
                f"{len(created) / took:,.0f} partitions/s ({args.create_clients} client tasks, {timeouts} puts timed "
                f"out); server CPU {sum(cpu1) - sum(cpu0):.1f} s, "
                f"{1000 * (sum(cpu1) - sum(cpu0)) / max(1, len(created)):.2f} ms a partition; this client "
                f"{own1 - own0:.1f} s",
                flush=True,
            )
            if args.only_create:
                watching.cancel_scope.cancel()
                return
            await trio.sleep(args.settle)
            cpu0 = [proc_cpu(pid) for pid in pids]
            t0 = time.perf_counter()
            await trio.sleep(args.idle_seconds)
            elapsed = time.perf_counter() - t0
            cpu1 = [proc_cpu(pid) for pid in pids]
            idle = [100 * (b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True)]
            rss = [rss_mb(pid) for pid in pids]
            print(
                f"idle over {elapsed:.0f} s: CPU per node {', '.join(f'{c:.1f}%' for c in idle)} of a core; "
                f"RSS per node {', '.join(f'{r:.0f} MB' for r in rss)}",
                flush=True,
            )
            cold: list[float] = []
            warm: list[float] = []
            failed = 0
            for i in range(args.cold):
                part = client.partition(f"cold{i:04d}")
                try:
                    t0 = time.perf_counter()
                    await part.put("k", VALUE)
                    cold.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    await part.put("k2", VALUE)
                    warm.append(time.perf_counter() - t0)
                except borough.Timeout:
                    failed += 1
            cold.sort()
            warm.sort()
            print(
                f"first write to a cold (new) partition, one at a time: p50 {percentile(cold, 0.5) * 1000:.1f} ms, "
                f"max {max(cold, default=float('nan')) * 1000:.1f} ms; the next write to it: p50 "
                f"{percentile(warm, 0.5) * 1000:.2f} ms (over {args.cold}; {failed} timed out): creating the "
                f"partition (registering it, making its three replicas, its first leader's first append) added "
                f"{(percentile(cold, 0.5) - percentile(warm, 0.5)) * 1000:.1f} ms",
                flush=True,
            )
            hot = random.Random(1).sample(created, min(100, len(created)))
            for op in ("put", "get"):
                ops, p50, p99 = await load(client, hot, op=op, clients=args.clients, seconds=args.load_seconds)
                what = "puts" if op == "put" else "linearizable gets"
                print(
                    f"{what} on 100 random partitions ({args.clients} client tasks), the rest idle: "
                    f"{ops:,.0f}/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms",
                    flush=True,
                )
            watching.cancel_scope.cancel()
    finally:
        cluster.stop()
        if args.keep:
            print(f"kept the nodes' data and logs in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=None, help="partitions to create (10,000; --quick 1,000)")
    parser.add_argument("--quick", action="store_true", help="1,000 partitions, 10 s idle window, 2 s loads")
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle CPU window (30 s; --quick 10 s)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait after creating before measuring")
    parser.add_argument("--create-clients", type=int, default=128, help="concurrent creating client tasks")
    parser.add_argument("--clients", type=int, default=16, help="client tasks of the load on 100 partitions")
    parser.add_argument("--load-seconds", type=float, default=None, help="seconds per load (5; --quick 2)")
    parser.add_argument("--watch", type=float, default=0, help="print replicas hosted/led/awake every N s (0: off)")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' data dirs and logs (printed at the end)")
    parser.add_argument("--only-create", action="store_true", help="stop after creating the partitions")
    parser.add_argument("--profile", metavar="DIR", help="py-spy each server while creating (DIR/nI.txt)")
    parser.add_argument("--cold", type=int, default=20, help="cold partitions to time a first write on")
    args = parser.parse_args()
    if args.partitions is None:
        args.partitions = 1_000 if args.quick else 10_000
    if args.idle_seconds is None:
        args.idle_seconds = 10.0 if args.quick else 30.0
    if args.load_seconds is None:
        args.load_seconds = 2.0 if args.quick else 5.0
    print(f"scale benchmark: 3 borough serve processes on 127.0.0.1, fsync on; {args.partitions:,} partitions")
    gc.set_threshold(50_000, 20, 10)  # the load generator holds 10,000 partitions' records too (as borough serve)
    trio.run(run, args)


if __name__ == "__main__":
    main()
