"""What each node does for one operation, function by function: three ``borough serve`` processes (fsync on,
127.0.0.1), each profiled with cProfile on its event loop's thread for the measured window
(``bench/_profiled_serve.py``), then, per node, its Python calls an operation and its busiest functions (time of
their own and with what they call, and calls an operation).

cProfile slows every Python call by a roughly constant amount, so its times overstate thin functions; the call
counts are exact. Compare the calls an operation between trees, and read the times as shares.

    .venv/bin/python bench/profile_path.py                             # put, 1 client, 1 partition, 4 s
    .venv/bin/python bench/profile_path.py --clients 64 --top 40 --sort cumulative

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import pathlib
import pstats
import shutil
import sys
import tempfile

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cluster as cb  # noqa: E402

import borough  # noqa: E402


class ProfiledCluster(cb.WindowedCluster):
    wrapper, out_env, out_name = "_profiled_serve.py", "BOROUGH_PROFILE_OUT", "profile-n{i}"


async def measure(cluster: ProfiledCluster, op: str, clients: int, partitions: int, seconds: float) -> int:
    names = [f"p{i}" for i in range(partitions)]
    async with borough.open_client(cluster.addresses) as client:
        for name in names:
            await client.partition(name).put("warm", cb.VALUE)
        keys = ["warm"]
        cluster.snapshot()
        result = await cb.run_load(
            client, cluster, op=op, partitions=names, clients=clients, seconds=seconds, warmup=0.0, keys=keys
        )
        cluster.snapshot()
    return round(result["ops_per_s"] * seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=("put", "get"), default="put")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--top", type=int, default=25, help="functions listed per node")
    parser.add_argument("--sort", choices=("self", "cumulative", "calls"), default="self")
    args = parser.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-profile-"))
    cluster = ProfiledCluster(root)
    try:
        cluster.start()
        done = trio.run(measure, cluster, args.op, args.clients, args.partitions, args.seconds)
        print(f"{args.op}, {args.clients} client(s), {args.partitions} partition(s): {done} ops (profiled)")
        column = {"self": 2, "cumulative": 3, "calls": 1}[args.sort]
        for i in range(3):
            cluster.window_lines(i)
            stats = pstats.Stats(str(root / f"profile-n{i}.prof")).stats  # type: ignore[attr-defined]
            calls = sum(v[1] for v in stats.values())
            print(f"=== node {i}: {calls / done:,.0f} Python calls an op")
            rows = sorted(stats.items(), key=lambda kv: -kv[1][column])[: args.top]
            for (path, line, name), (_, ncalls, own, cum, _) in rows:
                where = f"{path.rsplit('/', 1)[-1]}:{line} {name}"
                times = f"own {1e6 * own / done:7.1f}  with callees {1e6 * cum / done:7.1f} us"
                print(f"  {times}  {ncalls / done:7.2f} calls  {where}")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
