"""What one operation costs the nodes, measured in the simulator: CPU per op, and Raft turns, messages and frames
per op, for a fixed workload on a 3-node cluster. The counts are exact and do not move with machine load; the CPU
figure (this process's CPU time, so the three nodes, the client and the simulated network together) moves a
little with load, so compare two trees by alternating runs.

Workloads (``--only`` picks some):
- ``put-1x1``: one client putting into one partition, one put at a time (the single-client path).
- ``put-64x64``: 64 clients putting into 64 partitions (load spread over many groups).
- ``put-64x1``: 64 clients putting into one partition (the batching path).
- ``get-1x1``: one client reading one key linearizably (a ReadIndex round per read).
- ``create``: 300 partitions created at once by their first put, then 2 virtual seconds for them to go quiet.

    .venv/bin/python bench/sim_cost.py                      # every workload
    .venv/bin/python bench/sim_cost.py --only put-1x1 --profile /tmp/put.prof   # cProfile of one workload
    .venv/bin/python bench/sim_cost.py --only put-64x64 --kinds   # which turns an op costs (leader/follower, ...)
    .venv/bin/python bench/sim_cost.py --only put-64x64 --repeat 5   # the least CPU of five runs (steadier)

``--kinds`` breaks the turns down by what each one did: run by the group's leader (L) or a follower (F), whether
it persisted entries, applied entries, wrote a hard state, how many Raft messages it sent and whether its write
was synced; "no Ready" counts the turns that stepped what had arrived and found nothing to do (an
acknowledgement the commit did not need, say). Beside each kind, the time its two halves took on average (the
preparation, up to the write, and the finish, after it: ``borough.node.turns``), with the timer's own
microsecond or so; the CPU figure of the run includes the timers too.

Everything runs in this process on virtual time; nothing touches the network.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from borough.node.turns import Turns  # noqa: E402
from borough.raft.role import Role  # noqa: E402
from borough.testing import SimCluster  # noqa: E402

#: Turn kinds counted while a workload runs (``--kinds``), the seconds their two halves took, and whether counting
#: is on.
KINDS: collections.Counter[str] = collections.Counter()
PREPARE_SECONDS: collections.Counter[str] = collections.Counter()
FINISH_SECONDS: collections.Counter[str] = collections.Counter()
_COUNTING = [False]
#: ``--ops``: the number of operations every workload runs instead of its own (``None``: its own).
_OPS: list[int | None] = [None]


def _kind(turns: Turns, turn: Any) -> str:
    if turn is None:
        return "no Ready"
    p = turn.plan
    return " ".join(
        (
            "L" if turns._raw.role is Role.LEADER else "F",
            "entries" if p.entries else "-",
            "apply" if p.apply else "-",
            "hard-state" if p.hard_state is not None else "-",
            f"{len(p.send_before) + len(p.send_after)} msgs",
            "synced" if turn.sync else "",
        )
    )


def _count_kinds() -> None:
    """Wrap ``Turns.prepare`` and ``Turns.finish`` (this process only) to count what each turn did, and time each
    half, while ``_COUNTING[0]`` holds. (The timer's own cost, about a microsecond a call, is in the figures.)"""
    prepare, finish = Turns.prepare, Turns.finish
    kinds: dict[int, str] = {}

    def counted(self: Turns) -> Any:
        started = time.perf_counter()
        turn = prepare(self)
        took = time.perf_counter() - started
        if _COUNTING[0]:
            kind = _kind(self, turn)
            KINDS[kind] += 1
            PREPARE_SECONDS[kind] += took
            if turn is not None:
                kinds[id(turn)] = kind
        return turn

    def timed(self: Turns, turn: Any) -> None:
        started = time.perf_counter()
        finish(self, turn)
        kind = kinds.pop(id(turn), None)
        if _COUNTING[0] and kind is not None:
            FINISH_SECONDS[kind] += time.perf_counter() - started

    Turns.prepare = counted  # type: ignore[method-assign]
    Turns.finish = timed  # type: ignore[method-assign]


def _counts(sim: SimCluster) -> tuple[int, int, int]:
    nodes = [sn.node for sn in sim.nodes if sn.node is not None]
    return (
        sum(n.replicas.rounds.turns for n in nodes),
        sum(n.outbox.messages_sent for n in nodes),
        sum(n.outbox.frames_sent for n in nodes),
    )


async def _closed_loop(client: Any, names: list[str], clients: int, ops: int, op: str) -> int:
    rng = random.Random(1)
    done = 0

    async def worker(i: int) -> None:
        nonlocal done
        k = 0
        while done < ops:
            k += 1
            part = client.partition(names[rng.randrange(len(names))])
            if op == "put":
                await part.put(f"k{i}-{k}", b"x" * 100)
            else:
                await part.get("k")
            done += 1

    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(worker, i)
    return done


def _load(op: str, clients: int, partitions: int, ops: int) -> Callable[[SimCluster, Any], Awaitable[int]]:
    names = [f"p{i}" for i in range(partitions)]

    async def setup_and_run(sim: SimCluster, client: Any) -> int:
        return await _closed_loop(client, names, clients, _OPS[0] or ops, op)

    setup_and_run.names = names  # type: ignore[attr-defined]
    return setup_and_run


async def _create(sim: SimCluster, client: Any) -> int:
    n = _OPS[0] or 300

    async def one(i: int) -> None:
        await client.partition(f"c{i}").put("k", i)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    await trio.sleep(2)  # (the new groups go quiet: that is part of what creating one costs)
    return n


WORKLOADS: dict[str, tuple[str, Any]] = {
    "put-1x1": ("put", _load("put", 1, 1, 1500)),
    "put-64x64": ("put", _load("put", 64, 64, 6000)),
    "put-64x1": ("put", _load("put", 64, 1, 6000)),
    "get-1x1": ("get", _load("get", 1, 1, 2000)),
    "create": ("partition", _create),
}


async def _measure(name: str, profile: str | None) -> float:
    """Run workload ``name`` once, print its figures, and return its CPU per op in us."""
    unit, run = WORKLOADS[name]
    async with SimCluster(3, seed=1) as sim, sim.client() as client:
        names = getattr(run, "names", ["warm"])
        for n in names:
            await client.partition(n).put("k", b"v")
        await sim.wait_for_leaders(names)
        await trio.sleep(3)  # (every group settles, the idle ones go quiet)
        sim.net.tracer = None
        for sn in sim.nodes:
            if sn.node is not None:
                sn.node.trace = None
        before = _counts(sim)
        for counter in (KINDS, PREPARE_SECONDS, FINISH_SECONDS):
            counter.clear()
        _COUNTING[0] = True
        prof = cProfile.Profile() if profile else None
        cpu0 = time.process_time()
        if prof is not None:
            prof.enable()
        done = await run(sim, client)
        if prof is not None and profile is not None:
            prof.disable()
            prof.dump_stats(profile)
        cpu = time.process_time() - cpu0
        _COUNTING[0] = False
        turns, messages, frames = (b - a for a, b in zip(before, _counts(sim), strict=True))
        print(
            f"{name:10} {done:6} ops  CPU {cpu * 1e6 / done:7.0f} us/{unit}  turns {turns / done:6.2f}  "
            f"messages {messages / done:6.2f}  frames {frames / done:6.2f} per {unit}"
            + ("  (profiled)" if prof is not None else ""),
            flush=True,
        )
        for kind, n in KINDS.most_common():
            times = f"{1e6 * PREPARE_SECONDS[kind] / n:6.1f} + {1e6 * FINISH_SECONDS[kind] / n:5.1f} us"
            print(f"    {n / done:6.2f} per {unit}  {times}  {kind}")
        return cpu * 1e6 / done


def _callgrind(name: str, ops: int, out: str) -> tuple[int, int]:
    """Instructions executed by a run of workload ``name`` at ``ops`` operations under callgrind, and the operations
    it completed (a closed loop can finish a few more than asked)."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONMALLOC="malloc")
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--cache-sim=no", "--branch-sim=no", f"--callgrind-out-file={out}"]
        + [sys.executable, __file__, "--only", name, "--ops", str(ops)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    collected = re.search(r"Collected : (\d+)", proc.stderr)
    done = re.search(rf"^{re.escape(name)}\s+(\d+) ops", proc.stdout, re.M)
    if collected is None or done is None:
        raise RuntimeError(f"callgrind run of {name} said:\n{proc.stdout}\n{proc.stderr[-2000:]}")
    return int(collected.group(1)), int(done.group(1))


def _instructions(names: list[str], ops: int) -> None:
    """Print each workload's instructions per op: two runs under callgrind, of ``ops`` and ``2 * ops`` operations, in
    parallel; the difference of their totals over the difference of their operations leaves out the start-up and
    the settling both share. Deterministic to about a percent (same seed, same hash seed, virtual time)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    print(f"simulator, 3 nodes, under callgrind: instructions an op (runs of {ops} and {2 * ops} ops, difference)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results: dict[int, tuple[int, int]] = {}

            async def both(name: str = name, results: dict[int, tuple[int, int]] = results) -> None:
                async def one(n: int) -> None:
                    results[n] = await trio.to_thread.run_sync(_callgrind, name, n, f"{tmp}/{name}-{n}.out")

                async with trio.open_nursery() as nursery:
                    for n in (ops, 2 * ops):
                        nursery.start_soon(one, n)

            trio.run(both)
            (i1, d1), (i2, d2) = results[ops], results[2 * ops]
            print(
                f"{name:10} {(i2 - i1) / (d2 - d1) / 1e3:9.1f} k instructions an op  ({i1:,} for {d1}, {i2:,} for {d2})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS), help="run only these workloads")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the (one) workload into FILE")
    parser.add_argument("--kinds", action="store_true", help="break each workload's turns down by what they did")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each workload this many times and print the least CPU an op too"
    )
    parser.add_argument("--ops", type=int, help="operations each workload runs instead of its own number")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions an op under valgrind's callgrind (exact where CPU time drifts; about 50x slower)",
    )
    args = parser.parse_args()
    _OPS[0] = args.ops
    if args.instructions:
        _instructions(args.only or [n for n in WORKLOADS if n != "create"], args.ops or 1000)
        return
    if args.kinds:
        _count_kinds()
    names = args.only or list(WORKLOADS)
    if args.profile and len(names) != 1:
        parser.error("--profile takes exactly one workload (--only NAME)")
    print("simulator, 3 nodes: CPU is this process's (nodes, client and simulated network together)")
    for name in names:
        cpus = [
            trio.run(_measure, name, args.profile, clock=trio.testing.MockClock(autojump_threshold=0))
            for _ in range(args.repeat)
        ]
        if len(cpus) > 1:
            print(f"{name:10} least CPU of {len(cpus)} runs: {min(cpus):.0f} us an op")


if __name__ == "__main__":
    main()
