"""Per-call costs: one op against one partition (or spread over several) at N client tasks, with the CPU each
process spent per op.

Starts the three ``borough serve`` processes of ``bench/cluster.py`` (fsync on, metrics listeners on), preloads
the keys the reads use, runs the op for ``--seconds``, then prints ops/s and, per op: the load generator's CPU,
each server's CPU (user and system) and, from each node's ``/metrics``, its socket writes and reads, Raft frames
and messages sent and rounds (how well the wire and the rounds batch), and its synced writes an op and the share of
the window one was in flight, from its hand-off to its landing (``borough_commit_write_seconds``): well under 100%
means the writes are not back to back, so the disk is not what the load waits for. CPU per op is steadier than
ops/s on a shared machine: compare trees by it, alternating them in one run.

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
        m = re.match(r'borough_commit_write_seconds_(sum|count)\{synced="true"\}\s+(\S+)$', line)
        if m:
            out[f"synced_{m.group(1)}"] = float(m.group(2))
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
            delta = {s: m1[i].get(s, 0) - m0[i].get(s, 0) for s in (*SERIES, "synced_sum", "synced_count")}
            per_op = " ".join(f"{s}={delta[s] / n:.3f}" for s in SERIES)
            disk = (
                f"; synced writes {delta['synced_count'] / n:.3f}/op, "
                f"in flight {100 * delta['synced_sum'] / seconds:.0f}% of the window"
            )
            cpu_op = f"{user + system:6.1f} us/op (user {user:.1f}, system {system:.1f})"
            print(f"  server {i}:       {cpu_op}; {per_op}{disk}")
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
