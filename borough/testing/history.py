"""Client operation histories: what simulated clients asked for and what they were told.

Owns the ``Operation`` record, the ``History`` recorder (``invoke`` then exactly one of ``ok`` / ``fail`` /
``unknown``), the ``NOT_FOUND`` sentinel, human-readable descriptions (one line per operation, and a timeline), and
the JSON form of a history, so a failing run can be saved and replayed in a test.

Order is given by one monotonically increasing event counter that every invocation and every completion advances;
never by wall or virtual time. Times may be recorded as well, for reports only.

This module must not know how histories are checked (``borough.testing.linearizability``), nor trio, the cluster
or the network: it is pure bookkeeping that any client, simulated or real, can drive.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import reprlib
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any, Final

import attrs

__all__ = [
    "NOT_FOUND",
    "History",
    "Kind",
    "NotFoundType",
    "Operation",
    "Status",
    "describe_operations",
    "timeline",
]

FORMAT: Final = "borough.history"
FORMAT_VERSION: Final = 1


class NotFoundType(enum.Enum):
    """The type of ``NOT_FOUND``; an enum so the sentinel survives copy, pickle and equality as one object."""

    NOT_FOUND = "NOT_FOUND"

    def __repr__(self) -> str:
        return "NOT_FOUND"


NOT_FOUND: Final = NotFoundType.NOT_FOUND
"""What a ``get`` of an absent key returned; as a cas ``expected`` value it means "the key is absent"."""


class Kind(enum.StrEnum):
    """What an operation does to its key, which the checker models as one register."""

    GET = "get"  # result: the value read, or NOT_FOUND
    PUT = "put"  # value: what was written; result: None
    DELETE = "delete"  # result: None
    CAS = "cas"  # if the key holds ``expected`` (NOT_FOUND: is absent) set it to ``value``; result: whether it did


class Status(enum.StrEnum):
    """What the client knows about an operation's outcome."""

    PENDING = "pending"  # invoked, no outcome recorded yet; the checker treats it as UNKNOWN
    OK = "ok"  # took effect exactly once, between its invocation and its completion
    FAILED = "failed"  # definitely did not take effect (e.g. NotLeader before proposing, a validation error)
    UNKNOWN = "unknown"  # timed out or lost its connection: may take effect at any time after invocation, or never


class _Missing(enum.Enum):
    MISSING = "MISSING"


_MISSING: Final = _Missing.MISSING

_WRITES: Final = frozenset({Kind.PUT, Kind.DELETE, Kind.CAS})


@attrs.frozen(kw_only=True)
class Operation:
    """One client operation on one key. Immutable: ``History`` replaces the record when the outcome arrives.

    ``invoked_at`` and ``completed_at`` are event numbers from the history's counter (``completed_at`` is when the
    outcome was recorded, None while pending). For an UNKNOWN operation the checker ignores ``completed_at``: its
    effective return is +infinity (see ``returns_by``).
    """

    id: int
    client_id: Hashable
    kind: Kind
    key: Hashable
    value: object = None  # put: the value written; cas: the new value
    expected: object = None  # cas only: the value required beforehand (NOT_FOUND: the key must be absent)
    status: Status = Status.PENDING
    result: object = None  # get (ok): the value or NOT_FOUND; cas (ok): bool; otherwise None
    error: str | None = None  # fail / unknown: what the client saw, for reports
    invoked_at: int
    completed_at: int | None = None
    invoke_time: float | None = None
    complete_time: float | None = None

    @property
    def is_write(self) -> bool:
        """True for put, delete and cas: operations that may change the key's value."""
        return self.kind in _WRITES

    @property
    def returns_by(self) -> int | None:
        """The event by which the operation must have taken effect; None means +infinity (unknown or pending)."""
        return self.completed_at if self.status is Status.OK else None

    def call(self) -> str:
        """The invocation as text: ``put('k', 1)``, ``cas('k', 1 -> 2)``, ``get('k')``."""
        key = _short(self.key)
        if self.kind is Kind.PUT:
            return f"put({key}, {_short(self.value)})"
        if self.kind is Kind.CAS:
            return f"cas({key}, {_short(self.expected)} -> {_short(self.value)})"
        return f"{self.kind.value}({key})"

    def outcome(self) -> str:
        """The outcome as text: ``-> 1``, ``ok``, ``failed: ...``, ``unknown: ...``, ``pending``."""
        if self.status is Status.OK:
            if self.kind in (Kind.GET, Kind.CAS):
                return f"-> {_short(self.result)}"
            return "ok"
        if self.status is Status.PENDING:
            return "pending"
        detail = f": {self.error}" if self.error else ""
        return f"{self.status.value}{detail}"

    def interval(self) -> str:
        """``[invoked_at, completed_at]`` in events; an unknown or pending operation's interval is open."""
        if self.status is Status.OK:
            return f"[{self.invoked_at}, {self.completed_at}]"
        if self.status is Status.FAILED:
            return f"[{self.invoked_at}, {self.completed_at}] (no effect)"
        gave_up = f" (gave up at {self.completed_at})" if self.completed_at is not None else ""
        return f"[{self.invoked_at}, +inf){gave_up}"

    def describe(self) -> str:
        """One line for reports: ``#12 client 3: put('k', 1) ok [40, 45]``, with times when recorded."""
        times = ""
        if self.invoke_time is not None:
            end = f"{self.complete_time:g}" if self.complete_time is not None else "?"
            times = f" t={self.invoke_time:g}..{end}"
        return f"#{self.id} client {_short(self.client_id)}: {self.call()} {self.outcome()} {self.interval()}{times}"


@attrs.define
class History:
    """Records operations as simulated clients invoke them and learn their outcomes.

    ``op = history.invoke(client_id, "put", key, value)``, then exactly one of ``history.ok(op, result)``,
    ``history.fail(op, error)`` or ``history.unknown(op, error)``. Each returns the updated (new, immutable)
    ``Operation``; the record passed in is not changed. Operations still pending when the history is checked are
    treated as unknown. Bad calls (a completed operation completed again, a put without a value, a get result
    that is missing) raise ``ValueError``/``TypeError`` and record nothing. A simulated client::

        op = history.invoke(client_id, "get", key, time=trio.current_time())
        try:
            value = await partition.get(key)
        except borough.NotFound:
            history.ok(op, NOT_FOUND)
        except NotLeader as exc:  # refused before it was proposed: it cannot take effect
            history.fail(op, exc)
        except (borough.Timeout, borough.Unavailable) as exc:  # it may yet take effect, or never
            history.unknown(op, exc)
        else:
            history.ok(op, value)

    When in doubt, record ``unknown``: it is always safe; ``fail`` claims the operation can never take effect.
    """

    _operations: list[Operation] = attrs.field(factory=list, init=False, repr=False)
    _next_event: int = attrs.field(default=0, init=False, repr=False)

    def __repr__(self) -> str:
        return f"<History of {len(self._operations)} operations, {self._next_event} events>"

    # --- recording -------------------------------------------------------------------------------------------

    def invoke(
        self,
        client_id: Hashable,
        kind: Kind | str,
        key: Hashable,
        value: object = _MISSING,
        *,
        expected: object = _MISSING,
        time: float | None = None,
    ) -> Operation:
        """Record that ``client_id`` started an operation; returns the pending ``Operation``.

        ``put`` needs ``value``; ``cas`` needs ``value`` (the new value) and ``expected`` (NOT_FOUND: the key
        must be absent); ``get`` and ``delete`` take neither. ``time`` is kept for reports only.
        """
        try:
            kind = Kind(kind)
        except ValueError:
            kinds = ", ".join(k.value for k in Kind)
            raise ValueError(f"unknown operation kind {kind!r}; use one of {kinds}") from None
        _check_key(key)
        if kind in (Kind.PUT, Kind.CAS):
            if value is _MISSING:
                raise ValueError(f"{kind.value} of key {key!r} needs a value: pass value=")
            if value is NOT_FOUND:
                raise ValueError(f"{kind.value} of key {key!r} cannot write NOT_FOUND; record a delete instead")
        elif value is not _MISSING:
            raise ValueError(f"{kind.value} of key {key!r} takes no value (got {value!r})")
        if kind is Kind.CAS:
            if expected is _MISSING:
                raise ValueError(f"cas of key {key!r} needs expected= (NOT_FOUND: the key must be absent)")
        elif expected is not _MISSING:
            raise ValueError(f"only cas takes expected=, not {kind.value}")
        op = Operation(
            id=len(self._operations),
            client_id=client_id,
            kind=kind,
            key=key,
            value=None if value is _MISSING else value,
            expected=None if expected is _MISSING else expected,
            invoked_at=self._tick(),
            invoke_time=time,
        )
        self._operations.append(op)
        return op

    def ok(self, op: Operation, result: object = _MISSING, *, time: float | None = None) -> Operation:
        """Record that ``op`` took effect and what it returned.

        ``get``: the value read, or NOT_FOUND (the key was absent); ``cas``: True if it swapped, False if the
        key did not hold ``expected``; ``put``/``delete``: no result (or None).
        """
        current = self._pending(op)
        if current.kind is Kind.GET:
            if result is _MISSING:
                raise ValueError(f"ok() of {current.call()} needs the value read (or NOT_FOUND)")
        elif current.kind is Kind.CAS:
            if not isinstance(result, bool):
                raise TypeError(f"ok() of {current.call()} needs result=True (swapped) or False, not {result!r}")
        else:
            if result is not _MISSING and result is not None:
                raise ValueError(f"ok() of {current.call()} takes no result (got {result!r})")
            result = None
        return self._complete(current, Status.OK, result=result, time=time)

    def fail(self, op: Operation, error: BaseException | str | None = None, *, time: float | None = None) -> Operation:
        """Record that ``op`` definitely did not take effect (e.g. NotLeader before it was proposed)."""
        return self._complete(self._pending(op), Status.FAILED, error=_error_text(error), time=time)

    def unknown(
        self, op: Operation, error: BaseException | str | None = None, *, time: float | None = None
    ) -> Operation:
        """Record that ``op``'s outcome is unknown (timeout, lost connection): it may take effect later, or never."""
        return self._complete(self._pending(op), Status.UNKNOWN, error=_error_text(error), time=time)

    # --- reading ---------------------------------------------------------------------------------------------

    @property
    def operations(self) -> tuple[Operation, ...]:
        """Every operation in invocation order (``op.id`` is its position), each in its latest state."""
        return tuple(self._operations)

    @property
    def next_event(self) -> int:
        """The event number the next invocation or completion will get."""
        return self._next_event

    def pending(self) -> list[Operation]:
        """The operations whose outcome has not been recorded yet."""
        return [op for op in self._operations if op.status is Status.PENDING]

    def __len__(self) -> int:
        return len(self._operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(tuple(self._operations))

    def describe(self) -> str:
        """A report: a summary line, then one line per operation in invocation order."""
        counts = dict.fromkeys(Status, 0)
        for op in self._operations:
            counts[op.status] += 1
        summary = ", ".join(f"{n} {status.value}" for status, n in counts.items() if n)
        header = f"history of {len(self._operations)} operations ({summary or 'empty'}), {self._next_event} events"
        return "\n".join([header, *("  " + line for line in describe_operations(self._operations).splitlines())])

    # --- JSON ------------------------------------------------------------------------------------------------

    def to_json(self, *, indent: int | None = None) -> str:
        """The history as JSON text; ``History.from_json`` gives back an equal history.

        Keys and values keep their Python type: bytes, tuples, sets, NOT_FOUND, non-finite floats and maps with
        non-string keys are tagged objects (``{"$": "bytes", "v": ...}``); anything else that CBOR encodes is
        stored as tagged CBOR.
        """
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "next_event": self._next_event,
            "operations": [_op_to_dict(op) for op in self._operations],
        }
        return json.dumps(doc, indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> History:
        """Rebuild a history saved by ``to_json``; raises ValueError saying what is wrong if it is not one."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a saved history: invalid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a saved history: expected a JSON object with format {FORMAT!r}")
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"saved history has version {doc.get('version')!r}; this code reads {FORMAT_VERSION}")
        history = cls()
        try:
            ops = [_op_from_dict(i, raw) for i, raw in enumerate(doc["operations"])]
            next_event = int(doc["next_event"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"saved history is malformed: {exc!r}") from None
        last = max((max(op.invoked_at, op.completed_at or 0) for op in ops), default=-1)
        if next_event <= last:
            raise ValueError(f"saved history is malformed: next_event {next_event} is not after event {last}")
        history._operations = ops
        history._next_event = next_event
        return history

    # --- internals -------------------------------------------------------------------------------------------

    def _tick(self) -> int:
        event = self._next_event
        self._next_event += 1
        return event

    def _pending(self, op: Operation) -> Operation:
        if not isinstance(op, Operation):
            raise TypeError(f"expected the Operation returned by invoke(), got {op!r}")
        if not 0 <= op.id < len(self._operations) or self._operations[op.id].invoked_at != op.invoked_at:
            raise ValueError(f"operation #{op.id} was not invoked on this history")
        current = self._operations[op.id]
        if current.status is not Status.PENDING:
            raise ValueError(f"operation {current.describe()} already has an outcome; record exactly one")
        return current

    def _complete(
        self,
        op: Operation,
        status: Status,
        *,
        result: object = None,
        error: str | None = None,
        time: float | None = None,
    ) -> Operation:
        done = attrs.evolve(
            op, status=status, result=result, error=error, completed_at=self._tick(), complete_time=time
        )
        self._operations[op.id] = done
        return done


# --- descriptions ----------------------------------------------------------------------------------------------

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = _repr.maxfrozenset = 6


def _short(value: object) -> str:
    return _repr.repr(value)


def describe_operations(ops: Iterable[Operation]) -> str:
    """One line per operation (``Operation.describe``), in the order given."""
    return "\n".join(op.describe() for op in ops)


def timeline(ops: Sequence[Operation], *, marks: dict[int, str] | None = None) -> str:
    """Operations drawn as intervals on a shared axis of their own events (compressed: only order matters).

    ``|---|`` is an ok operation, ``|--->`` one whose return is +infinity (unknown or pending), ``x--x`` a failed
    one. ``marks`` adds a note after an operation's line, keyed by ``op.id``.
    """
    if not ops:
        return ""
    points = sorted({op.invoked_at for op in ops} | {op.completed_at for op in ops if op.completed_at is not None})
    column = {event: 3 * i for i, event in enumerate(points)}
    width = 3 * len(points) + 1
    labels = [f"#{op.id} {op.call()} {op.outcome()}" for op in ops]
    pad = min(max(len(label) for label in labels), 60)
    lines = []
    for op, label in zip(ops, labels, strict=True):
        start = column[op.invoked_at]
        cells = [" "] * width
        if op.status in (Status.OK, Status.FAILED) and op.completed_at is not None:
            end = column[op.completed_at]
            edge = "|" if op.status is Status.OK else "x"
            cells[start] = cells[end] = edge
            for i in range(start + 1, end):
                cells[i] = "-"
        else:
            cells[start] = "|"
            for i in range(start + 1, width - 1):
                cells[i] = "-"
            cells[width - 1] = ">"
        note = f"  {marks[op.id]}" if marks and op.id in marks else ""
        if len(label) > pad:
            label = label[: pad - 3] + "..."
        lines.append(f"{label:<{pad}} {''.join(cells).rstrip()}{note}")
    return "\n".join(lines)


def _error_text(error: BaseException | str | None) -> str | None:
    if error is None or isinstance(error, str):
        return error
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _check_key(key: object) -> None:
    if key is None or key is NOT_FOUND:
        raise ValueError(f"{key!r} cannot be a key: the checker reports None for 'no key' and NOT_FOUND is a result")
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"keys must be hashable (str or bytes in Borough), got {type(key).__name__}") from None


# --- JSON encoding of keys and values ----------------------------------------------------------------------------


def _encode(value: object) -> Any:
    if value is NOT_FOUND:
        return {"$": "not_found"}
    if value is None or isinstance(value, bool | str):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        if math.isfinite(value):
            return value
        return {"$": "float", "v": repr(value)}
    if type(value) is bytes:
        return {"$": "bytes", "v": base64.b64encode(value).decode("ascii")}
    if type(value) is list:
        return [_encode(item) for item in value]
    if type(value) is tuple:
        return {"$": "tuple", "v": [_encode(item) for item in value]}
    if type(value) is dict:
        if all(isinstance(k, str) for k in value) and "$" not in value:
            return {k: _encode(v) for k, v in value.items()}
        return {"$": "map", "v": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if type(value) in (set, frozenset):
        assert isinstance(value, set | frozenset)
        # Sorted by their JSON text so the saved file does not depend on hash order.
        items = sorted((_encode(item) for item in value), key=lambda item: json.dumps(item, sort_keys=True))
        return {"$": type(value).__name__, "v": items}
    import cbor2  # only for the rare value JSON cannot hold

    try:
        data = cbor2.dumps(value)
    except Exception as exc:
        raise TypeError(f"cannot save {value!r} in a history: neither JSON nor CBOR encodes it ({exc})") from None
    return {"$": "cbor", "v": base64.b64encode(data).decode("ascii")}


def _decode(data: Any) -> object:
    if isinstance(data, list):
        return [_decode(item) for item in data]
    if not isinstance(data, dict):
        return data
    if "$" not in data:
        return {k: _decode(v) for k, v in data.items()}
    tag = data["$"]
    if tag == "not_found":
        return NOT_FOUND
    payload = data["v"]
    if tag == "float":
        return float(payload)
    if tag == "bytes":
        return base64.b64decode(payload)
    if tag == "tuple":
        return tuple(_decode(item) for item in payload)
    if tag == "map":
        return {_hashable(_decode(k)): _decode(v) for k, v in payload}
    if tag == "set":
        return {_hashable(_decode(item)) for item in payload}
    if tag == "frozenset":
        return frozenset(_hashable(_decode(item)) for item in payload)
    if tag == "cbor":
        import cbor2

        return cbor2.loads(base64.b64decode(payload))
    raise ValueError(f"unknown value tag {tag!r}")


def _hashable(value: object) -> Hashable:
    if not isinstance(value, Hashable):
        raise ValueError(f"{value!r} cannot be a map key or set item")
    return value


def _op_to_dict(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": op.id,
        "client": _encode(op.client_id),
        "kind": op.kind.value,
        "key": _encode(op.key),
        "status": op.status.value,
        "invoked_at": op.invoked_at,
        "completed_at": op.completed_at,
    }
    if op.kind in (Kind.PUT, Kind.CAS):
        out["value"] = _encode(op.value)
    if op.kind is Kind.CAS:
        out["expected"] = _encode(op.expected)
    if op.status is Status.OK and op.kind in (Kind.GET, Kind.CAS):
        out["result"] = _encode(op.result)
    if op.error is not None:
        out["error"] = op.error
    if op.invoke_time is not None:
        out["invoke_time"] = op.invoke_time
    if op.complete_time is not None:
        out["complete_time"] = op.complete_time
    return out


def _op_from_dict(position: int, raw: dict[str, Any]) -> Operation:
    if raw["id"] != position:
        raise ValueError(f"operation at position {position} has id {raw['id']}")
    kind = Kind(raw["kind"])
    status = Status(raw["status"])
    key = _decode(raw["key"])
    _check_key(key)
    invoked_at = int(raw["invoked_at"])
    completed_at = raw["completed_at"]
    if completed_at is not None:
        completed_at = int(completed_at)
        if completed_at <= invoked_at:
            raise ValueError(f"operation #{position} completes at event {completed_at}, not after {invoked_at}")
    if (completed_at is None) != (status is Status.PENDING):
        raise ValueError(f"operation #{position} is {status.value} but completed_at is {completed_at!r}")
    result = _decode(raw["result"]) if "result" in raw else None
    if status is Status.OK and kind is Kind.GET and "result" not in raw:
        raise ValueError(f"ok get #{position} has no result")
    if status is Status.OK and kind is Kind.CAS and not isinstance(result, bool):
        raise ValueError(f"ok cas #{position} has result {result!r}, not a bool")
    return Operation(
        id=position,
        client_id=_hashable(_decode(raw["client"])),
        kind=kind,
        key=key,
        value=_decode(raw["value"]) if kind in (Kind.PUT, Kind.CAS) else None,
        expected=_decode(raw["expected"]) if kind is Kind.CAS else None,
        status=status,
        result=result,
        error=raw.get("error"),
        invoked_at=invoked_at,
        completed_at=completed_at,
        invoke_time=raw.get("invoke_time"),
        complete_time=raw.get("complete_time"),
    )
