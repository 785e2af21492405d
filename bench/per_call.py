"""Per-call costs: one op against one partition (or spread over several) at N client tasks, with the CPU each
process spent per op.

Starts the three ``borough serve`` processes of ``bench/cluster.py`` (fsync on, metrics listeners on), preloads
the keys the reads use, runs the op for ``--seconds``, then prints ops/s and, per op: the load generator's CPU,
each server's CPU (user and system) and, from each node's ``/metrics``, its socket writes and reads, Raft frames
and messages sent and rounds (how well the wire and the rounds batch). CPU per op is steadier than ops/s on a
shared machine: compare trees by it, alternating them in one run.

    .venv/bin/python bench/per_call.py get --clients 64 [--seconds 4] [--repeat 2] [--partitions 64]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time
import urllib.request

import trio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import cluster as cb  # noqa: E402  (puts the repository first on sys.path, then imports borough)

import borough  # noqa: E402

SERIES = ("wire_writes", "wire_reads", "raft_frames_sent", "raft_messages_sent", "raft_rounds", "raft_turns")


def cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def scrape(address: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"borough_(\w+?)(?:_total)?\s+(\S+)$", line)
        if m and m.group(1) in SERIES:
            out[m.group(1)] = float(m.group(2))
    return out


async def run(op: str, clients: int, seconds: float, partitions: int) -> None:
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-per-call-"))
    cluster = cb.Cluster(root, metrics=True)
    try:
        cluster.start()
        async with borough.open_client(cluster.addresses) as client:
            keys = [f"key{i:012d}" for i in range(cb.PRELOAD_KEYS)]
            names = ["bench-one"] if partitions == 1 else [f"bench-{i}" for i in range(partitions)]
            for name in names:
                part = client.partition(name)
                await part.put("warm", 1)
                for start in range(0, len(keys), 256):
                    await part.batch([("put", k, cb.VALUE) for k in keys[start : start + 256]])
            await trio.sleep(0.5)  # (stale reads at followers: let them apply the preload)
            pids = [p.pid for p in cluster.procs] + [os.getpid()]
            cpu0, m0 = [cpu(pid) for pid in pids], [scrape(a) for a in cluster.metrics_addresses]
            r = await cb.run_load(
                client,
                cluster,
                op=op,
                partitions=names,
                clients=clients,
                seconds=seconds,
                warmup=0.0,
                keys=keys,
            )
            cpu1, m1 = [cpu(pid) for pid in pids], [scrape(a) for a in cluster.metrics_addresses]
        n = r["ops_per_s"] * seconds
        rate, p50, p99 = r["ops_per_s"], r["p50_ms"], r["p99_ms"]
        where = f"{clients} clients into {partitions} partitions"
        print(f"{op} at {where}: {rate:,.0f} ops/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        print(f"  interpreter: {cb.interpreter()}")
        user, system = (1e6 * (cpu1[-1][i] - cpu0[-1][i]) / n for i in (0, 1))
        print(f"  load generator: {user + system:6.1f} us/op (user {user:.1f}, system {system:.1f})")
        for i in range(3):
            user, system = (1e6 * (cpu1[i][k] - cpu0[i][k]) / n for k in (0, 1))
            per_op = " ".join(f"{s}={(m1[i].get(s, 0) - m0[i].get(s, 0)) / n:.3f}" for s in SERIES)
            print(f"  server {i}:       {user + system:6.1f} us/op (user {user:.1f}, system {system:.1f}); {per_op}")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("op", choices=["put", "get", "stale"])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=1, help="spread the ops over this many partitions")
    args = parser.parse_args()
    for _ in range(args.repeat):
        trio.run(run, args.op, args.clients, args.seconds, args.partitions)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
