"""Cluster benchmark: three ``borough serve`` processes on loopback with fsync on, loaded through
``borough.open_client``, next to etcd 3.4 (``bench/etcd_baseline.py``, when ``etcd`` is installed) and PySyncObj
0.3.17 in the same run.

For 1, 16 and 64 concurrent client tasks (closed loop, one request in flight each): puts of random 16-byte keys
with 100-byte values into one partition, spread over 64 partitions and over 1,024, then linearizable gets and stale gets
of keys written beforehand. Prints ops/s, p50 and p99 latency, and the CPU seconds used by the three servers and
by the load generator over each measured window.

    .venv/bin/python bench/cluster.py [--seconds 3] [--quick] [--no-baseline] [--tls | --certs-dir DIR]

With ``--tls`` (a throw-away CA made in the run's temporary dir) or ``--certs-dir DIR`` (``ca.crt``, ``node.crt``
for 127.0.0.1, ``client.crt``) the servers and the client use mutual TLS. ``--compare-tls`` runs the same figures
without and with TLS on fresh clusters, alternating plain, TLS, TLS, plain, ... ``--repeat`` times (so both see
the same machine), and prints the mean of each with TLS's cost; ``--clients 1,64``, ``--ops put,get`` and
``--spread many`` (or ``one``, ``1024``) narrow the figures. Each cluster also reports the time to establish a
link (TCP connect, TLS handshake if any, HELLO exchange).

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from typing import Any

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import borough  # noqa: E402
from borough import certs  # noqa: E402
from borough.interpreter import slow_build  # noqa: E402
from borough.wire import codec as c  # noqa: E402
from borough.wire.handshake import handshake, make_hello  # noqa: E402
from borough.wire.network import Network  # noqa: E402
from borough.wire.security import open_network  # noqa: E402
from borough.wire.settings import WireSettings  # noqa: E402

CLIENTS = (1, 16, 64)
KEY_BYTES = 16


def random_key(rng: random.Random) -> str:
    """A put's key: ``KEY_BYTES`` random hex digits, from the load generator's own random source (``os.urandom``,
    a system call a key, cost the load generator a tenth of its CPU a put, on the cores the servers share)."""
    return f"{rng.getrandbits(4 * KEY_BYTES):0{KEY_BYTES}x}"


VALUE = b"v" * 100
PRELOAD_KEYS = 2048
#: Keys preloaded into each partition of the 1,024-partition spread.
WIDE_KEYS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def interpreter() -> str:
    """The Python every process of a benchmark runs on (the servers are started with this one), and whether it is
    a build that runs Borough slowly (``borough.interpreter``): the figures depend on it."""
    slow = slow_build()
    kind = "a shared libpython built without optimizations" if slow else "an optimized or static build"
    return f"Python {platform.python_version()} at {sys.executable} ({kind})"


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def make_throwaway_certs(root: pathlib.Path) -> str:
    """A CA, a node certificate for 127.0.0.1 and a client certificate in ``root/certs``."""
    certs_dir = str(root / "certs")
    certs.create_ca(certs_dir)
    certs.create_node(certs_dir, ["127.0.0.1", "localhost"])
    certs.create_client(certs_dir, "bench")
    return certs_dir


class Cluster:
    def __init__(self, root: pathlib.Path, certs_dir: str | None = None, metrics: bool = False) -> None:
        self.root = root
        self.certs_dir = certs_dir
        #: With ``metrics``, each node's HTTP listener (``/metrics``, ``/status``), in the order of ``procs``.
        self.metrics_addresses: list[str] = [f"127.0.0.1:{free_port()}" for _ in range(3)] if metrics else []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.addresses: list[str] = []

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for i in range(3):
            address = f"127.0.0.1:{free_port()}"
            args = [sys.executable, "-m", "borough", "serve", "--listen", address, "--data", str(self.root / f"n{i}")]
            args += ["--log-level", os.environ.get("BENCH_LOG_LEVEL", "warning")]
            args += ["--no-fsync"] if os.environ.get("BENCH_NO_FSYNC") else []
            args += ["--certs-dir", self.certs_dir] if self.certs_dir else []
            args += ["--metrics-listen", self.metrics_addresses[i]] if self.metrics_addresses else []
            if i:
                args += ["--join", self.addresses[0]]
            self.spawn(i, address, args, env)

    #: Seconds a node may take to say it serves (more under a tool that slows it down).
    start_timeout = 30.0

    def spawn(self, i: int, address: str, args: list[str], env: dict[str, str]) -> None:
        """Start node ``i`` serving at ``address`` and wait until it says so."""
        log = open(self.root / f"n{i}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs.append(subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=ROOT))
        self.addresses.append(address)
        deadline = time.monotonic() + self.start_timeout
        while b"serving at" not in (self.root / f"n{i}.log").read_bytes():
            if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / f"n{i}.log").read_text())
            time.sleep(0.05)

    def cpu(self) -> float:
        return sum(proc_cpu(p.pid) for p in self.procs)

    def stop(self) -> None:
        stop_processes(self.procs)


class WindowedCluster(Cluster):
    """A cluster whose servers run through a wrapper script in ``bench/`` (``wrapper``) that records something
    about its node between two SIGUSR2 (``snapshot``, sent to every server, starts and ends the window) and then
    writes it to the file its environment names (``out_env``); ``window_lines`` waits for a node's file."""

    wrapper = ""
    out_env = ""
    out_name = "window-n{i}.json"

    def spawn(self, i: int, address: str, args: list[str], env: dict[str, str]) -> None:
        env = dict(env, **{self.out_env: str(self.root / self.out_name.format(i=i))})
        super().spawn(i, address, [args[0], str(ROOT / "bench" / self.wrapper), *args[3:]], env)

    def snapshot(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGUSR2)

    def window_lines(self, i: int, lines: int = 1) -> list[str]:
        """The first ``lines`` complete lines node ``i`` wrote, once it has (10 s at most)."""
        path = self.root / self.out_name.format(i=i)
        deadline = time.monotonic() + 10
        while True:
            text = path.read_text() if path.exists() else ""
            done = text[: text.rfind("\n") + 1].splitlines()
            if len(done) >= lines:
                return done[:lines]
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {i} wrote no window to {path.name}")
            time.sleep(0.05)


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
                await part.put(random_key(rng), VALUE)
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
    return summary(latencies, done, elapsed, cpu1 - cpu0, load1 - load0)


def summary(latencies: list[float], done: int, elapsed: float, server_cpu: float, load_cpu: float) -> dict[str, float]:
    """The figures of one measured window (``latencies`` in seconds, sorted here)."""
    latencies.sort()
    return {
        "ops_per_s": done / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "server_cpu_s": server_cpu,
        "load_cpu_s": load_cpu,
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


async def link_setup_ms(network: Network, address: str, times: int = 20) -> tuple[float, float]:
    """Median and worst time, in ms, to establish a link: connect (and TLS handshake) plus the HELLO exchange."""
    settings = WireSettings()
    hello = make_hello(settings, cluster_id=None, node_id=None, address=None)
    took = []
    for _ in range(times):
        t0 = time.perf_counter()
        stream = await network.connect(address)
        await handshake(stream, role=c.Role.DIALER, local=hello, settings=settings)
        took.append((time.perf_counter() - t0) * 1000)
        await trio.aclose_forcefully(stream)
    took.sort()
    return took[len(took) // 2], took[-1]


OPS = {"put": "borough put", "get": "borough get (linearizable)", "stale": "borough get (stale)"}


async def bench_borough(
    seconds: float,
    warmup: float,
    clients_list: tuple[int, ...],
    *,
    tls: bool = False,
    certs_dir: str | None = None,
    ops: tuple[str, ...] = tuple(OPS),
    spreads: tuple[str, ...] = ("one", "many", "1024"),
    results: dict[tuple[str, str, int], list[tuple[float, float]]] | None = None,
) -> list[str]:
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-bench-"))
    if tls and certs_dir is None:
        certs_dir = make_throwaway_certs(root)
    cluster = Cluster(root, certs_dir)
    mode = "tls" if certs_dir else "plain"
    rows: list[str] = []
    try:
        cluster.start()
        network = open_network(role="client", certs_dir=certs_dir)
        median, worst = await link_setup_ms(network, cluster.addresses[0])
        print(
            f"# {mode}: link setup (connect{' + TLS' if certs_dir else ''} + HELLO): "
            f"median {median:.2f} ms, max {worst:.2f} ms over 20",
            flush=True,
        )
        async with borough.open_client(cluster.addresses, certs_dir=certs_dir) as client:
            one = ["bench-one"]
            many = [f"bench-{i}" for i in range(64)]
            # Create the partitions and preload the keys the reads use (fewer keys into each of 1,024).
            keys = [f"key{i:012d}" for i in range(PRELOAD_KEYS)]
            wide = [f"bench-w{i}" for i in range(1024)] if "1024" in spreads else []
            with trio.fail_after(300):
                for name in one + many:
                    await client.partition(name).put("warm", 1)
                for name in one + many:
                    part = client.partition(name)
                    for start in range(0, len(keys), 256):
                        await part.batch([("put", k, VALUE) for k in keys[start : start + 256]])
                await _preload_wide(client, wide, keys[:WIDE_KEYS])
            spread = {
                "one": (one, "1 partition", keys),
                "many": (many, "64 partitions", keys),
                "1024": (wide, "1,024 partitions", keys[:WIDE_KEYS]),
            }
            for op in ops:
                label = OPS[op] + (" [tls]" if certs_dir else "")
                for parts, where, keys in (spread[name] for name in spreads):
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
                        if results is not None:
                            cpu_ms = 1000 * r["server_cpu_s"] / max(1.0, r["ops_per_s"] * seconds)
                            results.setdefault((f"{OPS[op]}, {where}", mode, clients), []).append(
                                (r["ops_per_s"], cpu_ms)
                            )
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


async def _preload_wide(client: borough.Client, names: list[str], keys: list[str]) -> None:
    """Create ``names`` (16 client tasks) and write ``keys`` into each, one batch per partition (again after a
    timeout: a batch carries a session, so a repeat is applied once)."""
    todo = iter(names)

    async def worker() -> None:
        for name in todo:
            for attempt in range(3):
                try:
                    await client.partition(name).batch([("put", k, VALUE) for k in keys])
                    break
                except borough.Timeout:
                    if attempt == 2:
                        raise

    async with trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(worker)


def bench_pysyncobj(seconds: float, warmup: float, clients_list: tuple[int, ...]) -> list[str]:
    from pysyncobj_baseline import run_pysyncobj

    rows = []
    for clients in clients_list:
        r: dict[str, Any] = run_pysyncobj(clients, seconds, mode="put", warmup=warmup, log_compaction=False)
        rows.append(row("pysyncobj put (no fsync, in-memory)", clients, r))
        print(rows[-1], flush=True)
    return rows


def bench_etcd(seconds: float, warmup: float, clients_list: tuple[int, ...], ops: tuple[str, ...]) -> None:
    """The same puts and linearizable gets against a 3-member etcd 3.4 cluster (``bench/etcd_baseline.py``)."""
    from etcd_baseline import LABELS, available, run_etcd

    why = available()
    if why is not None:
        print(f"\netcd baseline skipped: {why}")
        return
    print("\netcd 3.4 baseline: 3 members on 127.0.0.1 with their defaults (the WAL fsynced before each reply),")
    print("loaded from this process through grpcio, every call to the leader; one key space, no partitions.\n")
    print(HEADER, flush=True)
    wanted = tuple(op for op in ops if op in LABELS)
    for op, clients, r in run_etcd(ops=wanted, clients_list=clients_list, seconds=seconds, warmup=warmup):
        print(row(LABELS[op], clients, r) + (f" ({r['errors']:.0f} errors)" if r["errors"] else ""), flush=True)


def bench_failover(seconds: float) -> None:
    """The fail-over row: 16 clients putting into 8 partitions, the leader process of one SIGKILLed."""
    from _failover import run as run_failover

    run_failover(max(seconds, 4.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="1 s per figure")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baselines (etcd and PySyncObj)")
    parser.add_argument("--tls", action="store_true", help="mutual TLS with a throw-away CA")
    parser.add_argument("--certs-dir", default=None, help="mutual TLS with the certificates in this directory")
    parser.add_argument("--compare-tls", action="store_true", help="the same figures without and with TLS")
    parser.add_argument("--repeat", type=int, default=1, help="with --compare-tls: alternate this many times")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="client task counts, e.g. 1,64")
    parser.add_argument("--ops", default=",".join(OPS), help="put,get,stale")
    parser.add_argument(
        "--spread", default="one,many,1024", help="one (1 partition), many (64 partitions), 1024 (1,024 partitions)"
    )
    parser.add_argument("--failover", action="store_true", help="only the fail-over row (bench/_failover.py)")
    parser.add_argument("--txn", action="store_true", help="only the counter handler rows (issue 18)")
    args = parser.parse_args()
    if args.failover:
        bench_failover(args.seconds)
        return
    seconds = 1.0 if args.quick else args.seconds
    clients = tuple(int(n) for n in args.clients.split(","))
    if args.txn:
        main_txn(seconds, args.warmup, clients)
        return
    ops = tuple(args.ops.split(","))
    spreads = tuple(args.spread.split(","))
    print(f"cluster benchmark: 3 borough serve processes on 127.0.0.1, fsync on; {seconds:g} s per figure")
    print(f"interpreter: {interpreter()}")
    print("keys: random 16 bytes; values: 100 bytes; closed loop, one request in flight per client task")
    print("CPU: seconds used during the window by the 3 servers together, and by this load generator\n")
    print(HEADER, flush=True)
    if args.compare_tls:
        compare_tls(seconds, args.warmup, clients, ops, spreads, args.repeat, args.certs_dir)
        return
    tls = args.tls or args.certs_dir is not None
    rows = trio.run(
        partial(bench_borough, tls=tls, certs_dir=args.certs_dir, ops=ops, spreads=spreads),
        seconds,
        args.warmup,
        clients,
    )
    if not args.no_baseline:
        bench_etcd(seconds, args.warmup, clients, ops)
        print("\nPySyncObj 0.3.17 baseline: 3 processes on 127.0.0.1, @replicated dict, load issued inside its")
        print("processes as its own benchmark does. It keeps its log in memory and never fsyncs.\n")
        print(HEADER, flush=True)
        rows += bench_pysyncobj(seconds, args.warmup, CLIENTS)


def compare_tls(
    seconds: float,
    warmup: float,
    clients: tuple[int, ...],
    ops: tuple[str, ...],
    spreads: tuple[str, ...],
    repeat: int,
    certs_dir: str | None,
) -> None:
    """Alternate plain and TLS clusters ``repeat`` times; print each figure's mean ops/s and server CPU per op
    (the three servers' CPU ms per operation: what TLS costs when the servers are CPU-bound), and TLS's cost."""
    results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for i in range(repeat):
        for tls in (False, True) if i % 2 == 0 else (True, False):  # ABBA: a drifting machine load favours neither
            run = partial(
                bench_borough, tls=tls, certs_dir=certs_dir if tls else None, ops=ops, spreads=spreads, results=results
            )
            trio.run(run, seconds, warmup, clients)
    print("\n| what                               | clients | plain ops/s | tls ops/s | cost ", end="")
    print("| plain CPU ms/op | tls CPU ms/op | cost |")
    print("|------------------------------------|---------|-------------|-----------|------", end="")
    print("|-----------------|---------------|------|")
    for (what, mode, n), plain in sorted(results.items()):
        if mode != "plain" or (what, "tls", n) not in results:
            continue
        secured = results[(what, "tls", n)]
        p, t = (sum(r[0] for r in rs) / len(rs) for rs in (plain, secured))
        pc, tc = (sum(r[1] for r in rs) / len(rs) for rs in (plain, secured))
        print(
            f"| {what:<34} | {n:>7} | {p:>11,.0f} | {t:>9,.0f} | {100 * (1 - t / p):>3.0f}% "
            f"| {pc:>15.3f} | {tc:>13.3f} | {100 * (tc / pc - 1):>3.0f}% |"
        )
    print(f"(means of {repeat} runs each)")


# --- handler transactions (issue 18): bench/cluster.py --txn -----------------------------------------------------


class TxnCluster(Cluster):
    """Three processes of ``bench/_txn_server.py``: ``borough.serve`` with the counter handler."""

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for i in range(3):
            address = f"127.0.0.1:{free_port()}"
            args = [sys.executable, str(ROOT / "bench" / "_txn_server.py"), address, str(self.root / f"n{i}")]
            args += [self.addresses[0]] if i else []
            self.spawn(i, address, args, env)


async def run_counter_load(
    client: borough.Client, cluster: Cluster, *, partitions: list[str], clients: int, seconds: float, warmup: float
) -> dict[str, float]:
    """Closed-loop counter requests; also the conflict re-run rate (handler runs per acknowledged request - 1,
    from the per-process run counts the replies carry)."""
    latencies: list[float] = []
    done = 0
    measuring = False
    runs_seen: dict[str, int] = {}
    runs_at_start: dict[str, int] = {}
    stop_at = trio.current_time() + warmup + seconds
    rng = random.Random(clients)

    async def worker() -> None:
        nonlocal done
        while trio.current_time() < stop_at:
            name = partitions[rng.randrange(len(partitions))]
            t0 = time.perf_counter()
            reply = await client.request(name, {})
            runs_seen[reply["node"]] = max(runs_seen.get(reply["node"], 0), reply["runs"])
            if measuring:
                latencies.append(time.perf_counter() - t0)
                done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(worker)
        await trio.sleep(warmup)
        measuring = True
        runs_at_start = dict(runs_seen)
        cpu0, load0, t0 = cluster.cpu(), time.process_time(), time.perf_counter()
        await trio.sleep(seconds)
        measuring = False
        elapsed = time.perf_counter() - t0
        cpu1, load1 = cluster.cpu(), time.process_time()
        runs = sum(n - runs_at_start.get(node, 0) for node, n in runs_seen.items())
    return summary(latencies, done, elapsed, cpu1 - cpu0, load1 - load0) | {
        "reruns": max(0.0, runs / max(1, done) - 1.0)
    }


async def bench_txn(seconds: float, warmup: float, clients_list: tuple[int, ...]) -> list[str]:
    """The counter handler (a read and a write of one key, as one transaction) next to plain puts, on 1 and on
    64 partitions, at each client count; the last column is the conflict re-run rate."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-bench-txn-"))
    cluster = TxnCluster(root)
    rows: list[str] = []
    try:
        cluster.start()
        async with borough.open_client(cluster.addresses) as client:
            one, many = ["bench-one"], [f"bench-{i}" for i in range(64)]
            with trio.fail_after(120):
                for name in one + many:
                    await client.request(name, {})
            for parts, where in ((one, "1 partition"), (many, "64 partitions")):
                for clients in clients_list:
                    put = await run_load(
                        client,
                        cluster,
                        op="put",
                        partitions=parts,
                        clients=clients,
                        seconds=seconds,
                        warmup=warmup,
                        keys=[],
                    )
                    rows.append(row(f"borough put, {where}", clients, put) + "        |")
                    print(rows[-1], flush=True)
                    r = await run_counter_load(
                        client, cluster, partitions=parts, clients=clients, seconds=seconds, warmup=warmup
                    )
                    ratio = r["ops_per_s"] / max(1.0, put["ops_per_s"])
                    rows.append(row(f"counter handler, {where}", clients, r) + f" {100 * r['reruns']:>5.1f}% |")
                    print(rows[-1] + f"  ({ratio:.2f}x puts)", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main_txn(seconds: float, warmup: float, clients: tuple[int, ...]) -> None:
    print(
        "handler transactions: 3 processes (borough.serve + the counter handler) on 127.0.0.1, fsync on; "
        f"{seconds:g} s per figure"
    )
    print("counter handler: reads the partition's counter and writes it back plus one, one transaction per request")
    print(
        HEADER.replace("load CPU |\n", "load CPU | reruns |\n").replace("|----------|", "|----------|--------|"),
        flush=True,
    )
    trio.run(bench_txn, seconds, warmup, clients)


if __name__ == "__main__":
    main()
