"""Rebalance benchmark: ``borough serve`` processes on loopback with fsync on, loaded with many partitions, then
a fourth node joins and afterwards one of the original nodes is killed for good; measured while a foreground
put/get load runs.

    .venv/bin/python bench/rebalance.py [--partitions 100] [--mb 100] [--value-kb 16] [--batch-kb 256]
                                        [--dead-after 5] [--baseline 5] [--fg-clients 4] [--snapshot-entries N]
                                        [--snapshot-rate MIB_PER_S] [--phase-timeout 600] [--quick] [--keep]

``--quick`` is 20 partitions and 10 MB with a 3 s baseline (under a minute). Every server gets
``BOROUGH_DEAD_AFTER`` (``--dead-after``, 5 s by default instead of 30 s) in its environment from the start, so
the killed node is declared DEAD soon after it stops answering; ``--snapshot-entries`` passes
``BOROUGH_SNAPSHOT_ENTRIES`` so logs are compacted early and new replicas catch up by snapshot, not by log
(with ``--batch-kb 16`` each loaded value is its own Raft entry, so e.g. ``--snapshot-entries 32`` compacts
the loaded data out of the logs; either way a new replica with an empty log gets a snapshot, not the log);
``--snapshot-rate`` passes ``BOROUGH_SNAPSHOT_BYTES_PER_SECOND`` (in MiB/s; 0 is no limit; the node's default
when not given). With ``--keep`` the temp dir also gets ``samples.csv``: every foreground op (wall-clock end
time, op, ms, partition, error), the phases' marks and the loopback meter's samples.

Phases: load ``--mb`` MB of random ``--value-kb`` KB values spread evenly over ``--partitions`` partitions of
three nodes, wait until every partition sits on its ring replica set, then

* join: run the foreground load for ``--baseline`` s ("before"), start a fourth node that joins the cluster,
  keep the load running until the phase converges ("during");
* kill: the same baseline, then SIGKILL one of the first three nodes (never restarted); "during" is split in
  "failover" (kill until the member table says DEAD: elections of the groups it led, nothing moves yet) and
  "move" (DEAD until converged: re-replication).

How each figure is computed:

* converged: the member table has the new node ACTIVE (join) or the killed node DEAD (kill), and for every
  partition ``info()`` (from its leader) lists exactly 3 peers, all leader/voter (no learner), whose node ids
  equal ``HashRing(members, replicas=3).replica_set(name)`` (so none is the dead node and the new node holds
  its ring share). All partitions are polled every ``POLL`` s; "time" is from the node's start (join) or
  the kill (kill) to the first poll that sees the whole cluster converged. "leaders" is the first poll after
  which every partition's leader is also its ring owner (placement moves leadership last).
* min MB: what the ring change requires, sum over partitions of |ring set at the end - nodes holding it at
  the phase start| x the partition's data size (the key and value bytes this script loaded into it).
* placed MB: sum over partitions of the distinct nodes that got an ``AddLearner`` placement step during the
  phase (parsed from the servers' info logs) x the partition's data size; placed/min > 1 means placement
  added replicas the ring change does not need.
* wire MB: bytes received on the loopback interface during the move (``/sys/class/net/lo``; includes every
  message, Raft entries or snapshot chunks, retries and headers) minus what the same foreground load and
  polling moved per second in the baseline window just before ("bg MB/s"), times the move's duration. It is
  the physical figure the 1.2x goal is checked against. "raw MB" is the loopback bytes without that
  subtraction; the foreground slows down during a move, so the subtraction removes somewhat more than the
  foreground really sent and the true figure lies between the two. Both count any other loopback traffic
  on the machine. The loopback counter is sampled every 0.1 s and interpolated.
* MB/s: wire MB / "move s", the move's duration: join, from the node's start to converged; kill, from the
  moment ``_system``'s leader marked the node DEAD (the time stamp of its "marking member ... dead" log line;
  nothing moves before that) to converged.
* disk MB: size of each node's data dir at the end of each phase (a joining node's data dir holds the Raft log
  and the applied state, so it is roughly twice what it received until the log is compacted).
* p50/p99/max: latency of the foreground load, ``--fg-clients`` tasks in a closed loop, each alternating a
  put of 100 bytes and a linearizable get of its own key, on random loaded partitions (one client process,
  apart from the one that polls); failed ops are counted apart, and the distinct errors are listed.
* goals: p99 of the move window (join: start to converged; kill: DEAD to converged, so the elections of the
  failover window are not charged to the move) over p99 of the baseline, for puts and gets, <= 2; wire MB /
  min MB <= 1.2.

Everything runs on 127.0.0.1, each phase is bounded by ``--phase-timeout``, and the script stops all servers
by itself. Servers log at info level to ``<tmp>/n<i>.log``; with ``--keep`` (or on failure) the temp dir stays.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cluster import free_port, percentile, stop_processes  # noqa: E402

import borough  # noqa: E402
from borough.ring.hashring import HashRing  # noqa: E402
from borough.ring.members import MemberState, MemberTable  # noqa: E402

MB = 1_000_000
POLL = 0.5
INFO_CONCURRENCY = 16
LOAD_CONCURRENCY = 8
FG_VALUE = b"f" * 100
ADD_LEARNER = re.compile(rb"partition '([^']+)': placement step AddLearner\(node='([^']+)'\)")
SERVING = re.compile(rb"borough node (\S+) serving at (\S+)")


def lo_rx_bytes() -> int:
    try:
        return int(pathlib.Path("/sys/class/net/lo/statistics/rx_bytes").read_text())
    except OSError:
        return 0


class LoopbackMeter:
    """Samples the loopback interface's received bytes every 0.1 s; ``between(t0, t1)`` interpolates."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []

    async def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), lo_rx_bytes()))
            await trio.sleep(0.1)

    def at(self, t: float) -> float:
        points = self.samples
        if not points:
            return 0.0
        i = bisect.bisect_left(points, (t, -1))
        if i == 0:
            return float(points[0][1])
        if i == len(points):
            return float(points[-1][1])
        (ta, ba), (tb, bb) = points[i - 1], points[i]
        return ba + (bb - ba) * (t - ta) / (tb - ta) if tb > ta else float(bb)

    def between(self, t0: float, t1: float) -> float:
        return self.at(t1) - self.at(t0)

    def rate(self, t0: float, t1: float) -> float:
        return self.between(t0, t1) / (t1 - t0) if t1 > t0 else 0.0


def dir_bytes(path: pathlib.Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


class Servers:
    """``borough serve`` processes on 127.0.0.1, fsync on, info logs in ``root/n<i>.log``."""

    def __init__(self, root: pathlib.Path, env: dict[str, str]) -> None:
        self.root = root
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env = dict(os.environ, PYTHONPATH=path, **env)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.addresses: list[str] = []
        self.node_ids: list[str] = []
        self.killed: set[int] = set()

    def log(self, i: int) -> pathlib.Path:
        return self.root / f"n{i}.log"

    def data(self, i: int) -> pathlib.Path:
        return self.root / f"n{i}"

    def launch(self) -> int:
        """Start one more node (joining the first) and return its index; ``wait_serving`` waits for it."""
        i = len(self.procs)
        address = f"127.0.0.1:{free_port()}"
        args = [sys.executable, "-m", "borough", "serve", "--listen", address, "--data", str(self.data(i))]
        args += ["--log-level", "info"] + (["--no-fsync"] if os.environ.get("BENCH_NO_FSYNC") else [])
        if i:
            args += ["--join", self.addresses[0]]
        log = open(self.log(i), "wb")  # noqa: SIM115 - lives as long as the process
        self.procs.append(subprocess.Popen(args, stdout=log, stderr=log, env=self.env, cwd=ROOT))
        self.addresses.append(address)
        self.node_ids.append("")
        return i

    async def wait_serving(self, i: int, within: float = 30) -> None:
        with trio.fail_after(within):
            while True:
                found = SERVING.search(self.log(i).read_bytes())
                if found:
                    self.node_ids[i] = found.group(1).decode()
                    return
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"node {i} exited:\n{self.log(i).read_text()}")
                await trio.sleep(0.05)

    def crashed(self) -> list[int]:
        """Nodes that exited although this script did not kill them."""
        return [i for i, p in enumerate(self.procs) if p.poll() is not None and i not in self.killed]

    def kill(self, i: int) -> None:
        self.killed.add(i)
        self.procs[i].kill()
        self.procs[i].wait()

    def stop(self) -> None:
        stop_processes(self.procs)

    def log_sizes(self) -> list[int]:
        return [self.log(i).stat().st_size for i in range(len(self.procs))]

    def log_since(self, offsets: list[int]) -> list[bytes]:
        out = []
        for i in range(len(self.procs)):
            with open(self.log(i), "rb") as f:
                f.seek(offsets[i] if i < len(offsets) else 0)
                out.append(f.read())
        return out


# --- foreground load ---------------------------------------------------------------------------------------


class Foreground:
    """Closed-loop put/get tasks; every finished op is recorded as (end time, op, seconds, error or None), and
    the partition it went to in ``partitions`` (same order)."""

    def __init__(self, client: borough.Client, names: list[str], clients: int) -> None:
        self.client = client
        self.names = names
        self.clients = clients
        self.samples: list[tuple[float, str, float, str | None]] = []
        self.partitions: list[str] = []

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for w in range(self.clients):
                nursery.start_soon(self._worker, w)

    async def _worker(self, w: int) -> None:
        rng = random.Random(w)
        key = f"fg-{w}"
        while True:
            name = self.names[rng.randrange(len(self.names))]
            part = self.client.partition(name)
            for op in ("put", "get"):
                t0 = time.monotonic()
                error = None
                try:
                    if op == "put":
                        await part.put(key, FG_VALUE)
                    else:
                        await part.get(key, None)
                except borough.BoroughError as exc:
                    error = f"{op}: {type(exc).__name__}: {str(exc)[:120]}"
                t1 = time.monotonic()
                self.samples.append((t1, op, t1 - t0, error))
                self.partitions.append(name)
                if error:
                    await trio.sleep(0.05)

    def dump(self, path: pathlib.Path, marks: list[tuple[str, float]], lo: LoopbackMeter) -> None:
        """Every sample as CSV: wall-clock end time (as in the servers' logs), op, ms, partition, error; the
        phases' marks (baseline, move, converged) first, as rows with op "mark", and the loopback meter's
        samples as rows with op "lo" (bytes received so far in the ms column)."""
        offset = time.time() - time.monotonic()
        with open(path, "w") as f:
            f.write("end,op,ms,partition,error\n")
            for label, t in marks:
                f.write(f"{t + offset:.4f},mark,0,{label},\n")
            for t, rx in lo.samples:
                f.write(f"{t + offset:.4f},lo,{rx},,\n")
            for (t, op, s, error), name in zip(self.samples, self.partitions, strict=True):
                f.write(f"{t + offset:.4f},{op},{s * 1000:.2f},{name},{(error or '').replace(',', ';')}\n")

    def window(self, start: float, end: float) -> dict[str, Any]:
        result: dict[str, Any] = {"seconds": max(0.0, end - start)}
        chosen = [s for s in self.samples if start <= s[0] < end]
        result["errors"] = [s[3] for s in chosen if s[3]]
        result["max"] = max((s[2] for s in chosen), default=math.nan) * 1000
        for op in ("put", "get"):
            lat = sorted(s[2] for s in chosen if s[1] == op and not s[3])
            result[op] = (len(lat), percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000)
        return result


# --- cluster state -------------------------------------------------------------------------------------------


class Snapshot:
    """One poll: the member table and every partition's info (None where the call failed)."""

    def __init__(self, started: float, at: float, table: MemberTable, infos: dict[str, Any]) -> None:
        self.started = started  # before the member table was asked for
        self.at = at
        self.table = table
        self.infos = infos
        self.ring = HashRing(table, replicas=3)

    def peers(self, name: str) -> set[str]:
        info = self.infos.get(name)
        return {p.node_id for p in info.peers} if info is not None else set()

    def on_ring(self, name: str) -> bool:
        info = self.infos.get(name)
        if info is None or info.leader is None or len(info.peers) != 3:
            return False
        if any(p.role not in ("leader", "voter") for p in info.peers):
            return False
        return self.peers(name) == set(self.ring.replica_set(name))

    def off_ring(self) -> list[str]:
        return [n for n in self.infos if not self.on_ring(n)]

    def leaders_on_owner(self) -> bool:
        return all(i is not None and i.leader == self.ring.owner(n) for n, i in self.infos.items())

    def state_of(self, node_id: str) -> MemberState | None:
        member = self.table.get(node_id)  # type: ignore[arg-type]
        return member.state if member is not None else None

    def describe(self, name: str) -> str:
        info = self.infos.get(name)
        if info is None:
            return f"{name}: info failed"
        peers = ", ".join(f"{p.node_id[:8]}:{p.role}@{p.match_index}{'' if p.connected else '(x)'}" for p in info.peers)
        ring = ", ".join(n[:8] for n in self.ring.replica_set(name))
        return f"{name}: leader {str(info.leader)[:8]} peers [{peers}] ring [{ring}]"


async def poll(client: borough.Client, names: list[str], stop: Callable[[], bool] = lambda: False) -> Snapshot:
    """The member table and every partition's info; partitions not asked yet are skipped once ``stop()``."""
    started = time.monotonic()
    infos: dict[str, Any] = {}
    limit = trio.Semaphore(INFO_CONCURRENCY)

    async def one(name: str) -> None:
        async with limit:
            if stop():
                return
            try:
                with trio.fail_after(5):
                    infos[name] = await client.partition(name).info()
            except (borough.BoroughError, trio.TooSlowError):
                infos[name] = None

    try:
        with trio.fail_after(5):
            table = await client.members()
    except (borough.BoroughError, trio.TooSlowError):
        table = MemberTable()
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(one, name)
    return Snapshot(started, time.monotonic(), table, {n: infos.get(n) for n in names})


async def wait_converged(
    servers: Servers, client: borough.Client, names: list[str], done: Callable[[Snapshot], bool], within: float
) -> tuple[list[Snapshot], bool]:
    """Poll until ``done`` holds for a snapshot with every partition on its ring set; all snapshots are kept.
    Gives up at once when a server exits by itself."""
    snaps: list[Snapshot] = []
    deadline = time.monotonic() + within
    while True:
        t0 = time.monotonic()
        snap = await poll(client, names, lambda: bool(servers.crashed()))
        snaps.append(snap)
        if done(snap) and not snap.off_ring():
            return snaps, True
        if time.monotonic() > deadline or servers.crashed():
            return snaps, False
        await trio.sleep(max(0.0, POLL - (time.monotonic() - t0)))


# --- phases --------------------------------------------------------------------------------------------------


def fmt_window(label: str, w: dict[str, Any]) -> str:
    put, get = w["put"], w["get"]
    return (
        f"| {label:<29} | {w['seconds']:>5.1f} | {put[0] + get[0]:>6} | {put[1]:>7.1f} | {put[2]:>7.1f} "
        f"| {get[1]:>7.1f} | {get[2]:>7.1f} | {w['max']:>7.0f} | {len(w['errors']):>6} |"
    )


LAT_HEADER = (
    "| window                        |     s |    ops | put p50 | put p99 | get p50 | get p99 |     max | errors |\n"
    "|-------------------------------|-------|--------|---------|---------|---------|---------|---------|--------|"
)


async def run_bench(args: argparse.Namespace) -> int:
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-rebalance-"))
    env = {"BOROUGH_DEAD_AFTER": str(args.dead_after)}
    if args.snapshot_entries:
        env["BOROUGH_SNAPSHOT_ENTRIES"] = str(args.snapshot_entries)
    if args.snapshot_rate is not None:
        env["BOROUGH_SNAPSHOT_BYTES_PER_SECOND"] = str(int(args.snapshot_rate * 1024 * 1024))
    servers = Servers(root, env)
    names = [f"rb-{i:04d}" for i in range(args.partitions)]
    value_bytes = int(args.value_kb * 1024)
    per_partition = max(1, round(args.mb * MB / args.partitions / value_bytes))
    sizes: dict[str, int] = {}
    failed = False
    print(f"servers' data and logs: {root}", flush=True)
    try:
        for _ in range(3):
            await servers.wait_serving(servers.launch())
        async with (
            borough.open_client(servers.addresses) as admin,
            borough.open_client(servers.addresses) as fg_client,
        ):
            # -- load --------------------------------------------------------------------------------------
            t0 = time.monotonic()
            await load(admin, names, per_partition, value_bytes, int(args.batch_kb * 1024), sizes)
            load_s = time.monotonic() - t0
            total = sum(sizes.values())
            print(
                f"loaded {total / MB:.1f} MB into {len(names)} partitions ({per_partition} values of "
                f"{value_bytes} bytes each) in {load_s:.1f} s ({total / MB / load_s:.1f} MB/s)",
                flush=True,
            )
            snaps, ok = await wait_converged(servers, admin, names, lambda s: True, args.phase_timeout)
            if not ok:
                report_stuck("initial placement", snaps[-1], servers)
                return 1
            print(f"initial placement converged: {len(names)} partitions on 3 voters each", flush=True)

            fg = Foreground(fg_client, names, args.fg_clients)
            lo = LoopbackMeter()
            results: list[dict[str, Any]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fg.run)
                nursery.start_soon(lo.run)
                results.append(await phase_join(args, servers, admin, fg, lo, names, sizes))
                if results[-1]["converged"]:
                    results.append(await phase_kill(args, servers, admin, fg, lo, names, sizes))
                nursery.cancel_scope.cancel()
            failed = not all(r["converged"] for r in results) or len(results) < 2
            print_report(args, servers, results, sizes)
            if args.keep:
                marks = [(f"{r['phase']} {k}", t) for r in results for k, t in r["marks_at"].items()]
                fg.dump(root / "samples.csv", marks, lo)
    except BaseException:
        failed = True
        raise
    finally:
        servers.stop()
        problems = scan_logs(servers, [0] * len(servers.procs))
        if problems:
            print("\nwarnings and errors in the servers' logs (whole run):")
            for line in problems:
                print(f"  {line}")
        if args.keep or failed:
            print(f"\nkept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


async def load(
    client: borough.Client,
    names: list[str],
    per_partition: int,
    value_bytes: int,
    batch_bytes: int,
    sizes: dict[str, int],
) -> None:
    per_batch = max(1, batch_bytes // value_bytes)
    queue = list(names)

    async def worker() -> None:
        while queue:
            name = queue.pop()
            part = client.partition(name)
            size = 0
            for start in range(0, per_partition, per_batch):
                ops = []
                for k in range(start, min(per_partition, start + per_batch)):
                    key = f"k{k:08d}"
                    ops.append(("put", key, os.urandom(value_bytes)))
                    size += len(key) + value_bytes
                await part.batch(ops)
            sizes[name] = size

    with trio.fail_after(1800):
        async with trio.open_nursery() as nursery:
            for _ in range(LOAD_CONCURRENCY):
                nursery.start_soon(worker)


def moved(
    names: list[str], sizes: dict[str, int], start: Snapshot, end: Snapshot, logs: list[bytes]
) -> dict[str, float]:
    minimum = sum(len(set(end.ring.replica_set(n)) - start.peers(n)) * sizes[n] for n in names)
    added = {(m.group(1).decode(), m.group(2).decode()) for log in logs for m in ADD_LEARNER.finditer(log)}
    placed = sum(sizes.get(n, 0) for n, _node in added)
    return {"min": minimum, "placed": placed, "added": len(added)}


async def baseline(args: argparse.Namespace, admin: borough.Client, names: list[str]) -> tuple[float, float, Snapshot]:
    """Foreground load (already running) plus polling for ``--baseline`` s: (start, end, the last poll)."""
    t0 = time.monotonic()
    while True:
        snap = await poll(admin, names)
        if time.monotonic() - t0 >= args.baseline:
            break
        await trio.sleep(POLL)
    return t0, time.monotonic(), snap


async def phase_join(
    args: argparse.Namespace,
    servers: Servers,
    admin: borough.Client,
    fg: Foreground,
    lo: LoopbackMeter,
    names: list[str],
    sizes: dict[str, int],
) -> dict[str, Any]:
    print(f"\n[join] baseline {args.baseline:g} s, then a fourth node joins", flush=True)
    b0, b1, before = await baseline(args, admin, names)
    offsets = servers.log_sizes()
    start = time.monotonic()
    i = servers.launch()
    await servers.wait_serving(i)
    new = servers.node_ids[i]
    print(f"[join] node {new} serving after {time.monotonic() - start:.1f} s", flush=True)
    snaps, ok = await wait_converged(
        servers, admin, names, lambda s: s.state_of(new) is MemberState.ACTIVE, args.phase_timeout
    )
    end = snaps[-1].at
    leaders_at = await wait_leaders(admin, names, snaps, ok, args)
    active_at = next((s.at for s in snaps if s.state_of(new) is MemberState.ACTIVE), math.nan)
    logs = servers.log_since(offsets)
    r: dict[str, Any] = {
        "phase": "join",
        "converged": ok,
        "last": snaps[-1],
        "time": end - start,
        "leaders": leaders_at - start,
        "marks": f"ACTIVE at {active_at - start:.1f} s",
        "wire": lo.between(start, end) - lo.rate(b0, b1) * (end - start),
        "raw": lo.between(start, end),
        "background": lo.rate(b0, b1),
        "move_s": end - start,
        "marks_at": {"baseline": b0, "move": start, "converged": end},
        "before": fg.window(b0, b1),
        "during": [("move (join→converged)", fg.window(start, end))],
        "disk": [dir_bytes(servers.data(k)) for k in range(len(servers.procs))],
        **moved(names, sizes, before, snaps[-1], logs),
    }
    if not ok:
        report_stuck("join", snaps[-1], servers)
    print(f"[join] {'converged' if ok else 'NOT converged'} after {r['time']:.1f} s", flush=True)
    return r


async def phase_kill(
    args: argparse.Namespace,
    servers: Servers,
    admin: borough.Client,
    fg: Foreground,
    lo: LoopbackMeter,
    names: list[str],
    sizes: dict[str, int],
) -> dict[str, Any]:
    victim = 1
    dead = servers.node_ids[victim]
    print(
        f"\n[kill] baseline {args.baseline:g} s, then SIGKILL node {dead} (BOROUGH_DEAD_AFTER={args.dead_after:g} s)",
        flush=True,
    )
    b0, b1, before = await baseline(args, admin, names)
    offsets = servers.log_sizes()
    start = time.monotonic()
    servers.kill(victim)
    snaps, ok = await wait_converged(
        servers, admin, names, lambda s: s.state_of(dead) is MemberState.DEAD, args.phase_timeout + args.dead_after
    )
    end = snaps[-1].at
    leaders_at = await wait_leaders(admin, names, snaps, ok, args)
    logs = servers.log_since(offsets)
    # When _system's leader marked it DEAD: from its log line, else the first poll that saw it.
    dead_at = marked_dead_at(logs, dead)
    if math.isnan(dead_at):
        dead_at = next((s.started for s in snaps if s.state_of(dead) is MemberState.DEAD), end)
    r: dict[str, Any] = {
        "phase": "kill",
        "converged": ok,
        "last": snaps[-1],
        "time": end - start,
        "leaders": leaders_at - start,
        "marks": f"DEAD at {dead_at - start:.1f} s",
        "wire": lo.between(dead_at, end) - lo.rate(b0, b1) * (end - dead_at),
        "raw": lo.between(dead_at, end),
        "background": lo.rate(b0, b1),
        "move_s": end - dead_at,
        "marks_at": {"baseline": b0, "kill": start, "move": dead_at, "converged": end},
        "before": fg.window(b0, b1),
        "during": [
            ("failover (kill→DEAD)", fg.window(start, dead_at)),
            ("move (DEAD→converged)", fg.window(dead_at, end)),
        ],
        "disk": [dir_bytes(servers.data(k)) for k in range(len(servers.procs))],
        **moved(names, sizes, before, snaps[-1], logs),
    }
    if not ok:
        report_stuck("kill", snaps[-1], servers)
    print(f"[kill] {'converged' if ok else 'NOT converged'} after {r['time']:.1f} s", flush=True)
    return r


def marked_dead_at(logs: list[bytes], node_id: str) -> float:
    """The monotonic time of the first 'marking member <node_id> dead' log line (nan if none)."""
    pattern = re.compile(
        rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) WARNING \S+: marking member " + node_id.encode(), re.M
    )
    offset = time.time() - time.monotonic()
    found = []
    for log in logs:
        for m in pattern.finditer(log):
            wall = time.mktime(time.strptime(m.group(1).decode(), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            found.append(wall - offset)
    return min(found, default=math.nan)


async def wait_leaders(
    admin: borough.Client, names: list[str], snaps: list[Snapshot], ok: bool, args: argparse.Namespace
) -> float:
    """When every leader was on its ring owner: at convergence or up to 30 s later (nan if never)."""
    if not ok:
        return math.nan
    deadline = time.monotonic() + 30
    snap = snaps[-1]
    while not snap.leaders_on_owner():
        if time.monotonic() > deadline:
            return math.nan
        await trio.sleep(POLL)
        snap = await poll(admin, names)
    return snap.at


def report_stuck(what: str, snap: Snapshot, servers: Servers) -> None:
    off = snap.off_ring()
    print(f"\n[{what}] {len(off)} partitions not on their ring replica set at the deadline:")
    for member in snap.table.members:
        print(f"  member {member.node_id} {member.address} {member.state.name}")
    for name in off[:20]:
        print(f"  {snap.describe(name)}")
    for i in servers.crashed():
        rc = servers.procs[i].poll()
        last = servers.log(i).read_text(errors="replace").strip().splitlines()[-1:]
        print(f"  server n{i} ({servers.node_ids[i]}) exited by itself with status {rc}: {' '.join(last)[:300]}")


def scan_logs(servers: Servers, offsets: list[int]) -> list[str]:
    """Distinct WARNING/ERROR/traceback lines of the servers' logs (time stamps stripped), with counts."""
    seen: dict[str, int] = {}
    for i, text in enumerate(servers.log_since(offsets)):
        for raw in text.decode("utf-8", "replace").splitlines():
            if " WARNING " in raw or " ERROR " in raw or "Traceback" in raw or "Error:" in raw[:40]:
                line = re.sub(r"^\S+ \S+ ", "", raw)
                line = re.sub(r"'rb-\d+'", "'rb-…'", line)
                key = f"n{i}: {line[:200]}"
                seen[key] = seen.get(key, 0) + 1
    return [f"{count:>5} x {line}" for line, count in sorted(seen.items())][:40]


def print_report(
    args: argparse.Namespace, servers: Servers, results: list[dict[str, Any]], sizes: dict[str, int]
) -> None:
    total = sum(sizes.values())
    print(
        f"\nrebalance benchmark: {len(sizes)} partitions, {total / MB:.1f} MB in all, values of "
        f"{int(args.value_kb * 1024)} bytes, 3 replicas, fsync on, all on 127.0.0.1; "
        f"BOROUGH_DEAD_AFTER={args.dead_after:g}"
        + (f", BOROUGH_SNAPSHOT_ENTRIES={args.snapshot_entries}" if args.snapshot_entries else "")
        + f", snapshot rate {rate_text(args)}"
    )
    print(f"foreground: {args.fg_clients} tasks, put 100 B + linearizable get, closed loop; CPUs: {os.cpu_count()}")
    print("times in s from the node's start (join) or the kill (kill); 'move s' is what MB/s divides by\n")
    print(
        "| phase | converged | leaders on owner | mark             | move s | min MB | placed MB | wire MB "
        "| wire/min | MB/s | bg MB/s | raw MB |\n"
        "|-------|-----------|------------------|------------------|--------|--------|-----------|---------"
        "|----------|------|---------|--------|"
    )
    for r in results:
        conv = f"{r['time']:.1f}" if r["converged"] else f"NO ({r['time']:.0f})"
        ratio = r["wire"] / r["min"] if r["min"] else math.nan
        rate = r["wire"] / MB / r["move_s"] if r["move_s"] > 0 else math.nan
        print(
            f"| {r['phase']:<5} | {conv:>9} | {r['leaders']:>16.1f} | {r['marks']:<16} | {r['move_s']:>6.1f} "
            f"| {r['min'] / MB:>6.1f} | {r['placed'] / MB:>9.1f} | {r['wire'] / MB:>7.1f} | {ratio:>8.2f} "
            f"| {rate:>4.1f} | {r['background'] / MB:>7.2f} | {r['raw'] / MB:>6.1f} |"
        )
    print("\nforeground latency (ms):\n")
    print(LAT_HEADER)
    for r in results:
        print(fmt_window(f"{r['phase']}: before", r["before"]))
        for label, w in r["during"]:
            print(fmt_window(f"{r['phase']}: {label}", w))
    print("\ndata dir MB at the end of each phase (n0..n3; n1 is the node killed):\n")
    print("| phase | " + " | ".join(f"   n{k}" for k in range(len(servers.procs))) + " |")
    print("|-------|" + "|".join("-------" for _ in servers.procs) + "|")
    for r in results:
        print(f"| {r['phase']:<5} | " + " | ".join(f"{d / MB:>5.1f}" for d in r["disk"]) + " |")
    print("\ngoals:")
    for r in results:
        windows = r["during"][-1:]  # the move itself (for kill: after DEAD)
        if not r["converged"]:
            print(f"  {r['phase']}: did not converge, no verdict (see above and the servers' logs)")
            windows = []
        for label, w in windows:
            for op in ("put", "get"):
                before, during = r["before"][op][2], w[op][2]
                factor = during / before if before else math.nan
                verdict = "ok" if factor <= 2 else "MISSED"
                print(
                    f"  {r['phase']}: {op} p99 {before:.1f} -> {during:.1f} ms during {label}: {factor:.2f}x "
                    f"({verdict}, goal <= 2x)"
                )
        ratio = r["wire"] / r["min"] if r["min"] else math.nan
        placed = r["placed"] / r["min"] if r["min"] else math.nan
        if r["converged"]:
            print(
                f"  {r['phase']}: wire bytes {ratio:.2f}x the minimum ({'ok' if ratio <= 1.2 else 'MISSED'}, "
                f"goal <= 1.2x; raw {r['raw'] / r['min']:.2f}x, the subtracted background alone is "
                f"{r['background'] * r['move_s'] / r['min']:.2f}x); placement added {r['added']} replicas, "
                f"{placed:.2f}x the minimum"
            )
        errors = [e for _label, w in r["during"] for e in w["errors"]] + r["before"]["errors"]
        if errors:
            kinds: dict[str, int] = {}
            for e in errors:
                kinds[e] = kinds.get(e, 0) + 1
            print(f"  {r['phase']}: {len(errors)} foreground errors reached the client:")
            for e, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:8]:
                print(f"    {n:>4} x {e}")


def rate_text(args: argparse.Namespace) -> str:
    rate = args.snapshot_rate
    if rate is None:
        env = os.environ.get("BOROUGH_SNAPSHOT_BYTES_PER_SECOND")
        return f"{int(env) / 1024 / 1024:g} MiB/s (from the environment)" if env else "the node's default"
    return f"{rate:g} MiB/s per node" if rate else "unlimited"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--mb", type=float, default=100.0, help="MB of values in all")
    parser.add_argument("--value-kb", type=float, default=16.0, help="size of each loaded value")
    parser.add_argument("--batch-kb", type=float, default=256.0, help="values per load batch (one Raft entry)")
    parser.add_argument("--dead-after", type=float, default=5.0, help="BOROUGH_DEAD_AFTER for the servers")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of foreground load before each phase")
    parser.add_argument("--fg-clients", type=int, default=4)
    parser.add_argument("--snapshot-entries", type=int, default=0, help="BOROUGH_SNAPSHOT_ENTRIES (0: default)")
    parser.add_argument(
        "--snapshot-rate", type=float, default=None, help="BOROUGH_SNAPSHOT_BYTES_PER_SECOND in MiB/s (0: no limit)"
    )
    parser.add_argument("--phase-timeout", type=float, default=600.0, help="give up on a phase after this long")
    parser.add_argument("--quick", action="store_true", help="20 partitions, 10 MB, 3 s baselines")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data dirs and logs")
    args = parser.parse_args()
    if args.quick:
        args.partitions, args.mb, args.baseline = 20, 10.0, 3.0
        args.phase_timeout = min(args.phase_timeout, 120.0)
    sys.exit(trio.run(run_bench, args))


if __name__ == "__main__":
    main()
