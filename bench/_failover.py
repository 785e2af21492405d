"""Fail-over benchmark (issue 16): 3 ``borough serve`` processes on loopback, 16 client tasks putting into 8
partitions, then the leader process of one partition is SIGKILLed.

Prints the time from the kill to the first put on that partition that succeeded after being *sent* after the
kill (a put already in flight may be acknowledged just after the kill: it says nothing about fail-over), the
longest gap between successful puts on that partition around the kill, and how many operations raised an
error (on that partition, and on the others). Goals: first put under 1 s, no error.

    .venv/bin/python bench/cluster.py --failover [--seconds 6]
    .venv/bin/python bench/_failover.py [--seconds 6] [--repeat 3]   # the same, several times

Everything runs on 127.0.0.1 and stops by itself. Figures on a loaded machine are noisy: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import borough  # noqa: E402

PARTITIONS = 8
CLIENTS = 16
VALUE = b"v" * 100


async def failover_once(seconds: float, kill_after: float = 2.0) -> dict[str, Any]:
    from cluster import Cluster  # the three ``borough serve`` processes of bench/cluster.py

    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-failover-"))
    cluster = Cluster(root)
    names = [f"fo-{i}" for i in range(PARTITIONS)]
    done: list[tuple[str, float, float]] = []  # (partition, sent, acknowledged)
    errors: dict[str, int] = {}
    try:
        cluster.start()
        async with borough.open_client(cluster.addresses) as client:
            with trio.fail_after(60):
                for name in names:
                    await client.partition(name).put("warm", 1)
            victim_name = names[0]
            statuses = await client.member_status()
            leader_address = next(s.address for s in statuses if s.leaderships and victim_name in s.leaderships)
            victim = cluster.addresses.index(leader_address)
            start = trio.current_time()
            killed: list[float] = []

            async def worker(w: int) -> None:
                rng = random.Random(w)
                part = client.partition(names[w % PARTITIONS])
                while trio.current_time() - start < seconds:
                    sent = trio.current_time()
                    try:
                        with trio.fail_after(10):
                            await part.put(f"k{rng.getrandbits(64):016x}", VALUE)
                        done.append((part.name, sent, trio.current_time()))
                    except (borough.BoroughError, trio.TooSlowError) as exc:
                        key = part.name if part.name == victim_name else "others"
                        errors[key] = errors.get(key, 0) + 1
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

            async with trio.open_nursery() as nursery:
                for w in range(CLIENTS):
                    nursery.start_soon(worker, w)
                await trio.sleep(kill_after)
                cluster.procs[victim].send_signal(signal.SIGKILL)
                killed.append(trio.current_time())
        kill = killed[0]
        mine = sorted(ack for name, _, ack in done if name == victim_name)
        after = sorted(ack for name, sent, ack in done if name == victim_name and sent > kill)
        gaps = [b - a for a, b in zip(mine, mine[1:], strict=False) if b > kill]
        return {
            "first": after[0] - kill if after else float("inf"),
            "gap": max(gaps, default=float("inf")),
            "errors_victim": errors.get(victim_name, 0),
            "errors_others": errors.get("others", 0),
            "kinds": {k: v for k, v in errors.items() if k not in (victim_name, "others")},
            "puts": len(done),
        }
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def report(r: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["kinds"].items())) or "none"
    return (
        f"fail-over, 3 processes, {CLIENTS} clients x {PARTITIONS} partitions, leader process SIGKILLed: "
        f"first put sent after the kill acknowledged {r['first'] * 1000:.0f} ms after it, longest gap "
        f"{r['gap'] * 1000:.0f} ms; errors: {r['errors_victim']} on that partition, {r['errors_others']} on the "
        f"others ({kinds}); {r['puts']} puts"
    )


def run(seconds: float, repeat: int = 1) -> list[str]:
    rows = []
    for _ in range(repeat):
        started = time.monotonic()
        r = trio.run(failover_once, seconds)
        rows.append(report(r) + f" [{time.monotonic() - started:.0f} s]")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of load (the kill is at 2 s)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    run(args.seconds, args.repeat)


if __name__ == "__main__":
    main()
