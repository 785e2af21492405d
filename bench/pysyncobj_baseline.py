"""PySyncObj 0.3.17 baseline for ``bench/cluster.py``: a 3-node PySyncObj cluster on 127.0.0.1 under load.

Owns: starting three ``bench/_pysyncobj_node.py`` processes on free loopback ports, telling each its share of
the load once they agree on a leader, collecting their JSON results, always killing them, and summing the
figures. It does not know Borough; ``bench/cluster.py`` puts its figures next to Borough's.

How the load is issued mirrors PySyncObj's own benchmark (``benchmarks/benchmarks.py`` starts every node with
``requestsPerSecond / numNodes`` and each node calls a ``@replicated`` method with a callback, counting
successful callbacks): every node issues load from inside its own process, the concurrency C split among the
3 nodes (the leader takes the remainder first, so C=1 is one call in flight on the leader). Followers forward
their calls to the leader. Unlike PySyncObj's open-loop benchmark the load is closed-loop: each completion
callback issues the next call.

PySyncObj keeps its Raft log in memory and never fsyncs, so its writes are not durable; its reads are local
dict lookups, not linearizable. Both make it faster than a system that does either; the table says so.

Run from the worktree root: ``/work/venv/bin/python bench/pysyncobj_baseline.py`` (needs the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import math
import pathlib
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from borough.errors import ConfigError, Timeout, Unavailable  # noqa: E402

NODE_SCRIPT = pathlib.Path(__file__).resolve().parent / "_pysyncobj_node.py"
NODES = 3
LEADER_TIMEOUT_S = 20.0  # spawning, connecting and electing usually takes 1-2 s
PRELOAD_TIMEOUT_S = 10.0  # the get mode writes its keys before reading (see the node script)
MARGIN_S = 10.0
MODES = ("put", "get")


def run_pysyncobj(
    concurrency: int,
    seconds: float,
    *,
    mode: str = "put",
    warmup: float = 1.0,
    batch: bool = False,
    log_compaction: bool = True,
) -> dict[str, float]:
    """Run one load against a fresh 3-node PySyncObj cluster and return its figures over ``seconds``.

    ``mode="put"``: ``concurrency`` closed-loop ``set(random 16-byte key, 100-byte value)`` calls in flight,
    split among the nodes. ``mode="get"``: each node given a share reads keys it wrote from its local copy in
    one synchronous loop (local, not linearizable; one read in 64 is timed). ``warmup`` seconds of load run
    before the measured window. ``batch=True`` uses PySyncObj's default ``appendEntriesUseBatch=True``
    (entries go out every 0.1 s: fine for its open-loop benchmark, ~0.1 s per call in a closed loop); the
    default False is what PySyncObj's own latency benchmark uses. ``log_compaction=True`` is PySyncObj's
    default: every node, once its log holds 5000 entries, pickles and gzips its whole dict on its only
    (tick) thread, ~0.5 s at 5000 entries, then sends it to followers behind it; all calls stall meanwhile,
    which shows in p99 and, as the dict grows with the run, more so in longer runs. ``False`` never compacts.

    Returns ``ops_per_s`` (completions/s, all nodes), ``p50_ms``/``p99_ms`` (issue to completion callback,
    all nodes' samples together), ``server_cpu_s`` (CPU seconds of the 3 processes over the window, less the
    load generator's), ``load_cpu_s`` (CPU seconds of the load generator inside those processes: our
    callbacks, which issue the next call, PySyncObj pickling and queueing it included) and ``errors`` (calls
    that completed with a PySyncObj failure; 0 in a healthy run).

    Raises ``ConfigError`` for bad arguments or a missing pysyncobj, ``Timeout`` if the cluster elects no
    leader or does not report within its deadline, ``Unavailable`` if a node fails. The processes are killed
    whatever happens.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, not {mode!r}")
    if concurrency < 1 or seconds <= 0 or warmup < 0:
        raise ConfigError("concurrency must be >= 1, seconds > 0 and warmup >= 0")
    if importlib.util.find_spec("pysyncobj") is None:
        raise ConfigError("pysyncobj is not installed; install the bench extra (pysyncobj==0.3.17)")

    addresses = [f"127.0.0.1:{port}" for port in _free_ports(NODES)]
    deadline = time.monotonic() + LEADER_TIMEOUT_S + PRELOAD_TIMEOUT_S + warmup + seconds + MARGIN_S
    nodes: list[_NodeProcess] = []
    try:
        for address in addresses:
            partners = [a for a in addresses if a != address]
            node = _NodeProcess(
                address, partners, mode=mode, seconds=seconds, warmup=warmup, batch=batch, log_compaction=log_compaction
            )
            nodes.append(node)
        ready = [node.expect("ready", deadline) for node in nodes]
        # All nodes normally name the same leader; should an election be under way, follow the majority.
        leader = collections.Counter(r["leader"] for r in ready).most_common(1)[0][0]
        for node, share in zip(nodes, _split(concurrency, addresses, leader), strict=True):
            node.send(f"go {share}")
        results = [node.expect("result", deadline) for node in nodes]
    finally:
        for node in nodes:
            node.kill()

    latencies = sorted(x for r in results for x in r["latencies_ms"])
    load_cpu = sum(r["load_cpu_s"] for r in results)
    return {
        "ops_per_s": sum(r["ops_per_s"] for r in results),
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "server_cpu_s": sum(r["cpu_s"] for r in results) - load_cpu,
        "load_cpu_s": load_cpu,
        "errors": sum(r["errors"] for r in results),
    }


def _split(concurrency: int, addresses: list[str], leader: str) -> list[int]:
    """Shares of ``concurrency`` per address, as even as possible; the leader, then the others in order,
    take one more each until the remainder is used."""
    order = sorted(range(len(addresses)), key=lambda i: addresses[i] != leader)
    shares = [concurrency // len(addresses)] * len(addresses)
    for i in order[: concurrency % len(addresses)]:
        shares[i] += 1
    return shares


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples; NaN when there are none (same rule as the node script)."""
    if not ordered:
        return float("nan")
    return ordered[max(1, math.ceil(len(ordered) * q)) - 1]


def _free_ports(count: int) -> list[int]:
    """Ports the kernel picks for 127.0.0.1; all bound at once so they differ. Another process could take
    one before the node binds it (PySyncObj then retries the bind until the leader deadline)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


class _NodeProcess:
    """One node child: JSON events from its stdout arrive on a queue through a reader thread (so waits can
    time out); stderr goes to a temporary file (a pipe nobody reads could fill and block the child)."""

    def __init__(
        self,
        address: str,
        partners: list[str],
        *,
        mode: str,
        seconds: float,
        warmup: float,
        batch: bool,
        log_compaction: bool,
    ) -> None:
        self.address = address
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the child; kill() closes it
        command = [sys.executable, str(NODE_SCRIPT), "--self", address, "--mode", mode]
        command += ["--seconds", str(seconds), "--warmup", str(warmup), "--leader-timeout", str(LEADER_TIMEOUT_S)]
        for partner in partners:
            command += ["--partner", partner]
        if batch:
            command.append("--batch")
        if not log_compaction:
            command.append("--no-log-compaction")
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1
        )
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read_events, name=f"pysyncobj-{address}", daemon=True).start()

    def _read_events(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                self._events.put(json.loads(line))
            except json.JSONDecodeError:
                self._events.put({"event": "error", "message": f"unexpected output {line.strip()!r}"})
        self._events.put(None)  # end of output: the child exited

    def expect(self, event: str, deadline: float) -> dict[str, Any]:
        try:
            got = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise Timeout(
                f"PySyncObj node {self.address} sent no {event!r} before the deadline; "
                f"its stderr ends with: {self._stderr_tail()}"
            ) from None
        if got is None or got.get("event") != event:
            what = "exited" if got is None else f"sent {got.get('event')!r}: {got.get('message', '')}"
            raise Unavailable(
                f"PySyncObj node {self.address} {what} instead of {event!r}; its stderr ends with: "
                f"{self._stderr_tail()}"
            )
        return got

    def send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def kill(self) -> None:
        # Nothing to save (PySyncObj keeps everything in memory), so no graceful stop.
        self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()

    def _stderr_tail(self, limit: int = 2000) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text[-limit:] or "(nothing)"


def main() -> None:
    parser = argparse.ArgumentParser(description="PySyncObj 0.3.17 baseline: 3 nodes on 127.0.0.1.")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="load before each window, not measured")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--batch", action="store_true", help="also run puts with appendEntriesUseBatch=True")
    args = parser.parse_args()

    # (label, mode, keyword arguments): PySyncObj's defaults first, then without log compaction.
    variants: list[tuple[str, str, dict[str, bool]]] = [
        ("put", "put", {}),
        ("put nocomp", "put", {"log_compaction": False}),
    ]
    if args.batch:
        variants.append(("put batch", "put", {"batch": True}))
    runs = [(label, mode, c, kw) for label, mode, kw in variants for c in args.concurrency]
    runs.append(("get", "get", max(args.concurrency), {}))

    print("PySyncObj 0.3.17: 3 processes on 127.0.0.1; load issued inside the nodes, concurrency split among them.")
    print("NOTE: PySyncObj keeps its Raft log in memory and never fsyncs: its puts are NOT durable.")
    print("NOTE: its gets are local dict reads, NOT linearizable (a follower may be stale); 1 read in 64 is timed.")
    print("put: PySyncObj defaults but appendEntriesUseBatch=False (as its latency benchmark); log compaction every")
    print("     5000 entries stalls every node ~0.5-1 s (synchronous pickle+gzip of the dict, snapshot to followers).")
    print("put nocomp: the same with log compaction disabled.")
    print(f"{args.seconds:g} s measured per run after {args.warmup:g} s warm-up. CPU seconds over that window:")
    print("server = the 3 processes less the load generator running inside them; load = the generator's callbacks.")
    print()
    header = (
        f"{'run':<11} {'conc':>5} {'ops/s':>11} {'p50 ms':>9} {'p99 ms':>9} {'server cpu s':>13} {'load cpu s':>11}"
    )
    print(header)
    print("-" * len(header))
    for label, mode, concurrency, kw in runs:
        r = run_pysyncobj(concurrency, args.seconds, mode=mode, warmup=args.warmup, **kw)
        errors = f"  ({int(r['errors'])} failed)" if r["errors"] else ""
        print(
            f"{label:<11} {concurrency:>5} {r['ops_per_s']:>11,.0f} {r['p50_ms']:>9.4g} {r['p99_ms']:>9.4g} "
            f"{r['server_cpu_s']:>13.2f} {r['load_cpu_s']:>11.2f}{errors}",
            flush=True,
        )


if __name__ == "__main__":
    main()
