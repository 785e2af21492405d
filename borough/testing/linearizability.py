"""Linearizability checking of a recorded history, one key at a time (Wing & Gong's search with Lowe's memo).

Owns: the split of a history into independent per-key histories (P-compositionality: a history of independent
registers is linearizable iff each register's history is), the per-key budget and its stages, the shortcuts for
keys too busy for the full search (a direct stale-read check, then windows of the key's history around where the
search got stuck, since failures are usually local), shrinking a failing key's history to a small one that fails
on its own, and an explanation a person can read. The register model and the Wing–Gong–Lowe search (with Lowe's
memo, as Porcupine does, plus reductions that keep hot keys tractable in Python) live in ``_register_search``.

Every move that turns a history into a smaller one (a window, a shrink step) is *sound*: if the smaller one fails,
so does the original. So a reported failure is always real, and ``minimal`` is evidence a person can check by hand.

Semantics the caller must know:
- ok operations took effect exactly once between invocation and completion; failed ones never did (dropped);
  unknown and still-pending ones may take effect at any time after their invocation, or never (their return is
  +infinity); gets whose outcome is unknown observe nothing and are dropped.
- Values are compared by equality (hashable ones by hash and ==): 1 == 1.0 == True, a tuple never equals a list,
  NaN equals nothing; clients should record values as the database gives them back.
- Events tied between an invocation and a completion count as concurrent (the invocation is taken first).

Must not know: trio, the cluster, the network, or how the history was produced.
"""

from __future__ import annotations

import bisect
import reprlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Final

import attrs

from borough.testing._register_search import CAS_MAYBE, CAS_REFUSED, CAS_SWAPPED, GET, WRITE, Outcome, Problem, search
from borough.testing.history import NOT_FOUND, History, Kind, Operation, Status, timeline

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_SHRINK_BUDGET",
    "CheckResult",
    "Outcome",
    "check",
]

DEFAULT_BUDGET: Final = 4_000_000
"""Search steps allowed per key (about a second of CPU); past it that key is UNDECIDED rather than hanging."""

DEFAULT_SHRINK_BUDGET: Final = 5_000_000
"""Work (search steps and operations compiled) allowed for shrinking the failing key's history in total; past it
the shrink stops early and returns the smallest failing history found so far."""

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40


@attrs.frozen(kw_only=True)
class CheckResult:
    """What ``check`` found. ``ok`` is True only when every key was shown linearizable.

    For NOT_LINEARIZABLE, ``key`` is the first failing key (in order of first invocation), ``minimal`` a
    sub-history of it (original records, by invocation) that is not linearizable on its own and so proves the
    whole history is not, and ``explanation`` says why. For UNDECIDED, ``key`` is the first undecided key.
    """

    outcome: Outcome
    key: Hashable | None = None
    minimal: tuple[Operation, ...] = ()
    weakened: frozenset[int] = frozenset()  # ids of writes in ``minimal`` that fail it even with return +inf
    explanation: str
    failed_keys: tuple[Hashable, ...] = ()
    undecided_keys: tuple[Hashable, ...] = ()
    keys: int = 0
    operations: int = 0
    steps: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.LINEARIZABLE


def check(
    history: History | Iterable[Operation],
    *,
    budget: int = DEFAULT_BUDGET,
    shrink_budget: int = DEFAULT_SHRINK_BUDGET,
) -> CheckResult:
    """Check that ``history`` is linearizable, treating each key as an independent register.

    Every key is checked (so ``failed_keys`` and ``undecided_keys`` are complete); the first failing key is then
    shrunk within ``shrink_budget`` (0: no shrinking; ``minimal`` is then the failing history as found).
    ``budget`` bounds the search steps spent on each key: at most about twice it, counting the windows tried
    when the full search is undecided. Deterministic: the same history gives the same result.
    """
    if budget < 1 or shrink_budget < 0:
        raise ValueError(f"budget must be >= 1 and shrink_budget >= 0 (got {budget}, {shrink_budget})")
    ops = _validated(history)
    by_key: dict[Hashable, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    failed: dict[Hashable, _Witness] = {}
    undecided: list[Hashable] = []
    steps = 0
    considered = 0
    for key, key_ops in by_key.items():
        problem = Problem.build(key_ops, weak=frozenset())
        considered += len(problem.ops)
        # A first search with an eighth of the budget; if that is not enough, look for a local failure with a
        # quarter of it (cheap when there is one), and only then spend the whole budget on the full search.
        first = min(budget, max(budget // 8, 100_000))
        found = search(problem, first)
        steps += found.steps
        if found.outcome is Outcome.UNDECIDED:
            witness = _stale_read(problem)
            if witness is None:
                witness, work = _refute(key_ops, found.frontier, max(first, budget // 4))
                steps += work
            if witness is not None:
                failed[key] = witness
                continue
            if first < budget:
                found = search(problem, budget)
                steps += found.steps
        if found.outcome is Outcome.NOT_LINEARIZABLE:
            failed[key] = _Witness(ops=problem.ops, weak=frozenset())
        elif found.outcome is Outcome.UNDECIDED:
            undecided.append(key)
    dropped = len(ops) - considered
    summary = (
        f"{len(ops)} operations on {len(by_key)} keys ({considered} constrain the search, {dropped} dropped as"
        f" failed, unobserved or unneeded), {steps} search steps"
    )
    failed_keys, undecided_keys = tuple(failed), tuple(undecided)  # both in order of first invocation
    if failed:
        key = next(iter(failed))
        shrunk = _shrink(failed[key], budget, shrink_budget)
        steps += shrunk.steps
        return CheckResult(
            outcome=Outcome.NOT_LINEARIZABLE,
            key=key,
            minimal=tuple(shrunk.ops),
            weakened=shrunk.weak,
            explanation=_explain_failure(key, by_key[key], failed, shrunk, undecided, budget, summary),
            failed_keys=failed_keys,
            undecided_keys=undecided_keys,
            keys=len(by_key),
            operations=len(ops),
            steps=steps,
        )
    if undecided:
        names = ", ".join(repr(k) for k in undecided[:10]) + (" ..." if len(undecided) > 10 else "")
        explanation = (
            f"undecided: the search ran out of its budget of {budget} steps on {len(undecided)} key(s): {names}."
            " No key was found to fail. Raise budget= (a million steps take a quarter of a second or so), or make the"
            " workload less concurrent on one key (fewer clients per key, fewer unknown writes whose value is read)."
            f"\n{summary}"
        )
        return CheckResult(
            outcome=Outcome.UNDECIDED,
            key=undecided[0],
            explanation=explanation,
            failed_keys=failed_keys,
            undecided_keys=undecided_keys,
            keys=len(by_key),
            operations=len(ops),
            steps=steps,
        )
    return CheckResult(
        outcome=Outcome.LINEARIZABLE,
        explanation=f"linearizable: {summary}",
        keys=len(by_key),
        operations=len(ops),
        steps=steps,
    )


# --- shrinking -------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Shrunk:
    ops: tuple[Operation, ...]  # original records, by invocation
    weak: frozenset[int]  # ids of ok writes whose completion the failure does not need
    steps: int
    minimal: bool  # True if no single further move keeps it failing (the shrink did not run out of budget)
    found_by: str | None  # how the failing history was found, if not by the full search


@attrs.frozen(kw_only=True)
class _Witness:
    """A failing sub-history of one key: its ops (by invocation) and the ok writes in it treated as unknown."""

    ops: Sequence[Operation]
    weak: frozenset[int]
    found_by: str | None = None  # how it was found, if not by the full search (for the explanation)


def _stale_read(problem: Problem) -> _Witness | None:
    """A read that no write can explain, found directly (no search): a witness sub-history, or None.

    For an ok get of v, every put of v it could have seen must have been overwritten before it began: by an ok
    put or delete invoked after that put returned and returning before the get was invoked (and if v is the
    initial value, some ok put or delete returned before the get began). Then in any order, the last write before
    the get is not a write of v, so it cannot read v. The get, those puts and their overwriters fail on their
    own, by the same argument. Cheap whatever the concurrency, so it catches stale reads in keys too busy for the
    search. Gets that a cas or an unknown op might explain are left to the search.
    """
    ops, code, required = problem.ops, problem.code, problem.required
    overwriters = sorted(
        (i for i in range(len(ops)) if required[i] and code[i] == WRITE), key=lambda i: ops[i].invoked_at
    )
    calls = [ops[i].invoked_at for i in overwriters]
    # first_return[k]: of the overwriters invoked k-th or later, the one that returned first.
    first_return = [-1] * (len(overwriters) + 1)
    for k in range(len(overwriters) - 1, -1, -1):
        later = first_return[k + 1]
        i = overwriters[k]
        first_return[k] = i if later < 0 or (ops[i].completed_at or 0) < (ops[later].completed_at or 0) else later
    writers: dict[int, list[int]] = {}
    for i in range(len(ops)):
        value = problem.writes(i)
        if value is not None:
            writers.setdefault(value, []).append(i)

    def overwritten_after(event: int, before: int) -> int:
        """An overwriter invoked after ``event`` that returned before ``before``, or -1."""
        k = bisect.bisect_right(calls, event)
        i = first_return[k]
        return i if i >= 0 and (ops[i].completed_at or 0) < before else -1

    for r in range(len(ops)):
        if code[r] != GET:
            continue
        read = ops[r]
        evidence = [r]
        if problem.a[r] == problem.initial:
            w = overwritten_after(-1, read.invoked_at)
            if w < 0:
                continue
            evidence.append(w)
        for p in writers.get(problem.a[r], []):
            if ops[p].invoked_at > (read.completed_at or 0):
                continue  # invoked after the get returned: it cannot be what the get saw
            if not required[p] or code[p] != WRITE:
                break  # an unknown write may take effect any time; a cas's own condition is left to the search
            w = overwritten_after(ops[p].completed_at or 0, read.invoked_at)
            if w < 0:
                break
            evidence += [p, w]
        else:
            chosen = set(evidence)
            found_by = (
                f"checked directly, read #{read.id} cannot have seen {_value_text(read.result)}: every write of it"
                " had been overwritten before the read began"
            )
            return _Witness(ops=[op for i, op in enumerate(ops) if i in chosen], weak=frozenset(), found_by=found_by)
    return None


def _refute(
    key_ops: Sequence[Operation], frontier: int, budget: int, *, width: int = 32
) -> tuple[_Witness | None, int]:
    """Look for a failing window of a key whose full search ran out of budget; (None, work) if none is found.

    Proving a long history of one hot key non-linearizable can take a search over every way its prefix could
    have gone, which is exponential in the concurrency. But a failure is usually local. So check windows of the
    key's events: first ever wider ones (four times each) centred on ``frontier``, the latest deadline the full
    search reached (where it was stuck, if the failure is real); then, narrow ones first again, windows all along
    the history by their distance from it. Each window is made from the whole key's history by sound moves
    only, so a window that fails proves the history fails: operations invoked after the window are left out and
    those still running at its end are treated as unknown (linearizability is prefix-closed); operations that
    returned before it are relaxed, reads dropped and writes treated as unknown (which lets them take effect at
    any time after their invocation, so the search no longer has to enumerate the past). Work is bounded by
    ``budget``, an eighth of it at most for any one window.
    """
    events = sorted({op.invoked_at for op in key_ops} | {op.completed_at for op in key_ops if op.completed_at})
    invoked = [op.invoked_at for op in key_ops]  # ascending: key_ops is in invocation order
    last = len(events) - 1
    near = bisect.bisect_left(events, frontier)
    work = 0
    widths: list[int] = []
    while width < last:  # a window as wide as the history would be the full search again
        widths.append(width)
        width *= 4
    windows = [(w, near) for w in widths]
    for w in widths:
        windows += [(w, centre) for centre in sorted(range(0, last + 1, w), key=lambda c: (abs(c - near), c))]
    tried: set[tuple[int, int]] = set()
    for width, centre in windows:
        start, end = events[max(0, centre - width)], events[min(last, centre + width)]
        if (start, end) in tried:
            continue
        tried.add((start, end))
        if work >= budget:
            return None, work
        ops: list[Operation] = []
        weak: set[int] = set()
        scanned = bisect.bisect_right(invoked, end)
        for op in key_ops[:scanned]:
            if op.status is Status.FAILED:
                continue
            returned = op.returns_by
            if returned is not None and not start <= returned <= end:
                if _is_read_only(op):
                    continue
                weak.add(op.id)
            ops.append(op)
        problem = Problem.build(ops, frozenset(weak))
        found = search(problem, max(1, min(budget // 8, budget - work)))
        work += found.steps + scanned
        if found.outcome is Outcome.NOT_LINEARIZABLE:
            kept = {op.id for op in problem.ops}
            found_by = (
                f"the window of its events [{start}, {end}] fails on its own (with the operations that returned"
                " before it relaxed and the later ones left out), which proves that the key fails"
            )
            return _Witness(ops=problem.ops, weak=frozenset(weak & kept), found_by=found_by), work
    return None, work


def _shrink(witness: _Witness, budget: int, shrink_budget: int) -> _Shrunk:
    """Delta-debug the failing key's history down to a small one that still fails, using only sound moves.

    A move is sound when failing after it implies failing before it: removing a read-only op (a get, a refused
    cas) removes a constraint and changes no value; weakening an ok write to unknown lets it take effect anywhere
    after its invocation, or never, which only adds orders. (Removing a write outright is not sound: the reads of
    its value would then fail for a reason the real history does not have.) ``prune`` then drops the unknown
    writes nobody observes. So the result fails on its own and proves the whole history fails.

    Reads are shrunk first, then writes, then both together until no single move keeps it failing: shrinking
    reads first tends to leave the fewest operations. Work (search steps plus operations compiled) is bounded by
    ``shrink_budget``; past it, the smallest failing history found so far is returned.
    """
    current = Problem.build(witness.ops, witness.weak)
    weak = witness.weak
    work = 0
    if shrink_budget == 0:
        return _Shrunk(ops=tuple(current.ops), weak=weak, steps=0, minimal=False, found_by=witness.found_by)

    def still_fails(moved: Sequence[Operation]) -> bool:
        nonlocal current, weak, work
        gone = {op.id for op in moved if _is_read_only(op)}
        weaker = weak | {op.id for op in moved if not _is_read_only(op)}
        candidate = Problem.build([op for op in current.ops if op.id not in gone], weaker)
        found = search(candidate, max(1, min(budget, shrink_budget - work)))
        work += found.steps + len(candidate.ops)
        if found.outcome is not Outcome.NOT_LINEARIZABLE:
            return False
        current = candidate
        weak = weaker & {op.id for op in candidate.ops}
        return True

    def ddmin(wanted: Callable[[Operation], bool]) -> bool:
        """Apply moves to chunks of the wanted ok ops, halving the chunks; False if the budget ran out."""
        granularity = 2
        while True:
            items = [op for op, req in zip(current.ops, current.required, strict=True) if req and wanted(op)]
            if not items:
                return True
            chunk = -(-len(items) // granularity)
            for start in range(0, len(items), chunk):
                if work >= shrink_budget:
                    return False
                if still_fails(items[start : start + chunk]):
                    granularity = max(granularity - 1, 2)
                    break
            else:
                if chunk == 1:
                    return True
                granularity = min(granularity * 2, len(items))

    minimal = ddmin(_is_read_only) and ddmin(lambda op: not _is_read_only(op)) and ddmin(lambda op: True)
    return _Shrunk(ops=tuple(current.ops), weak=weak, steps=work, minimal=minimal, found_by=witness.found_by)


def _is_read_only(op: Operation) -> bool:
    return op.kind is Kind.GET or (op.kind is Kind.CAS and op.status is Status.OK and op.result is False)


# --- explanations ----------------------------------------------------------------------------------------------


def _explain_failure(
    key: Hashable,
    key_ops: Sequence[Operation],
    failed: Iterable[Hashable],
    shrunk: _Shrunk,
    undecided: Sequence[Hashable],
    budget: int,
    summary: str,
) -> str:
    others = ""
    other_keys = [k for k in failed if k != key]
    if other_keys:
        others = f"; {len(other_keys)} other key(s) fail too: " + ", ".join(repr(k) for k in other_keys[:5])
        others += " ..." if len(other_keys) > 5 else ""
    if undecided:
        others += f"; {len(undecided)} key(s) undecided within budget"
    lines = [f"not linearizable: key {key!r}{others}", summary, ""]
    if shrunk.found_by is not None:
        lines += [
            "The full search of this key was cut short (on a key this busy it can take exponentially long);"
            f" {shrunk.found_by}.",
            "",
        ]
    how = "minimal: each operation is needed" if shrunk.minimal else "shrinking stopped at its budget"
    lines.append(
        f"{len(shrunk.ops)} of the key's {len(key_ops)} operations fail on their own ({how}). Intervals are event"
        " numbers; unknown operations may take effect any time after their call, or never:"
    )
    lines += ["  " + op.describe() for op in shrunk.ops]
    marks = dict.fromkeys(shrunk.weak, "(*)")
    if len(shrunk.ops) <= 40:
        lines += ["", "Timeline:"] + ["  " + line for line in timeline(shrunk.ops, marks=marks).splitlines()]
    if shrunk.weak:
        lines.append(
            "(*) fails even if this write's return were at +infinity: where it completed does not matter, only"
            " that it was invoked"
        )
    # Narrate with the recorded outcomes (the weakened writes made strict again): still failing, since that only
    # adds constraints, and consistent with the intervals printed above.
    lines += ["", *_why(Problem.build(shrunk.ops, frozenset()), budget)]
    return "\n".join(lines)


def _why(problem: Problem, budget: int) -> list[str]:
    """Narrate the search's dead end: the longest order it found, and why nothing can come next."""
    found = search(problem, budget, trace=True)
    if found.outcome is not Outcome.NOT_LINEARIZABLE:  # cannot happen for a shrunk history; say so if it does
        return [f"(re-checking the shrunk history gave {found.outcome.value}; this is a checker bug)"]
    state = problem.initial
    value: object = NOT_FOUND  # the actual value, for the narration (ids merge values nobody observed)
    story = []
    for i in found.longest:
        op = problem.ops[i]
        new = problem.step(state, i)
        assert new is not None
        if problem.code[i] == WRITE:
            value = op.value if op.kind is Kind.PUT else NOT_FOUND
        elif problem.code[i] == CAS_SWAPPED or (problem.code[i] == CAS_MAYBE and state == problem.a[i]):
            value = op.value
        state = new
        story.append(f"#{op.id} {op.call()} (value {_value_text(value)})")
    done = set(found.longest)
    rest = [i for i in range(len(problem.ops)) if i not in done]
    deadline = min((problem.ops[i] for i in rest if problem.required[i]), key=lambda op: op.completed_at or 0)
    start = "The longest order the search found takes " + (", then ".join(story) if story else "nothing")
    lines = [
        f"{start}; then #{deadline.id} must take effect before it returns at event {deadline.completed_at},"
        " but nothing invoked before then can be next:"
    ]
    readers = [i for i in rest if problem.code[i] in (GET, CAS_SWAPPED) and problem.a[i] == state]
    for i in rest:
        op = problem.ops[i]
        if op.invoked_at > (deadline.completed_at or 0):
            continue
        what = f"#{op.id} {op.call()} {op.outcome()}"
        new = problem.step(state, i)
        rewrites = [j for j in rest if j != i and problem.writes(j) == state]
        if new is None:
            if problem.code[i] == CAS_REFUSED:
                lines.append(f"  {what}: the value is {_value_text(value)}, so it would have swapped")
            elif problem.code[i] == GET:
                lines.append(f"  {what}: it would read {_value_text(value)}")
            else:
                lines.append(f"  {what}: the value is {_value_text(value)}, not {_value_text(op.expected)}")
        elif new != state and [j for j in readers if j != i] and not rewrites:
            reader = problem.ops[next(j for j in readers if j != i)]
            lines.append(
                f"  {what}: it would overwrite {_value_text(value)}, which #{reader.id} {reader.call()}"
                f" {reader.outcome()} (invoked at event {reader.invoked_at}) must still see, and nothing else"
                " can write it again"
            )
        elif not problem.required[i]:
            lines.append(f"  {what}: it may take effect here or never, but no order of the rest works either way")
        else:
            lines.append(f"  {what}: could be next, but no order of the rest works after it")
    lines.append("(The search tries every order that respects real time; this is where the longest one stops.)")
    return lines


def _value_text(value: object) -> str:
    return "absent" if value is NOT_FOUND else _repr.repr(value)


def _validated(history: History | Iterable[Operation]) -> list[Operation]:
    ops = list(history.operations if isinstance(history, History) else history)
    seen: set[int] = set()
    for op in ops:
        if not isinstance(op, Operation):
            raise TypeError(f"check() takes a History or Operations, not {op!r}")
        if op.id in seen:
            raise ValueError(f"two operations have id {op.id}; pass one history's operations")
        seen.add(op.id)
        if op.status is not Status.PENDING and (op.completed_at is None or op.completed_at <= op.invoked_at):
            raise ValueError(f"operation {op.describe()} completes at {op.completed_at}, not after its invocation")
    ops.sort(key=lambda op: (op.invoked_at, op.id))
    return ops
