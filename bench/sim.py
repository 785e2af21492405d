"""Simulation speed: simulated seconds per wall-clock second for a 5-node cluster with 10 partitions.

Rows: the cluster idle (Raft heartbeats, SWIM gossip, member-table refreshes only) with 10 partitions, with
none (``_system`` only), with 30, and with 1,000 (3 nodes; idle groups quiesce, so they cost nothing once quiet),
and with trace recording off; under load: 8 clients each doing a put or a
linearizable get every 50 ms across the 10 partitions, the same with a crash/restart and a partition/heal every
7 s, and 8 clients in a closed loop with no think time (saturation); and whole checked scenarios (3 nodes,
faults, linearizability check) as the Hypothesis tests run them. Goal: >= 50x real time idle. Last, fail-over:
4 clients putting into one partition of a 3-node cluster, its leader's node crashed; the virtual seconds from the
crash to the first acknowledged put, and the longest gap between acknowledged puts.

    /work/venv/bin/python bench/sim.py [--idle 120] [--load 30] [--scenarios 20]

Everything runs in this process on virtual time; nothing touches the network.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import borough  # noqa: E402
from borough.testing import SimCluster, random_scenario, run_scenario, run_simulation  # noqa: E402

NODES = 5
PARTITIONS = 10
CLIENTS = 8


async def _cluster_with_partitions(seed: int, partitions: int = PARTITIONS, nodes: int = NODES) -> Any:
    sim = SimCluster(nodes, seed=seed)
    await sim.__aenter__()
    async with sim.client() as client, trio.open_nursery() as nursery:
        for p in range(partitions):
            nursery.start_soon(client.partition(f"p{p}").put, "k", 0)
    with trio.fail_after(60):
        await sim.wait_for_leaders([f"p{p}" for p in range(partitions)])
    return sim


def _untrace(sim: Any) -> None:
    sim.net.tracer = None
    for sim_node in sim.nodes:
        if sim_node.node is not None:
            sim_node.node.trace = None


async def idle(seconds: float, trace: bool, partitions: int = PARTITIONS, nodes: int = NODES) -> dict[str, Any]:
    sim = await _cluster_with_partitions(1, partitions, nodes)
    try:
        if not trace:
            _untrace(sim)
        await trio.sleep(5)  # groups that were just written go quiet (quiesce_ticks)
        start, t0, cpu = time.perf_counter(), trio.current_time(), time.process_time()
        await trio.sleep(seconds)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        return {"virtual": trio.current_time() - t0, "wall": wall, "cpu": cpu, "ops": 0, "events": sim.trace.count}
    finally:
        await sim.__aexit__(None, None, None)


async def load(seconds: float, faults: bool, think: float) -> dict[str, Any]:
    sim = await _cluster_with_partitions(2)
    ops = 0
    errors = 0
    try:
        start, t0 = time.perf_counter(), trio.current_time()

        async def client(i: int) -> None:
            nonlocal ops, errors
            async with sim.client() as c:
                n = 0
                while trio.current_time() - t0 < seconds:
                    p = c.partition(f"p{(i + n) % PARTITIONS}")
                    try:
                        with trio.fail_after(5):
                            if n % 2:
                                await p.get("k", default=None)
                            else:
                                await p.put("k", n)
                        ops += 1
                    except (borough.BoroughError, trio.TooSlowError):
                        errors += 1
                    n += 1
                    if think:
                        await trio.sleep(think)

        async def chaos() -> None:
            victim = 0
            while trio.current_time() - t0 < seconds - 6:
                await trio.sleep(3)
                await sim.crash(victim)
                await trio.sleep(2)
                await sim.restart(victim)
                sim.partition([victim], [i for i in range(NODES) if i != victim])
                await trio.sleep(2)
                sim.heal()
                victim = (victim + 1) % NODES

        async with trio.open_nursery() as nursery:
            for i in range(CLIENTS):
                nursery.start_soon(client, i)
            if faults:
                nursery.start_soon(chaos)
        wall = time.perf_counter() - start
        return {"virtual": trio.current_time() - t0, "wall": wall, "ops": ops, "errors": errors}
    finally:
        await sim.__aexit__(None, None, None)


async def failover(seconds: float) -> dict[str, Any]:
    """4 clients put into one partition; its leader's node is crashed 2 s in and restarted 3 s later."""
    sim = await _cluster_with_partitions(3, 1, 3)
    acked: list[float] = []
    errors = 0
    try:
        leader = sim.leader_replica("p0")
        victim = sim.index_of(leader.host.node_id)
        survivors = [i for i in range(3) if i != victim]
        start, t0 = time.perf_counter(), trio.current_time()

        async def client(i: int) -> None:
            nonlocal errors
            async with sim.client(seeds=survivors) as c:
                n = 0
                while trio.current_time() - t0 < seconds:
                    try:
                        with trio.fail_after(5):
                            await c.partition("p0").put(f"c{i}", n)
                        acked.append(trio.current_time())
                    except (borough.BoroughError, trio.TooSlowError):
                        errors += 1
                    n += 1
                    await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(client, i)
            await trio.sleep(2)
            killed = trio.current_time()
            await sim.crash(victim)
            await trio.sleep(3)
            await sim.restart(victim)
        wall = time.perf_counter() - start
        after = sorted(t for t in acked if t > killed)
        gaps = [b - a for a, b in zip(sorted(acked), sorted(acked)[1:], strict=False)]
        return {
            "virtual": trio.current_time() - t0, "wall": wall, "ops": len(acked), "errors": errors,
            "first": after[0] - killed if after else float("inf"), "gap": max(gaps, default=0.0),
        }  # fmt: skip
    finally:
        await sim.__aexit__(None, None, None)


def scenarios(count: int) -> dict[str, Any]:
    virtual = wall = 0.0
    ops = 0
    for seed in range(count):
        result = run_scenario(random_scenario(seed))
        virtual += result.virtual_seconds
        wall += result.wall_seconds
        ops += len(result.history)
    return {"virtual": virtual, "wall": wall, "ops": ops, "count": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=120.0, help="virtual seconds idle (default 120)")
    parser.add_argument("--load", type=float, default=30.0, help="virtual seconds under load (default 30)")
    parser.add_argument("--scenarios", type=int, default=20, help="checked scenarios to run (default 20)")
    args = parser.parse_args()
    rows = [
        (f"idle, {NODES} nodes x {PARTITIONS} partitions", run_simulation(idle, args.idle, True)),
        ("idle, same, trace recording off", run_simulation(idle, args.idle, False)),
        (f"idle, {NODES} nodes, _system only", run_simulation(idle, args.idle, True, 0)),
        (f"idle, {NODES} nodes x 30 partitions", run_simulation(idle, args.idle, True, 30)),
        ("idle, 3 nodes x 1,000 partitions", run_simulation(idle, args.idle, True, 1000, 3)),
        (f"load, {CLIENTS} clients x 20 ops/s, 10 partitions", run_simulation(load, args.load, False, 0.05)),
        ("load, same + crash/partition every 7 s", run_simulation(load, args.load, True, 0.05)),
        (f"saturation, {CLIENTS} clients closed loop", run_simulation(load, 2.0, False, 0.0)),
        (f"{args.scenarios} checked scenarios (3 nodes, faults)", scenarios(args.scenarios)),
    ]
    print(f"{'run':<48} {'virtual s':>10} {'wall s':>8} {'x real time':>12} {'client ops':>11} {'ops/wall s':>11}")
    # (idle rows also say simulated seconds per CPU-second of this process: on a shared machine, wall time
    # counts the other processes' work too)
    for name, r in rows:
        ratio = r["virtual"] / r["wall"]
        ops = r["ops"]
        per_cpu = f"  ({r['virtual'] / r['cpu']:.0f}x per CPU-second)" if r.get("cpu") else ""
        print(
            f"{name:<48} {r['virtual']:>10.1f} {r['wall']:>8.2f} {ratio:>11.1f}x {ops:>11} {ops / r['wall']:>11.0f}"
            + per_cpu
        )
    f = run_simulation(failover, 8.0)
    print(
        f"fail-over, 4 clients x 1 partition, leader's node crashed: first put {f['first'] * 1000:.0f} ms after "
        f"the crash, longest gap {f['gap'] * 1000:.0f} ms, {f['errors']} errors, {f['ops']} puts (virtual time)"
    )


if __name__ == "__main__":
    main()
