"""One key's history as a register-model search problem, and the search (internal to ``borough.testing``).

Owns: compiling one key's operations into the register model (get / put / delete / cas as codes over small value
ids), dropping unknown operations that cannot matter (``prune``), and the Wing–Gong–Lowe depth-first search with
Lowe's memo and the reductions that keep it fast in Python (``search``). Every transformation here keeps the
verdict exact: the compiled, pruned history is linearizable iff the original is.

Must not know: whole histories, keys, budgets across keys, shrinking or reports (``linearizability`` owns those).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Sequence
from typing import Final

import attrs

from borough.testing.history import NOT_FOUND, Kind, Operation, Status

__all__ = [
    "CAS_MAYBE",
    "CAS_REFUSED",
    "CAS_SWAPPED",
    "GET",
    "WRITE",
    "Found",
    "Outcome",
    "Problem",
    "prune",
    "search",
]


class Outcome(enum.StrEnum):
    """A verdict: of the search of one key here, of a whole history in ``linearizability``."""

    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNDECIDED = "undecided"  # some key's search ran out of budget and no key was found to fail


# Operation codes of the register model; ``a``/``b`` are value ids (see ``Problem.build``).
GET: Final = 0  # ok get: the value must be a
WRITE: Final = 1  # put or delete: the value becomes a
CAS_SWAPPED: Final = 2  # ok cas that swapped: the value must be a; it becomes b
CAS_REFUSED: Final = 3  # ok cas that did not: the value must not be a
CAS_MAYBE: Final = 4  # unknown cas: if the value is a it becomes b
_READ_ONLY: Final = (GET, CAS_REFUSED)

_Row = tuple[Operation, int, int, int, bool]  # op, code, a, b, required


class _Values:
    """Interns values to small ints so states compare and hash fast, even for unhashable values (dicts, lists).

    Unhashable values are looked up by a frozen form that is equal exactly when they are (``_freeze``), so
    interning stays linear; a value that cannot be frozen falls back to comparing it with each such value.
    """

    def __init__(self) -> None:
        self._ids: dict[object, int] = {NOT_FOUND: 0}
        self._unfrozen: list[tuple[object, int]] = []
        self._count = 1

    def id(self, value: object) -> int:
        try:
            key = value if isinstance(value, Hashable) and _hashes(value) else _freeze(value)
        except TypeError:
            for other, number in self._unfrozen:
                if other == value:
                    return number
            self._unfrozen.append((value, self._count))
            self._count += 1
            return self._count - 1
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = self._count
            self._count += 1
        return found


class _Frozen(enum.Enum):
    """Tags that no user value contains, so a frozen list or dict never equals a real tuple or frozenset."""

    LIST = "list"
    DICT = "dict"


def _hashes(value: Hashable) -> bool:
    try:
        hash(value)
    except TypeError:  # a tuple holding a list, say
        return False
    return True


def _freeze(value: object) -> Hashable:
    """A hashable stand-in, equal to another's exactly when the values are equal (as == sees them)."""
    if isinstance(value, list):
        return (_Frozen.LIST, tuple(_freeze(item) for item in value))
    if isinstance(value, tuple):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return (_Frozen.DICT, frozenset((_freeze(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return frozenset(_freeze(item) for item in value)  # a set equals the frozenset of the same items
    if isinstance(value, bytearray):
        return bytes(value)  # equal to the bytes of the same content
    hash(value)  # raises TypeError for anything else unhashable: compared one by one instead
    assert isinstance(value, Hashable)
    return value


@attrs.define
class Problem:
    """One key's operations that constrain the search, as parallel arrays (index = position in ``ops``).

    Value ids are exact for every value some operation observes (a get's result, a cas's expected value); all
    other values, which nothing can tell apart, share the id 0. That is exact for the model and lets the memo
    merge orders that differ only in which unobserved value is current.
    """

    ops: list[Operation]
    code: list[int]
    a: list[int]
    b: list[int]
    required: list[bool]  # ok operations must be linearized; unknown (or weakened) ones may be left out
    initial: int  # the id of NOT_FOUND, the value before any write

    @classmethod
    def build(cls, key_ops: Sequence[Operation], weak: frozenset[int]) -> Problem:
        """Compile ``key_ops`` (in invocation order); ops whose id is in ``weak`` are treated as unknown."""
        values = _Values()
        rows: list[_Row] = []
        for op in key_ops:
            if op.status is Status.FAILED:
                continue
            known = op.status is Status.OK and op.id not in weak
            if op.kind is Kind.GET:
                if known:  # an unknown get observed nothing
                    rows.append((op, GET, values.id(op.result), 0, True))
            elif op.kind is Kind.PUT:
                rows.append((op, WRITE, values.id(op.value), 0, known))
            elif op.kind is Kind.DELETE:
                rows.append((op, WRITE, 0, 0, known))
            elif not known:
                rows.append((op, CAS_MAYBE, values.id(op.expected), values.id(op.value), False))
            elif op.result:
                rows.append((op, CAS_SWAPPED, values.id(op.expected), values.id(op.value), True))
            else:
                rows.append((op, CAS_REFUSED, values.id(op.expected), 0, True))
        rows = prune(rows)
        observed: dict[int, int] = {}
        for r in rows:
            if r[1] != WRITE:
                observed.setdefault(r[2], len(observed) + 1)

        def exact(value_id: int) -> int:
            return observed.get(value_id, 0)

        return cls(
            ops=[r[0] for r in rows],
            code=[r[1] for r in rows],
            a=[exact(r[2]) for r in rows],
            b=[exact(r[3]) for r in rows],
            required=[r[4] for r in rows],
            initial=exact(0),
        )

    def writes(self, i: int) -> int | None:
        """The value id operation ``i`` may write, or None for a read-only one."""
        code = self.code[i]
        if code == WRITE:
            return self.a[i]
        return self.b[i] if code in (CAS_SWAPPED, CAS_MAYBE) else None

    def step(self, state: int, i: int) -> int | None:
        """The register's value id after operation ``i`` takes effect; None if its result forbids it now."""
        code, a = self.code[i], self.a[i]
        if code == GET:
            return state if state == a else None
        if code == WRITE:
            return a
        if code == CAS_SWAPPED:
            return self.b[i] if state == a else None
        if code == CAS_REFUSED:
            return state if state != a else None
        return self.b[i] if state == a else state


def prune(rows: list[_Row]) -> list[_Row]:
    """Drop unknown ops that cannot matter; the rest is linearizable iff the whole is.

    1. Unknown ops invoked after every ok op returned: put them last, where nobody observes them.
    2. An unknown op only ever needs to take effect right before an op that observes the value it writes (a get
       of it, a cas expecting it), or right before a refused cas that the current value would otherwise make
       swap (see ``search``), and no two need the same one. So of the unknown writes of a value v, at most
       K = (ops observing v) + (refused cas ops) are ever needed; the plain ones (put, delete) all have the
       same effect, so the K invoked first can stand in for any of them, and for an unknown cas writing v that
       was invoked after the K-th. Keep those (none when K = 0). Values no op tells apart (no get reads them,
       no cas expects them) count as one value. Dropping an unknown cas may lower another value's K, so repeat
       until nothing changes.
    Besides speed (fewer ops, fewer orders), this keeps shrunk histories free of operations that explain nothing.
    """
    last_return = max((r[0].completed_at or 0 for r in rows if r[4]), default=-1)
    rows = [r for r in rows if r[4] or r[0].invoked_at <= last_return]
    refused = sum(r[1] == CAS_REFUSED for r in rows)
    while True:
        needs: dict[int, int] = {}  # value id -> how many unknown writes of it may be needed
        distinct = set()  # values that some op tells apart from others
        for r in rows:
            if r[1] in (GET, CAS_SWAPPED, CAS_MAYBE):
                needs[r[2]] = needs.get(r[2], 0) + 1
            if r[1] != WRITE:
                distinct.add(r[2])
        plain: dict[int, int] = {}  # value id -> unknown plain writes of it seen so far, in invocation order
        kept = []
        for r in rows:
            if not r[4]:
                value = r[2] if r[1] == WRITE else r[3]
                if value not in distinct:
                    value = -1  # values nothing tells apart are one class, like the search's value id 0
                limit = needs.get(value, 0) + refused
                if plain.get(value, 0) >= limit:
                    continue  # K plain writes of this value were invoked before it: they stand in for it
                if r[1] == WRITE:
                    plain[value] = plain.get(value, 0) + 1
            kept.append(r)
        if len(kept) == len(rows):
            return rows
        rows = kept


# --- the search ------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Found:
    outcome: Outcome
    steps: int
    longest: tuple[int, ...] = ()  # the longest linearizable order found (indices into problem.ops), if traced
    frontier: int = -1  # the latest return event the search had to meet; where an undecided search was stuck


_FRESH: Final = 0  # arrived at a new configuration: take a read greedily, or list the candidates
_RESUME: Final = 1  # came back to a configuration after a failed choice: list the candidates, try the next
_SCAN: Final = 2  # trying ``candidates[tried]`` as the next op to linearize
_BACKTRACK: Final = 3  # this configuration has no valid completion: undo the last choice


def search(problem: Problem, budget: int, *, trace: bool = False) -> Found:
    """Wing–Gong–Lowe: depth-first over orders, linearizing ops whose call precedes every open return.

    The history is a doubly linked list of call and return entries in event order (unknown ops have no return
    entry). The *ready* ops are those whose call entries come before the first return entry: the ops that may
    take effect next; the op of that first return is the *deadline*. A choice linearizes a ready op if the model
    allows it and the resulting (linearized set, value) was never seen (Lowe's memo: from an equal configuration
    the rest of the search is the same); its entries are unlinked and the search goes on from the new
    configuration. When no choice is left, the configuration fails: undo the last choice and try the next one.
    Explicit stacks instead of recursion, so long histories cannot hit Python's recursion limit.

    Reductions, each sound because any valid order from a configuration can be rearranged into one that starts
    with a choice they keep (or the choices they drop have no valid continuation at all):
    - greedy reads: a ready read-only op (get, refused cas) that the current value satisfies is taken at once,
      with no alternative tried: it changes nothing, so moving it to the front of a valid order keeps it valid;
    - symmetry: of ready ops with the same effect (same code, values and required-ness), only the one that must
      return first is tried: swapping two such ops keeps an order valid when the earlier one returns first;
    - just-in-time unknown ops: an unknown op is tried only when a ready op observes the value it would write,
      or a ready refused cas expects the current value (so the value must change first). Otherwise, in any valid
      order it can be moved later, to just before the op that needs it, or to the end: nothing before that
      could tell the difference;
    - value death: a choice that changes the value is dropped while ops that must still observe the current
      value remain and nothing left can write it again: they could never be satisfied.
    And one heuristic, which only orders the choices: first the ops that write the value the deadline op needs,
    then by earliest return. (Trying them in invocation order, as WGL does, commits early to long-running
    writes and can take exponentially long to undo that on histories with much overlap.)
    """
    n = len(problem.ops)
    need = sum(problem.required)
    if need == 0:
        return Found(outcome=Outcome.LINEARIZABLE, steps=0)
    events: list[tuple[int, int, int]] = []
    for i, op in enumerate(problem.ops):
        events.append((op.invoked_at, 0, i))
        if problem.required[i]:
            assert op.completed_at is not None
            events.append((op.completed_at, 1, i))
    events.sort()
    size = len(events)
    nxt = list(range(1, size + 3))
    prv = list(range(-1, size + 1))
    entry_op = [-1] * (size + 2)  # the op of a call entry; -1 for return entries, the head (0) and the tail
    closes = [-1] * (size + 2)  # the op of a return entry; -1 for call entries, the head and the tail
    call_pos = [0] * n
    ret_pos = [-1] * n
    event_at = [-1] * (size + 2)
    for pos, (event, is_return, i) in enumerate(events, start=1):
        event_at[pos] = event
        if is_return:
            ret_pos[i] = pos
            closes[pos] = i
        else:
            entry_op[pos] = i
            call_pos[i] = pos
    code, arg_a, arg_b, required = problem.code, problem.a, problem.b, problem.required
    # Equal-effect groups, and each op's rank by (return event, index): unknown ops return at +infinity.
    groups: dict[tuple[int, int, int, bool], int] = {}
    group = [groups.setdefault((code[i], arg_a[i], arg_b[i], required[i]), len(groups)) for i in range(n)]
    never = max((op.completed_at or 0 for op in problem.ops), default=0) + 1
    by_return = sorted(range(n), key=lambda i: (problem.ops[i].completed_at if required[i] else never, i))
    rank = [0] * n
    for position, i in enumerate(by_return):
        rank[i] = position
    bit = [1 << i for i in range(n)]
    values = max(max(arg_a), max(arg_b), problem.initial) + 1
    shift = max(1, values.bit_length())
    # Value death: every value but 0 is observed, and values are usually unique to one write. While ops that
    # observe the current value are still to come and nothing left can write it again, changing the value
    # makes them impossible, so no such choice is tried.
    observes = [arg_a[i] if c in (GET, CAS_SWAPPED) and required[i] else -1 for i, c in enumerate(code)]
    produces = [-1 if c in _READ_ONLY else arg_a[i] if c == WRITE else arg_b[i] for i, c in enumerate(code)]
    observers = [0] * values
    producers = [0] * values
    for i in range(n):
        if observes[i] >= 0:
            observers[observes[i]] += 1
        if produces[i] >= 0:
            producers[produces[i]] += 1
    if any(observers[v] and not producers[v] for v in range(values) if v != problem.initial):
        return Found(outcome=Outcome.NOT_LINEARIZABLE, steps=0)  # a value read that nothing writes
    seen: set[int] = set()
    stack_op: list[int] = []
    stack_state: list[int] = []
    stack_forced: list[bool] = []
    longest: tuple[int, ...] = ()
    best: dict[int, int] = {}  # group -> the ready op of that group to try (lowest rank)
    candidates: list[tuple[int, int, int]] = []  # (preference, op, value after it), best first
    wanted = [0] * values  # wanted[v] == walks: a ready op observes value v
    walks = 0
    tried = 0
    undone = -1  # on _RESUME: the op whose choice just failed
    state = problem.initial
    linearized = 0
    done = 0
    steps = 0
    frontier = -1
    mode = _FRESH
    while True:
        if done == need:
            if trace:
                longest = tuple(stack_op)
            return Found(outcome=Outcome.LINEARIZABLE, steps=steps, longest=longest)
        steps += 1
        if steps > budget:
            return Found(outcome=Outcome.UNDECIDED, steps=budget, longest=longest, frontier=frontier)

        if mode == _SCAN:
            if tried == len(candidates):
                mode = _BACKTRACK
                continue
            _, i, new = candidates[tried]
            tried += 1
            grown = linearized | bit[i]
            memo = (grown << shift) | new
            if memo in seen:
                continue
            seen.add(memo)
            forced = False
        elif mode == _BACKTRACK:
            forced = True
            while forced:  # a forced (read-only) choice has no alternative: undo through to a real choice
                if not stack_op:
                    return Found(outcome=Outcome.NOT_LINEARIZABLE, steps=steps, longest=longest)
                undone = stack_op.pop()
                state = stack_state.pop()
                forced = stack_forced.pop()
                linearized ^= bit[undone]
                done -= required[undone]
                if observes[undone] >= 0:
                    observers[observes[undone]] += 1
                if produces[undone] >= 0:
                    producers[produces[undone]] += 1
                r = ret_pos[undone]
                if r >= 0:
                    nxt[prv[r]] = r
                    prv[nxt[r]] = r
                c = call_pos[undone]
                nxt[prv[c]] = c
                prv[nxt[c]] = c
            mode = _RESUME
            continue
        else:  # _FRESH or _RESUME: walk the ready ops once
            best.clear()
            walks += 1
            blocked = False  # a ready refused cas expects the current value: something must change it
            i = -1
            pos = nxt[0]
            j = entry_op[pos]
            while j >= 0:
                steps += 1
                c = code[j]
                a = arg_a[j]
                if c == GET:
                    if state == a:
                        i = j
                    wanted[a] = walks
                elif c == CAS_REFUSED:
                    if state != a:
                        i = j
                    else:
                        blocked = True
                else:
                    if c != WRITE:
                        wanted[a] = walks
                    g = group[j]
                    other = best.get(g)
                    if other is None or rank[j] < rank[other]:
                        best[g] = j
                pos = nxt[pos]
                j = entry_op[pos]
            if i >= 0 and mode == _FRESH:  # take the satisfied read greedily
                new = state
                grown = linearized | bit[i]
                memo = (grown << shift) | new
                if memo in seen:  # explored from here before and failed, so this configuration fails too
                    mode = _BACKTRACK
                    continue
                seen.add(memo)
                forced = True
            else:
                deadline = closes[pos]
                if event_at[pos] > frontier:
                    frontier = event_at[pos]
                needed = -1
                if deadline >= 0 and code[deadline] in (GET, CAS_SWAPPED) and arg_a[deadline] != state:
                    needed = arg_a[deadline]
                candidates.clear()
                for j in best.values():
                    c = code[j]
                    a = arg_a[j]
                    if c == WRITE:
                        new = a
                    elif c == CAS_SWAPPED:
                        if state != a:
                            continue
                        new = arg_b[j]
                    else:  # CAS_MAYBE
                        new = arg_b[j] if state == a else state
                    if not required[j] and (new == state or not (blocked or wanted[new] == walks)):
                        continue  # an unknown op is only taken once a ready op needs its effect
                    if new != state and observers[state] > (observes[j] == state) and not producers[state]:
                        continue
                    candidates.append(((new != needed) * n + rank[j], j, new))
                candidates.sort()
                tried = 0
                if mode == _RESUME:
                    while candidates[tried][1] != undone:
                        tried += 1
                    tried += 1
                mode = _SCAN
                continue

        # Linearize op i (value ``new``): unlink its call entry, then its return entry (restored in reverse).
        stack_op.append(i)
        stack_state.append(state)
        stack_forced.append(forced)
        state = new
        linearized = grown
        done += required[i]
        if observes[i] >= 0:
            observers[observes[i]] -= 1
        if produces[i] >= 0:
            producers[produces[i]] -= 1
        c = call_pos[i]
        before, after = prv[c], nxt[c]
        nxt[before] = after
        prv[after] = before
        r = ret_pos[i]
        if r >= 0:
            before, after = prv[r], nxt[r]
            nxt[before] = after
            prv[after] = before
        if trace and len(stack_op) > len(longest):
            longest = tuple(stack_op)
        mode = _FRESH
