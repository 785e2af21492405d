"""Where a lone operation's wall time goes, hop by hop: the system calls on its path, stamped in every process.

Starts 3 ``borough serve`` processes on 127.0.0.1 (fsync on; ``--no-fsync`` to take the disk out) that stamp, with
the machine's one monotonic clock, each socket read and write the wire makes, each wait for a readable socket and
its wake-up, and each engine write with its fsync (``bench/_traced_serve.py``, ``bench/_trace.py``); runs one
client putting into one partition (or reading it) in this process, stamped the same way; then lines up, for every
operation, what each process did between the client's call leaving and its reply arriving.

It prints, per process, the sequence of events most operations share and the median time of each from the
client's send, with the gap since the process's previous event: how long a process waited to be woken, how long
it computed between a read and its next write, how long a write with its fsync took. Wall times, not CPU: this is
the latency the client sees, laid out.

    .venv/bin/python bench/timeline.py                 # put, 4 s
    .venv/bin/python bench/timeline.py --no-fsync
    .venv/bin/python bench/timeline.py --op get

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import pathlib
import shutil
import sys
import tempfile

import trio

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _trace  # noqa: E402
from cluster import WindowedCluster, percentile  # noqa: E402
from steps import load  # noqa: E402

Event = tuple[int, str, int]


class TracedCluster(WindowedCluster):
    wrapper, out_env, out_name = "_traced_serve.py", "BOROUGH_TRACE_OUT", "trace-n{i}.json"
    client: list[Event] = []

    def snapshot(self) -> None:
        super().snapshot()
        self.client = _trace.take()  # (the client's own: the first call starts the window, the second's is kept)

    def events(self, i: int) -> list[Event]:
        return [(int(t), str(kind), int(detail)) for t, kind, detail in json.loads(self.window_lines(i)[0])]


def windows(client: list[Event]) -> list[tuple[int, int, int, int]]:
    """(operation called, call written, reply read, operation returned) times of the client's operations: each
    ``op`` stamp, the first write after it, the last read before its ``op.``, and that."""
    out = []
    called = send = read = None
    for t, kind, _ in client:
        if kind == "op":
            called, send, read = t, None, None
        elif kind == "write" and called is not None and send is None:
            send = t
        elif kind == "read" and send is not None:
            read = t
        elif kind == "op." and called is not None:
            if send is not None and read is not None:
                out.append((called, send, read, t))
            called = None
    return out


def lay_out(name: str, spans: list[tuple[int, int]], events: list[Event]) -> None:
    times = [e[0] for e in events]
    shapes: collections.Counter[tuple[str, ...]] = collections.Counter()
    per_op = []
    for start, end in spans:
        lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
        seq = events[lo:hi]
        shape = tuple(kind for _, kind, _ in seq)
        shapes[shape] += 1
        per_op.append((start, shape, seq))
    if not shapes:
        return
    shape, count = shapes.most_common(1)[0]
    offsets: list[list[float]] = [[] for _ in shape]
    for start, s, seq in per_op:
        if s == shape:
            for k, (t, _, _) in enumerate(seq):
                offsets[k].append((t - start) / 1e3)
    print(f"  {name}: {count} of {len(spans)} operations share this sequence ({len(shapes)} sequences in all)")
    previous = 0.0
    for kind, offs in zip(shape, offsets, strict=True):
        at = percentile(sorted(offs), 0.5)
        print(f"    {kind:10s} at {at:8.1f} us   (+{at - previous:7.1f})")
        previous = at


def first(seq: list[Event], kind: str, after: int = 0) -> int | None:
    return next((t for t, k, _ in seq if k == kind and t >= after), None)


def last(seq: list[Event], kind: str) -> int | None:
    return next((t for t, k, _ in reversed(seq) if k == kind), None)


#: The critical path of a put, as segments between two stamps of one operation.
SEGMENTS = (
    "client's call written -> leader reads it",
    "leader: read -> first append written",
    "append written -> first follower reads it",
    "follower: read -> its engine write starts",
    "follower: engine write with fsync",
    "follower: write done -> acknowledgement written",
    "acknowledgement written -> leader reads it",
    "leader: acknowledgement read -> reply written",
    "reply written -> client reads it",
)


def critical_path(spans: list[tuple[int, int]], nodes: list[list[Event]]) -> None:
    """Per put, the hops of its critical path (the leader, the follower whose acknowledgement came first)."""
    times = [[e[0] for e in events] for events in nodes]
    segments: list[list[float]] = [[] for _ in SEGMENTS]
    counted = 0
    for start, end in spans:
        seqs = [
            events[bisect.bisect_left(ts, start) : bisect.bisect_right(ts, end)]
            for events, ts in zip(nodes, times, strict=True)
        ]
        reads = [first(seq, "read") for seq in seqs]
        if any(r is None for r in reads):
            continue
        leader = min(range(len(seqs)), key=lambda i: reads[i])  # type: ignore[arg-type, return-value]
        followers = [i for i in range(len(seqs)) if i != leader]
        acks = {i: first(seqs[i], "write") for i in followers}
        if any(a is None for a in acks.values()):
            continue
        fast = min(followers, key=lambda i: acks[i])  # type: ignore[arg-type, return-value]
        lseq, fseq = seqs[leader], seqs[fast]
        points = [
            start,
            first(lseq, "read"),
            first(lseq, "write"),
            first(fseq, "read"),
            first(fseq, "commit"),
            first(fseq, "committed"),
            acks[fast],
            first(lseq, "read", after=acks[fast] or 0),
            last(lseq, "write"),
            end,
        ]
        if any(p is None for p in points) or points != sorted(points):  # type: ignore[type-var]
            continue
        counted += 1
        for k in range(len(SEGMENTS)):
            segments[k].append((points[k + 1] - points[k]) / 1e3)  # type: ignore[operator]
    print(f"  the critical path ({counted} of {len(spans)} operations), median of each hop:")
    total = 0.0
    for name, values in zip(SEGMENTS, segments, strict=True):
        if values:
            median = percentile(sorted(values), 0.5)
            total += median
            print(f"    {name:50s} {median:7.1f} us")
    print(f"    {'(sum of the medians)':50s} {total:7.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=("put", "get"), default="put")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--steps", action="store_true", help="stamp the nodes' rounds, turn halves and calls too (X begins, X. ends)"
    )
    parser.add_argument("--no-fsync", action="store_true", help="serve with --no-fsync (the disk out of the path)")
    args = parser.parse_args()
    if args.no_fsync:
        os.environ["BENCH_NO_FSYNC"] = "1"
    if args.steps:
        os.environ["BOROUGH_TRACE_STEPS"] = "1"
    _trace.install()
    _trace.install_client()
    root = pathlib.Path(tempfile.mkdtemp(prefix="borough-timeline-"))
    cluster = TracedCluster(root)
    try:
        cluster.start()
        done, latencies = trio.run(load, cluster, args.op, 1, 1, args.seconds)
        client = cluster.client
        ops = windows(client)
        ops = ops[len(ops) // 10 :]  # (the first tenth: warming up)
        spans = [(send, read) for _, send, read, _ in ops]
        fsync = "off" if args.no_fsync else "on"
        print(
            f"{args.op}, 1 partition, 1 client, fsync {fsync}: {done} ops in {args.seconds:g} s, p50 "
            f"{percentile(latencies, 0.5) * 1e3:.2f} ms; median time from the client's send (us), per process"
        )
        nodes = [cluster.events(i) for i in range(3)]
        before = percentile(sorted((send - called) / 1e3 for called, send, _, _ in ops), 0.5)
        after = percentile(sorted((done - read) / 1e3 for _, _, read, done in ops), 0.5)
        print(f"  the client: operation called -> call written {before:.1f} us; reply read -> returned {after:.1f} us")
        if args.op == "put":
            critical_path(spans, nodes)
        lay_out("client", spans, client)
        for i in range(3):
            lay_out(f"node {i}", spans, nodes[i])
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
