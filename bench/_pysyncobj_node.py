"""One PySyncObj 0.3.17 node for the baseline in ``bench/pysyncobj_baseline.py``; run as a child process.

Owns: one ``SyncObj`` holding a ``ReplDict`` (PySyncObj's own replicated dict: ``set`` is ``@replicated``,
``get`` reads the local copy), the load this node issues, and what it measures. It does not know how many
nodes there are beyond its partner list, nor how the load is split: the parent tells it its share.

The load is issued inside the node process, as PySyncObj's own benchmark does (``benchmarks/testobj.py``
calls a ``@replicated`` method with a callback from every node and counts successful callbacks; followers
forward the command to the leader). Unlike that open-loop benchmark, ours is closed-loop: the node keeps
``share`` ``set`` calls in flight and every completion callback issues the next one.

PySyncObj keeps its Raft log in memory (``journalFile=None``) and never fsyncs; nothing here is durable.

Protocol with the parent, one JSON object per line on stdout, plain text lines on stdin:

1. node → parent ``{"event": "ready", "node": ADDR, "leader": ADDR}`` once a leader is known and this node has
   caught up with it (``isReady()``);
2. parent → node ``go SHARE``: SHARE in-flight operations for this node (0: serve only, issue nothing);
3. node → parent ``{"event": "result", ...}`` (see ``_result``) after ``warmup + seconds``;
4. the node then waits for stdin to close (the other nodes may still be measuring and need it) and exits.
   Any failure is reported as ``{"event": "error", "message": ...}`` and exit status 1.

Modes: ``put`` (closed-loop ``set`` of random 16-byte keys with 100-byte values) and ``get``: the node first
writes ``READ_KEYS`` keys, then reads them back from its local copy in one synchronous loop. PySyncObj reads
are local and not linearizable (a follower, or a deposed leader, may return stale data); with no callback
there is nothing in flight, so in this mode SHARE only says whether the node reads.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import sys
import threading
import time
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf  # type: ignore[import-untyped]
from pysyncobj.batteries import ReplDict  # type: ignore[import-untyped]

KEY_BYTES = 16
VALUE_BYTES = 100
READ_KEYS = 1024
# Reads take ~0.1 µs; timing every one would cost more than the read and keep millions of samples, so the
# read loop times one read in READ_SAMPLE_EVERY (the first of each chunk of keys).
READ_SAMPLE_EVERY = 64


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class PutLoad:
    """Closed loop of ``set`` calls; completions run on PySyncObj's tick thread and issue the next call there.

    Counters are only written by callbacks (one tick thread), so the main thread reads them without a lock.
    ``load_cpu_s`` is the tick thread's CPU time spent in our callback, which includes issuing the next call
    (PySyncObj pickles the command and queues it in the caller's thread); Raft work happens outside it.
    """

    def __init__(self, store: Any, rng: random.Random) -> None:
        self._store = store
        self._rng = rng
        self.completed = 0
        self.errors = 0
        self.load_cpu_s = 0.0
        self.latencies_ms: list[float] = []
        self.measuring = False
        self.running = True

    def issue(self) -> None:
        callback = functools.partial(self._on_done, time.perf_counter())
        self._store.set(self._rng.randbytes(KEY_BYTES), self._rng.randbytes(VALUE_BYTES), callback=callback)

    def _on_done(self, started: float, _result: object, error: int) -> None:
        now = time.perf_counter()
        cpu = time.thread_time()
        if error == FAIL_REASON.SUCCESS:
            self.completed += 1
            if self.measuring:
                self.latencies_ms.append((now - started) * 1000.0)
        else:
            # Keep the loop closed: a failed call (e.g. DISCARDED after a leader change) is replaced too.
            self.errors += 1
        if self.running:
            self.issue()
        self.load_cpu_s += time.thread_time() - cpu


def run_puts(store: Any, share: int, warmup: float, seconds: float, rng: random.Random) -> dict[str, Any]:
    load = PutLoad(store, rng)
    for _ in range(share):
        load.issue()
    time.sleep(warmup)
    done0, errors0, load_cpu0 = load.completed, load.errors, load.load_cpu_s
    cpu0, t0 = time.process_time(), time.perf_counter()
    load.measuring = True
    time.sleep(seconds)
    load.measuring = False
    done1, errors1, load_cpu1 = load.completed, load.errors, load.load_cpu_s
    cpu1, t1 = time.process_time(), time.perf_counter()
    load.running = False  # the calls still in flight complete but issue nothing more
    return _result(
        ops=done1 - done0,
        errors=errors1 - errors0,
        elapsed=t1 - t0,
        cpu_s=cpu1 - cpu0,
        load_cpu_s=load_cpu1 - load_cpu0,
        latencies_ms=list(load.latencies_ms),
    )


def preload(store: Any, rng: random.Random, timeout: float) -> list[bytes]:
    """Write READ_KEYS keys through Raft (all in flight at once) and wait until each is applied here."""
    keys = [rng.randbytes(KEY_BYTES) for _ in range(READ_KEYS)]
    lock = threading.Lock()
    pending = [len(keys)]
    failed: list[int] = []
    all_done = threading.Event()

    def done(_result: object, error: int) -> None:
        with lock:
            if error != FAIL_REASON.SUCCESS:
                failed.append(error)
            pending[0] -= 1
            if pending[0] == 0:
                all_done.set()

    for key in keys:
        store.set(key, rng.randbytes(VALUE_BYTES), callback=done)
    if not all_done.wait(timeout):
        raise TimeoutError(f"preloading {READ_KEYS} keys took over {timeout} s; is the cluster overloaded?")
    if failed:
        raise RuntimeError(f"{len(failed)} preload writes failed (PySyncObj FAIL_REASON codes {sorted(set(failed))})")
    return keys


def _read_for(get: Any, chunks: list[tuple[bytes, list[bytes]]], seconds: float, samples: list[int] | None) -> int:
    """Read the keys in a cycle for ``seconds``; returns the number of reads. Misses raise (preload bug)."""
    reads = 0
    per_round = sum(1 + len(rest) for _, rest in chunks)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for first, rest in chunks:
            t = time.perf_counter_ns()
            value = get(first)
            elapsed_ns = time.perf_counter_ns() - t
            if value is None:
                raise RuntimeError("a preloaded key is missing from the local copy")
            if samples is not None:
                samples.append(elapsed_ns)
            for key in rest:
                get(key)
        reads += per_round
    return reads


def run_gets(store: Any, share: int, warmup: float, seconds: float, rng: random.Random) -> dict[str, Any]:
    if share == 0:
        time.sleep(warmup)
        cpu0, t0 = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        return _result(0, 0, time.perf_counter() - t0, time.process_time() - cpu0, 0.0, [])
    keys = preload(store, rng, timeout=10.0)
    rng.shuffle(keys)
    chunks = [(keys[i], keys[i + 1 : i + READ_SAMPLE_EVERY]) for i in range(0, len(keys), READ_SAMPLE_EVERY)]
    _read_for(store.get, chunks, warmup, None)
    samples: list[int] = []
    cpu0, load_cpu0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
    reads = _read_for(store.get, chunks, seconds, samples)
    cpu1, load_cpu1, t1 = time.process_time(), time.thread_time(), time.perf_counter()
    # The read loop's thread is all load: loop overhead costs more than the dict lookup it times.
    return _result(reads, 0, t1 - t0, cpu1 - cpu0, load_cpu1 - load_cpu0, [ns / 1e6 for ns in samples])


def _result(
    ops: int, errors: int, elapsed: float, cpu_s: float, load_cpu_s: float, latencies_ms: list[float]
) -> dict[str, Any]:
    """Figures over the measured window. ``cpu_s`` is the whole process (Raft, network, and the load it
    issues); ``latencies_ms`` go to the parent so it can take percentiles over all nodes together."""
    ordered = sorted(latencies_ms)
    return {
        "event": "result",
        "ops": ops,
        "errors": errors,
        "seconds": elapsed,
        "ops_per_s": ops / elapsed,
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "cpu_s": cpu_s,
        "load_cpu_s": load_cpu_s,
        "latencies_ms": [round(x, 4) for x in latencies_ms],
    }


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples; NaN when there are none."""
    if not ordered:
        return float("nan")
    return ordered[max(1, math.ceil(len(ordered) * q)) - 1]


def wait_for_leader(node: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = node._getLeader()
        if leader is not None and node.isReady():
            return str(leader)
        time.sleep(0.02)
    raise TimeoutError(f"no Raft leader after {timeout} s; are the partner addresses right and reachable?")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self", dest="self_addr", required=True, help="this node's host:port")
    parser.add_argument("--partner", action="append", required=True, help="another node's host:port")
    parser.add_argument("--mode", choices=["put", "get"], default="put")
    parser.add_argument("--seconds", type=float, required=True, help="length of the measured window")
    parser.add_argument("--warmup", type=float, default=1.0, help="load before the window, not measured")
    parser.add_argument("--batch", action="store_true", help="PySyncObj's default appendEntriesUseBatch=True")
    parser.add_argument(
        "--no-log-compaction", action="store_true", help="never compact the log (default: every 5000 entries)"
    )
    parser.add_argument("--leader-timeout", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # appendEntriesUseBatch=True (PySyncObj's default, used by its throughput benchmark) sends entries only
    # every appendEntriesPeriod (0.1 s), so a closed loop waits ~0.1 s per call. False (its latency benchmark,
    # testobj_delay.py) sends at once and wakes the tick thread through a pipe when a call is queued.
    # Log compaction (default: once the log holds 5000 entries) pickles and gzips the whole dict on the tick
    # thread, ~0.5 s for 5000 entries here, and then sends that snapshot to any follower behind it: every node
    # stalls meanwhile. --no-log-compaction raises the threshold out of reach to show PySyncObj without it.
    compaction_min_entries = 2**62 if args.no_log_compaction else SyncObjConf().logCompactionMinEntries
    conf = SyncObjConf(appendEntriesUseBatch=args.batch, logCompactionMinEntries=compaction_min_entries)
    store = ReplDict()
    node = SyncObj(args.self_addr, args.partner, conf, consumers=[store])
    try:
        _emit({"event": "ready", "node": args.self_addr, "leader": wait_for_leader(node, args.leader_timeout)})
        line = sys.stdin.readline()
        if not line:
            return 0  # the parent gave up before starting the load
        command, share_text = line.split()
        if command != "go":
            raise ValueError(f"expected 'go SHARE' on stdin, got {line!r}")
        rng = random.Random(f"{args.seed}:{args.self_addr}")
        run = run_puts if args.mode == "put" else run_gets
        _emit(run(store, int(share_text), args.warmup, args.seconds, rng))
        sys.stdin.read()  # serve until the parent closes stdin: the other nodes may still need us
        return 0
    except Exception as exc:
        _emit({"event": "error", "node": args.self_addr, "message": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        node.destroy()


if __name__ == "__main__":
    sys.exit(main())
