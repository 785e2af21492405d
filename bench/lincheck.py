"""Benchmark: how long the linearizability checker takes on realistic client histories.

Simulates sequential clients (each waits for its operation before starting the next) against registers that
really are linearizable: every operation takes effect at a random point inside its interval. Latencies are
exponential with occasional long stalls (a partition); a stalled operation times out and is recorded as
unknown, and takes effect later or never. Then it makes one read stale, or appends reads that see a newer value
then an older one, to measure detection plus shrinking.

Run from the repository root: /work/venv/bin/python bench/lincheck.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attrs  # noqa: E402

from borough.testing.history import NOT_FOUND, History, Kind, Operation, Status  # noqa: E402
from borough.testing.linearizability import CheckResult, check  # noqa: E402


@attrs.define
class _Planned:
    client: str
    kind: str
    key: str
    value: object
    expected: object
    start: float
    end: float  # when the client learned the outcome (or gave up)
    status: str  # ok / fail / unknown
    point: float | None  # when it took effect; None: never
    result: object = None


def simulate(
    seed: int,
    *,
    n_ops: int,
    n_keys: int,
    clients: int,
    mean_latency: float = 5.0,
    p_stall: float = 0.02,
    timeout: float = 50.0,
    p_fail: float = 0.02,
    p_cas: float = 0.1,
) -> History:
    """A history of ``n_ops`` operations by ``clients`` sequential clients over ``n_keys`` keys."""
    rng = random.Random(seed)
    keys = [f"key-{i}" for i in range(n_keys)]
    clock = [0.0] * clients
    planned: list[_Planned] = []
    for n in range(n_ops):
        c = min(range(clients), key=lambda i: clock[i])
        start = clock[c] + rng.expovariate(1.0)
        latency = rng.expovariate(1.0 / mean_latency)
        if rng.random() < p_stall:
            latency *= 50
        key = rng.choice(keys)
        roll = rng.random()
        kind = "get" if roll < 0.5 else "delete" if roll < 0.55 else "cas" if roll < 0.55 + p_cas else "put"
        value = f"v{n}" if kind in ("put", "cas") else None
        expected = None
        if kind == "cas":
            earlier = [p.value for p in planned[-50:] if p.key == key and p.kind in ("put", "cas")]
            expected = rng.choice([NOT_FOUND, *earlier[-3:]])
        if rng.random() < p_fail:
            status, end, point = "fail", start + min(latency, timeout), None
        elif latency > timeout:
            status, end = "unknown", start + timeout
            point = start + latency * rng.random() if rng.random() < 0.5 else None
        else:
            status, end = "ok", start + latency
            point = start + latency * rng.random()
        clock[c] = end
        planned.append(_Planned(f"c{c}", kind, key, value, expected, start, end, status, point))
    # Apply the operations in the order they took effect, on real registers.
    state: dict[str, object] = {}
    for p in sorted((p for p in planned if p.point is not None), key=lambda p: p.point or 0.0):
        current = state.get(p.key, NOT_FOUND)
        if p.kind == "get":
            p.result = current
        elif p.kind == "put":
            state[p.key] = p.value
        elif p.kind == "delete":
            state.pop(p.key, None)
        else:
            p.result = current == p.expected
            if p.result:
                state[p.key] = p.value
    return _record(planned)


def _record(planned: list[_Planned]) -> History:
    events = sorted([(p.start, 0, i) for i, p in enumerate(planned)] + [(p.end, 1, i) for i, p in enumerate(planned)])
    history = History()
    ops: dict[int, Operation] = {}
    for when, is_end, i in events:
        p = planned[i]
        if not is_end:
            if p.kind == "cas":
                ops[i] = history.invoke(p.client, p.kind, p.key, p.value, expected=p.expected, time=when)
            elif p.kind == "put":
                ops[i] = history.invoke(p.client, p.kind, p.key, p.value, time=when)
            else:
                ops[i] = history.invoke(p.client, p.kind, p.key, time=when)
        elif p.status == "ok":
            history.ok(ops[i], p.result, time=when)
        elif p.status == "fail":
            history.fail(ops[i], "NotLeader", time=when)
        else:
            history.unknown(ops[i], "Timeout", time=when)
    return history


def corrupt_one_read(history: History, seed: int) -> list[Operation]:
    """The history with one ok get, late in it, changed to a stale read: it returns a value that was written but
    then overwritten before the get began (the freshest such value, to make the checker work for it)."""
    ops = list(history.operations)
    rng = random.Random(seed)
    gets = [op for op in ops[len(ops) // 2 :] if op.kind is Kind.GET and op.status is Status.OK]
    for victim in rng.sample(gets, len(gets)):
        writes = [
            op
            for op in ops
            if op.key == victim.key
            and op.status is Status.OK
            and (op.kind in (Kind.PUT, Kind.DELETE) or (op.kind is Kind.CAS and op.result))
        ]
        stale = [
            w1
            for w1 in writes
            if w1.kind is Kind.PUT
            and w1.value != victim.result
            and any(
                (w1.completed_at or 0) < w2.invoked_at and (w2.completed_at or 0) < victim.invoked_at for w2 in writes
            )
        ]
        if stale:
            value = max(stale, key=lambda op: op.completed_at or 0).value
            return [attrs.evolve(op, result=value) if op is victim else op for op in ops]
    raise RuntimeError("no read can be made stale in this history")


def append_new_then_old(history: History) -> list[Operation]:
    """The history plus, at its end, two concurrent puts and two reads in a row that see the newer value, then
    the older one: not a stale read of either put alone, so only a search (over a window) can show it."""
    ops = list(history.operations)
    key = ops[-1].key
    n, e = len(ops), history.next_event

    def op(i: int, kind: Kind, start: int, end: int, value: object = None, result: object = None) -> Operation:
        return Operation(
            id=n + i, client_id=f"x{i}", kind=kind, key=key, value=value, status=Status.OK, result=result,
            invoked_at=e + start, completed_at=e + end,
        )  # fmt: skip

    return [
        *ops,
        op(0, Kind.PUT, 0, 2, value="A"),
        op(1, Kind.PUT, 1, 3, value="B"),
        op(2, Kind.GET, 4, 5, result="B"),
        op(3, Kind.GET, 6, 7, result="A"),
    ]


def timed(target: History | list[Operation]) -> tuple[CheckResult, float]:
    began = time.perf_counter()
    result = check(target)
    return result, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller histories (a smoke run)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    scenarios = [
        # name, ops, keys, clients, extra
        ("brief target: 100 keys, 10 clients", 10_000, 100, 10, {}),
        ("100 keys, 10 clients, 10% stalls", 10_000, 100, 10, {"p_stall": 0.10}),
        ("10 keys, 50 clients", 10_000, 10, 50, {}),
        ("1 hot key, 10 clients", 5_000, 1, 10, {}),
        ("1 hot key, 10 clients, 10% stalls", 5_000, 1, 10, {"p_stall": 0.10}),
        ("1 hot key, 30 clients", 3_000, 1, 30, {}),
    ]
    header = (
        f"{'scenario':<40} {'ops':>7} {'keys':>5} {'clients':>7} {'unknown':>7} {'verdict':>17} {'steps':>9} {'sec':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, n_ops, n_keys, clients, extra in scenarios:
        history = simulate(1, n_ops=n_ops // scale, n_keys=n_keys, clients=clients, **extra)
        unknown = sum(op.status is Status.UNKNOWN for op in history.operations)
        result, seconds = timed(history)
        print(
            f"{name:<40} {len(history):>7} {n_keys:>5} {clients:>7} {unknown:>7} {result.outcome.value:>17}"
            f" {result.steps:>9} {seconds:>7.2f}"
        )
        if name.startswith(("brief", "1 hot key")):
            bad = corrupt_one_read(history, 2)
            result, seconds = timed(bad)
            print(
                f"{'  + one stale read (check + shrink)':<40} {len(bad):>7} {n_keys:>5} {clients:>7} {unknown:>7}"
                f" {result.outcome.value:>17} {result.steps:>9} {seconds:>7.2f}"
            )
            print(f"{'    minimal failing sub-history size':<40} {len(result.minimal):>7}")
        if name.startswith("1 hot key"):
            bad = append_new_then_old(history)
            result, seconds = timed(bad)
            print(
                f"{'  + new-then-old reads (check + shrink)':<40} {len(bad):>7} {n_keys:>5} {clients:>7}"
                f" {unknown:>7} {result.outcome.value:>17} {result.steps:>9} {seconds:>7.2f}"
            )
            print(f"{'    minimal failing sub-history size':<40} {len(result.minimal):>7}")


if __name__ == "__main__":
    main()
