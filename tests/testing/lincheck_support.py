"""Helpers for the history and linearizability tests: build histories from intervals, generate histories from a
real sequential execution, and a brute-force reference checker that shares no code with the real one."""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import attrs

from borough.testing.history import NOT_FOUND, History, Kind, Operation, Status

_UNSET = object()


@attrs.frozen(kw_only=True)
class Spec:
    """One operation drawn as an interval: invoked at ``start``, outcome recorded at ``end`` (None: pending)."""

    kind: str
    key: Hashable
    start: float
    end: float | None
    status: str = "ok"
    value: object = _UNSET
    expected: object = _UNSET
    result: object = None
    client: Hashable = "c"


def put(key: Hashable, value: object, start: float, end: float | None, status: str = "ok", client: str = "c") -> Spec:
    return Spec(kind="put", key=key, value=value, start=start, end=end, status=status, client=client)


def get(key: Hashable, result: object, start: float, end: float | None, status: str = "ok", client: str = "c") -> Spec:
    return Spec(kind="get", key=key, result=result, start=start, end=end, status=status, client=client)


def delete(key: Hashable, start: float, end: float | None, status: str = "ok", client: str = "c") -> Spec:
    return Spec(kind="delete", key=key, start=start, end=end, status=status, client=client)


def cas(
    key: Hashable,
    expected: object,
    new: object,
    result: bool | None,
    start: float,
    end: float | None,
    status: str = "ok",
    client: str = "c",
) -> Spec:
    return Spec(
        kind="cas", key=key, expected=expected, value=new, result=result, start=start, end=end, status=status,
        client=client,
    )  # fmt: skip


def record(*specs: Spec) -> History:
    """Play the specs into a History in time order (invocations before completions at equal times)."""
    events: list[tuple[float, int, int]] = []
    for i, spec in enumerate(specs):
        events.append((spec.start, 0, i))
        if spec.end is not None:
            assert spec.end >= spec.start, spec
            events.append((spec.end, 1, i))
    events.sort()
    history = History()
    ops: dict[int, Operation] = {}
    for _, is_completion, i in events:
        spec = specs[i]
        if not is_completion:
            kwargs: dict[str, object] = {}
            if spec.expected is not _UNSET:
                kwargs["expected"] = spec.expected
            if spec.value is _UNSET:
                ops[i] = history.invoke(spec.client, spec.kind, spec.key, **kwargs)  # type: ignore[arg-type]
            else:
                ops[i] = history.invoke(spec.client, spec.kind, spec.key, spec.value, **kwargs)  # type: ignore[arg-type]
        elif spec.status == "ok":
            history.ok(ops[i], spec.result)
        elif spec.status == "fail":
            history.fail(ops[i], "refused")
        else:
            assert spec.status == "unknown", spec
            history.unknown(ops[i], "timed out")
    return history


# --- a real sequential execution, observed through stretched intervals ----------------------------------------


def sequential_history(rng: random.Random, **params: Any) -> History:
    """``sequential_specs`` played into a History."""
    return record(*sequential_specs(rng, **params))


def sequential_specs(
    rng: random.Random,
    *,
    n_ops: int,
    keys: Sequence[Hashable],
    clients: int = 10,
    stretch: int = 30,
    p_fail: float = 0.05,
    p_unknown: float = 0.05,
    p_cas: float = 0.1,
    p_delete: float = 0.1,
    p_get: float = 0.45,
) -> list[Spec]:
    """Execute ``n_ops`` operations one at a time on a real register per key (linearization point of op i at time
    100*i), then give each an interval around its point stretched by up to ``stretch`` points either way. The
    result is linearizable by construction. Every written value is unique (``"v<i>"``), so corrupted reads can be
    reasoned about. Failed ops do not take effect; unknown ones take effect or not, and give up at any time."""
    state: dict[Hashable, object] = {}
    specs: list[Spec] = []
    for i in range(n_ops):
        point = 100 * i
        start = point - rng.randint(0, stretch * 100)
        end: int | None = point + rng.randint(0, stretch * 100)
        key = rng.choice(keys)
        client = f"c{rng.randrange(clients)}"
        roll = rng.random()
        status = "fail" if roll < p_fail else "unknown" if roll < p_fail + p_unknown else "ok"
        applies = status == "ok" or (status == "unknown" and rng.random() < 0.5)
        if status == "fail" or (status == "unknown" and not applies):
            start = rng.randint(point - stretch * 100, point + stretch * 100)
            end = start + rng.randint(1, max(1, stretch * 100))
        if status == "unknown":
            end = rng.randint(start, start + stretch * 100) if rng.random() < 0.8 else None
        current = state.get(key, NOT_FOUND)
        kind_roll = rng.random()
        value = f"v{i}"
        if kind_roll < p_get:
            spec = get(key, current, start, end, status, client)
        elif kind_roll < p_get + p_delete:
            spec = delete(key, start, end, status, client)
            if applies:
                state.pop(key, None)
        elif kind_roll < p_get + p_delete + p_cas:
            written = [s.value for s in specs if s.key == key and s.kind in ("put", "cas")]
            expected = rng.choice([current, NOT_FOUND, *written[-3:]])
            swapped = expected == current
            spec = cas(key, expected, value, swapped, start, end, status, client)
            if applies and swapped:
                state[key] = value
        else:
            spec = put(key, value, start, end, status, client)
            if applies:
                state[key] = value
        specs.append(spec)
    return specs


# --- a brute-force reference checker -------------------------------------------------------------------------


def brute_force_linearizable(ops: Iterable[Operation]) -> bool:
    """Search every order of the whole history (all keys at once, one dict as the state) that respects real time;
    unknown and pending ops may appear or not, ok ones must. Exponential: for a handful of operations only."""
    required = [op for op in ops if op.status is Status.OK]
    optional = [op for op in ops if op.status in (Status.UNKNOWN, Status.PENDING)]

    def apply(state: dict[Hashable, object], op: Operation) -> dict[Hashable, object] | None:
        current = state.get(op.key, NOT_FOUND)
        new = dict(state)
        if op.kind is Kind.GET:
            if op.status is Status.OK and current != op.result:
                return None
        elif op.kind is Kind.PUT:
            new[op.key] = op.value
        elif op.kind is Kind.DELETE:
            new.pop(op.key, None)
        else:
            swaps = current == op.expected
            if op.status is Status.OK and swaps != op.result:
                return None
            if swaps:
                new[op.key] = op.value
        return new

    def search(state: dict[Hashable, object], left_required: list[Operation], left_optional: list[Operation]) -> bool:
        if not left_required:
            return True
        for candidate in [*left_required, *left_optional]:
            # Real time: an op returned before the candidate was invoked must come first.
            if any(
                other.completed_at is not None and other.completed_at < candidate.invoked_at
                for other in left_required
                if other is not candidate
            ):
                continue
            new = apply(state, candidate)
            if new is None:
                continue
            if search(
                new,
                [op for op in left_required if op is not candidate],
                [op for op in left_optional if op is not candidate],
            ):
                return True
        return False

    return search({}, required, optional)


def memo_linearizable(ops: Iterable[Operation]) -> bool:
    """The same search as ``brute_force_linearizable`` with a memo of (ops done, state): plain Wing & Gong with
    Lowe's memo and nothing else (no pruning, no reductions), for histories of a dozen or two operations."""
    ops = [op for op in ops if op.status is not Status.FAILED]
    required = frozenset(op.id for op in ops if op.status is Status.OK)
    by_id = {op.id: op for op in ops}
    failed: set[tuple[frozenset[int], tuple[tuple[Hashable, object], ...]]] = set()

    def apply(state: dict[Hashable, object], op: Operation) -> dict[Hashable, object] | None:
        current = state.get(op.key, NOT_FOUND)
        new = dict(state)
        if op.kind is Kind.GET:
            if op.status is Status.OK and current != op.result:
                return None
        elif op.kind is Kind.PUT:
            new[op.key] = op.value
        elif op.kind is Kind.DELETE:
            new.pop(op.key, None)
        else:
            swaps = current == op.expected
            if op.status is Status.OK and swaps != op.result:
                return None
            if swaps:
                new[op.key] = op.value
        return new

    def search(done: frozenset[int], state: dict[Hashable, object]) -> bool:
        if required <= done:
            return True
        memo = (done, tuple(sorted(state.items(), key=lambda item: repr(item[0]))))
        if memo in failed:
            return False
        waiting = [by_id[i] for i in required - done]
        for op in ops:
            if op.id in done:
                continue
            if any(o.completed_at is not None and o.completed_at < op.invoked_at for o in waiting if o is not op):
                continue
            new = apply(state, op)
            if new is not None and search(done | {op.id}, new):
                return True
        failed.add(memo)
        return False

    return search(frozenset(), {})
