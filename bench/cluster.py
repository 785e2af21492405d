"""Cluster benchmark: three ``borough serve`` processes on loopback with fsync on, loaded through
``borough.open_client``, next to PySyncObj 0.3.17 in the same run.

For 1, 16 and 64 concurrent client tasks (closed loop, one request in flight each): puts of random 16-byte keys
with 100-byte values into one partition and spread over 64 partitions, then linearizable gets and stale gets
of keys written beforehand. Prints ops/s, p50 and p99 latency, and the CPU seconds used by the three servers and
by the load generator over each measured window.

    .venv/bin/python bench/cluster.py [--seconds 3] [--quick] [--no-baseline]

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import borough  # noqa: E402

CLIENTS = (1, 16, 64)
KEY_BYTES = 16
VALUE = b"v" * 100
PRELOAD_KEYS = 2048


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Cluster:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.addresses: list[str] = []

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for i in range(3):
            address = f"127.0.0.1:{free_port()}"
            args = [sys.executable, "-m", "borough", "serve", "--listen", address, "--data", str(self.root / f"n{i}")]
            args += ["--log-level", "warning"] + (["--no-fsync"] if os.environ.get("BENCH_NO_FSYNC") else [])
            if i:
                args += ["--join", self.addresses[0]]
            log = open(self.root / f"n{i}.log", "wb")  # noqa: SIM115 - lives as long as the process
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=ROOT))
            self.addresses.append(address)
            deadline = time.monotonic() + 30
            while b"serving at" not in (self.root / f"n{i}.log").read_bytes():
                if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.root / f"n{i}.log").read_text())
                time.sleep(0.05)

    def cpu(self) -> float:
        return sum(proc_cpu(p.pid) for p in self.procs)

    def stop(self) -> None:
        stop_processes(self.procs)


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process still running, then wait up to 10 s for each (SIGKILL the ones that hang)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_load(
    client: borough.Client,
    cluster: Cluster,
    *,
    op: str,
    partitions: list[str],
    clients: int,
    seconds: float,
    warmup: float,
    keys: list[str],
) -> dict[str, float]:
    latencies: list[float] = []
    done = 0
    measuring = False
    stop_at = trio.current_time() + warmup + seconds
    rng = random.Random(clients)

    async def worker(w: int) -> None:
        nonlocal done
        while trio.current_time() < stop_at:
            part = client.partition(partitions[rng.randrange(len(partitions))])
            t0 = time.perf_counter()
            if op == "put":
                await part.put(os.urandom(KEY_BYTES // 2).hex(), VALUE)
            elif op == "get":
                await part.get(keys[rng.randrange(len(keys))])
            else:
                await part.get(keys[rng.randrange(len(keys))], consistency="stale")
            if measuring:
                latencies.append(time.perf_counter() - t0)
                done += 1

    async with trio.open_nursery() as nursery:
        for w in range(clients):
            nursery.start_soon(worker, w)
        await trio.sleep(warmup)
        measuring = True
        cpu0, load0, t0 = cluster.cpu(), time.process_time(), time.perf_counter()
        await trio.sleep(seconds)
        measuring = False
        elapsed = time.perf_counter() - t0
        cpu1, load1 = cluster.cpu(), time.process_time()
    latencies.sort()
    return {
        "ops_per_s": done / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "server_cpu_s": cpu1 - cpu0,
        "load_cpu_s": load1 - load0,
    }


def row(label: str, clients: int, r: dict[str, float]) -> str:
    return (
        f"| {label:<34} | {clients:>7} | {r['ops_per_s']:>9,.0f} | {r['p50_ms']:>7.2f} | {r['p99_ms']:>7.2f} "
        f"| {r['server_cpu_s']:>10.2f} | {r['load_cpu_s']:>8.2f} |"
    )


HEADER = (
    "| what                               | clients |     ops/s |  p50 ms |  p99 ms | server CPU | load CPU |\n"
    "|------------------------------------|---------|-----------|---------|---------|------------|----------|"
)


async def bench_borough(seconds: float, warmup: float, clients_list: tuple[int, ...]) -> list[str]:
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-bench-"))
    cluster = Cluster(root)
    rows: list[str] = []
    try:
        cluster.start()
        async with borough.open_client(cluster.addresses) as client:
            one = ["bench-one"]
            many = [f"bench-{i}" for i in range(64)]
            # Create the partitions and preload the keys the reads use.
            keys = [f"key{i:012d}" for i in range(PRELOAD_KEYS)]
            with trio.fail_after(120):
                for name in one + many:
                    await client.partition(name).put("warm", 1)
                for name in one + many:
                    part = client.partition(name)
                    for start in range(0, len(keys), 256):
                        await part.batch([("put", k, VALUE) for k in keys[start : start + 256]])
            for op, label in (
                ("put", "borough put"),
                ("get", "borough get (linearizable)"),
                ("stale", "borough get (stale)"),
            ):
                for parts, where in ((one, "1 partition"), (many, "64 partitions")):
                    for clients in clients_list:
                        r = await run_load(
                            client,
                            cluster,
                            op=op,
                            partitions=parts,
                            clients=clients,
                            seconds=seconds,
                            warmup=warmup,
                            keys=keys,
                        )
                        rows.append(row(f"{label}, {where}", clients, r))
                        print(rows[-1], flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


def bench_pysyncobj(seconds: float, warmup: float, clients_list: tuple[int, ...]) -> list[str]:
    from pysyncobj_baseline import run_pysyncobj

    rows = []
    for clients in clients_list:
        r: dict[str, Any] = run_pysyncobj(clients, seconds, mode="put", warmup=warmup, log_compaction=False)
        rows.append(row("pysyncobj put (no fsync, in-memory)", clients, r))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="1 s per figure")
    parser.add_argument("--no-baseline", action="store_true", help="skip PySyncObj")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    print(f"cluster benchmark: 3 borough serve processes on 127.0.0.1, fsync on; {seconds:g} s per figure")
    print("keys: random 16 bytes; values: 100 bytes; closed loop, one request in flight per client task")
    print("CPU: seconds used during the window by the 3 servers together, and by this load generator\n")
    print(HEADER, flush=True)
    rows = trio.run(bench_borough, seconds, args.warmup, CLIENTS)
    if not args.no_baseline:
        print("\nPySyncObj 0.3.17 baseline: 3 processes on 127.0.0.1, @replicated dict, load issued inside its")
        print("processes as its own benchmark does. It keeps its log in memory and never fsyncs.\n")
        print(HEADER, flush=True)
        rows += bench_pysyncobj(seconds, args.warmup, CLIENTS)


if __name__ == "__main__":
    main()
