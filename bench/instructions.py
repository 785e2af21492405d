"""Instructions one operation costs each node, counted exactly: three ``borough serve`` processes run under
valgrind's callgrind (fsync on, 127.0.0.1), with counting switched on only for the measured window.

CPU time on this machine drifts by a third within an hour; instruction counts do not (callgrind counts what the
CPU executes, not how long it took), so two trees compare to a percent or so. What they leave out: the kernel's
work (system calls, fsync, TCP), and what cache misses and task switches cost on top of the instructions. Under
callgrind a node runs about 50 times slower, so the closed loop finds fewer operations in flight at once than
the same clients would without it; compare trees at the same settings, not these counts with ``per_call.py``'s.

    .venv/bin/python bench/instructions.py                          # put, 1 client, 1 partition, 300 ops
    .venv/bin/python bench/instructions.py --clients 64 --ops 3000  # the batching path

Needs valgrind (``apt-get install valgrind``). Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cluster as cb  # noqa: E402

import borough  # noqa: E402


class CallgrindCluster(cb.Cluster):
    """The servers of ``bench/cluster.py``, each under callgrind with instrumentation off until ``counting``."""

    start_timeout = 300.0

    def spawn(self, i: int, address: str, args: list[str], env: dict[str, str]) -> None:
        out = self.root / f"callgrind-n{i}.out"
        callgrind = ["valgrind", "--tool=callgrind", "--cache-sim=no", "--branch-sim=no", "--instr-atstart=no"]
        # (PYTHONMALLOC: valgrind follows malloc; pymalloc's arenas only confuse it)
        env = dict(env, PYTHONMALLOC="malloc")
        super().spawn(i, address, [*callgrind, f"--callgrind-out-file={out}", *args], env)

    def control(self, *what: str) -> None:
        for p in self.procs:
            subprocess.run(["callgrind_control", *what, str(p.pid)], capture_output=True, check=False)

    def instructions(self, i: int) -> int:
        """Node ``i``'s instructions in the dumps taken so far (the window: counting was off before it)."""
        total = 0
        for path in self.root.glob(f"callgrind-n{i}.out*"):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    total += int(line.split()[1])
        return total


async def measure(cluster: CallgrindCluster, op: str, clients: int, partitions: int, ops: int) -> tuple[int, float]:
    names = [f"p{i}" for i in range(partitions)]
    async with borough.open_client(cluster.addresses, request_timeout=60) as client:
        for name in names:
            for _ in range(20):  # (warm: the partition exists, every path has run once)
                await client.partition(name).put("warm", cb.VALUE)
        await trio.sleep(2)
        cluster.control("-i", "on")
        done = 0
        started = trio.current_time()

        async def worker(w: int) -> None:
            nonlocal done
            i = 0
            while done < ops:
                part = client.partition(names[(w + i) % partitions])
                if op == "put":
                    await part.put(f"k{w}-{i % 100}", cb.VALUE)
                else:
                    await part.get("warm")
                i += 1
                done += 1

        async with trio.open_nursery() as nursery:
            for w in range(clients):
                nursery.start_soon(worker, w)
        seconds = trio.current_time() - started
        cluster.control("-i", "off")
        cluster.control("-d")
    return done, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=("put", "get"), default="put")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--ops", type=int, default=300)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench/instructions.py needs valgrind (apt-get install valgrind)")
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-instructions-"))
    cluster = CallgrindCluster(root)
    try:
        cluster.start()
        done, seconds = trio.run(measure, cluster, args.op, args.clients, args.partitions, args.ops)
        deadline = time.monotonic() + 30
        while not all(cluster.instructions(i) for i in range(3)) and time.monotonic() < deadline:
            time.sleep(0.2)  # (callgrind_control -d returns before the dump is written)
        print(
            f"{args.op}, {args.clients} client(s), {args.partitions} partition(s): {done} ops in {seconds:.1f} s "
            "under callgrind"
        )
        counts = [cluster.instructions(i) for i in range(3)]
        for i, n in enumerate(counts):
            print(f"  node {i}: {n / done / 1e3:8.0f} k instructions an op")
        print(f"  all three: {sum(counts) / done / 1e3:8.0f} k instructions an op")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
