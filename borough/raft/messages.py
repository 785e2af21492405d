"""Raft messages: one small frozen record per kind, and their compact CBOR-friendly list encoding.

This module owns what replicas say to each other and how it looks on the wire (as plain lists of ints, strings,
bools and bytes; the wire layer turns those into CBOR). It knows nothing of roles, logs or timers: it does not
decide what a message means, only that a decoded message is well formed, so the core can trust its shape.

Why one class per kind rather than one class with a type field (as etcd does): each kind carries only the
fields it needs (a heartbeat is term + commit + read round, nothing else), so records stay small, mypy checks
every field access, and the core dispatches on ``type(msg)`` with one dict lookup.

Encoding: ``[code, frm, to, term, *fields]``. Entries of an AppendRequest are ``[term, kind, data]`` triples
whose indexes follow ``prev_index`` (so they are contiguous by construction). ``decode_message`` checks every
type, shape and protocol invariant a receiver relies on and raises ``RemoteProtocolError`` for anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias

import attrs

from borough.errors import RemoteProtocolError
from borough.raft.confchange import check_incarnations, decode_conf_change
from borough.raft.records import ConfState, Entry, EntryKind, NodeId, SnapshotMeta

__all__ = [
    "AppendRequest",
    "AppendResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "Message",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
    "decode_message",
    "encode_message",
]


@attrs.frozen(kw_only=True, slots=True)
class VoteRequest:
    """RequestVote (§5.2), or a pre-vote (§9.6) when ``pre_vote``; ``term`` is the term the sender would take.
    ``transfer`` marks an election started by TimeoutNow: voters then ignore their leader lease."""

    frm: NodeId
    to: NodeId
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@attrs.frozen(kw_only=True, slots=True)
class VoteResponse:
    frm: NodeId
    to: NodeId
    term: int
    pre_vote: bool = False
    reject: bool = False


@attrs.frozen(kw_only=True, slots=True)
class AppendRequest:
    """AppendEntries (§5.3). ``entries`` is a list owned by the message: receivers must not mutate it."""

    frm: NodeId
    to: NodeId
    term: int
    prev_index: int
    prev_term: int
    commit: int
    entries: Sequence[Entry] = attrs.field(default=(), eq=tuple)  # compared as a tuple: list or tuple alike


@attrs.frozen(kw_only=True, slots=True)
class AppendResponse:
    """Success: ``index`` is the last index known to match the leader. Rejection: ``index`` is the rejected
    ``prev_index`` and (``hint_index``, ``hint_term``) is the follower's last entry at or below it whose term
    is at most the rejected ``prev_term``, so the leader skips a whole diverging term per round trip."""

    frm: NodeId
    to: NodeId
    term: int
    index: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@attrs.frozen(kw_only=True, slots=True)
class Heartbeat:
    """Only what a heartbeat needs, so a node can coalesce the heartbeats of all groups two nodes share:
    the term, the commit index (at most the follower's match index), and the leader's read round ``seq``.
    ``quiesce`` marks a leader's last heartbeat before its group goes quiet (every member holds the whole log):
    a follower whose log ends at ``commit`` in ``term`` stops its election timer too."""

    frm: NodeId
    to: NodeId
    term: int
    commit: int = 0
    seq: int = 0
    quiesce: bool = False


@attrs.frozen(kw_only=True, slots=True)
class HeartbeatResponse:
    frm: NodeId
    to: NodeId
    term: int
    seq: int = 0


@attrs.frozen(kw_only=True, slots=True)
class InstallSnapshot:
    """Leader -> driver: "stream your applied state to ``to``" (``meta`` is the leader's compaction point).
    Receiving driver -> core: "I hold the staged data of the snapshot ``meta`` sent by ``frm`` in ``term``"."""

    frm: NodeId
    to: NodeId
    term: int
    meta: SnapshotMeta


@attrs.frozen(kw_only=True, slots=True)
class TimeoutNow:
    """Leadership transfer (§3.10 of Ongaro's thesis): the target starts an election at once."""

    frm: NodeId
    to: NodeId
    term: int


@attrs.frozen(kw_only=True, slots=True)
class ReadIndexRequest:
    """A follower asks its leader for a read index on behalf of a local read identified by ``context``."""

    frm: NodeId
    to: NodeId
    term: int
    context: bytes = b""


@attrs.frozen(kw_only=True, slots=True)
class ReadIndexResponse:
    """The leader's answer: reads identified by ``context`` may be served once applied >= ``index``;
    ``reject`` says the recipient could not serve it (not the leader any more): retry."""

    frm: NodeId
    to: NodeId
    term: int
    index: int = 0
    context: bytes = b""
    reject: bool = False


Message: TypeAlias = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)

_VOTE: Final = 1
_VOTE_RESP: Final = 2
_APP: Final = 3
_APP_RESP: Final = 4
_HB: Final = 5
_HB_RESP: Final = 6
_SNAP: Final = 7
_TIMEOUT_NOW: Final = 8
_READ: Final = 9
_READ_RESP: Final = 10

MAX_ID_LEN: Final = 256


def encode_message(msg: Message) -> list[Any]:
    """The compact list form of ``msg``: only ints, strings, bools, bytes and nested lists."""
    t = type(msg)
    if t is AppendRequest:
        assert isinstance(msg, AppendRequest)
        return [
            _APP,
            msg.frm,
            msg.to,
            msg.term,
            msg.prev_index,
            msg.prev_term,
            msg.commit,
            [[e.term, int(e.kind), e.data] for e in msg.entries],
        ]
    if t is AppendResponse:
        assert isinstance(msg, AppendResponse)
        return [_APP_RESP, msg.frm, msg.to, msg.term, msg.index, msg.reject, msg.hint_index, msg.hint_term]
    if t is Heartbeat:
        assert isinstance(msg, Heartbeat)
        return [_HB, msg.frm, msg.to, msg.term, msg.commit, msg.seq, msg.quiesce]
    if t is HeartbeatResponse:
        assert isinstance(msg, HeartbeatResponse)
        return [_HB_RESP, msg.frm, msg.to, msg.term, msg.seq]
    if t is VoteRequest:
        assert isinstance(msg, VoteRequest)
        return [_VOTE, msg.frm, msg.to, msg.term, msg.last_index, msg.last_term, msg.pre_vote, msg.transfer]
    if t is VoteResponse:
        assert isinstance(msg, VoteResponse)
        return [_VOTE_RESP, msg.frm, msg.to, msg.term, msg.pre_vote, msg.reject]
    if t is InstallSnapshot:
        assert isinstance(msg, InstallSnapshot)
        return [_SNAP, msg.frm, msg.to, msg.term, msg.meta.to_list()]
    if t is TimeoutNow:
        return [_TIMEOUT_NOW, msg.frm, msg.to, msg.term]
    if t is ReadIndexRequest:
        assert isinstance(msg, ReadIndexRequest)
        return [_READ, msg.frm, msg.to, msg.term, msg.context]
    if t is ReadIndexResponse:
        assert isinstance(msg, ReadIndexResponse)
        return [_READ_RESP, msg.frm, msg.to, msg.term, msg.index, msg.context, msg.reject]
    raise TypeError(f"not a Raft message: {msg!r}")


# --- decoding ---------------------------------------------------------------------------------------------


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed Raft message: {what}; the peer does not speak this protocol version")


def _int(obj: Any, name: str) -> int:
    # bool is an int subclass in Python; a peer sending true for a term is as broken as one sending "1".
    if type(obj) is not int:
        raise _bad(f"{name} must be an integer, got {type(obj).__name__}")
    if obj < 0 or obj >= 1 << 63:
        raise _bad(f"{name} must be between 0 and 2**63-1, got {obj}")
    return obj


def _bool(obj: Any, name: str) -> bool:
    if type(obj) is not bool:
        raise _bad(f"{name} must be a boolean, got {type(obj).__name__}")
    return obj


def _bytes(obj: Any, name: str) -> bytes:
    if type(obj) is not bytes:
        raise _bad(f"{name} must be a byte string, got {type(obj).__name__}")
    return obj


def _id(obj: Any, name: str) -> NodeId:
    if type(obj) is not str or not obj or len(obj) > MAX_ID_LEN:
        raise _bad(f"{name} must be a non-empty node id string of at most {MAX_ID_LEN} characters, got {obj!r:.80}")
    return NodeId(obj)


def _list(obj: Any, name: str, length: int | None = None) -> list[Any] | tuple[Any, ...]:
    if not isinstance(obj, (list, tuple)):
        raise _bad(f"{name} must be a list, got {type(obj).__name__}")
    if length is not None and len(obj) != length:
        raise _bad(f"{name} must have {length} items, got {len(obj)}")
    return obj


def _ids(obj: Any, name: str) -> list[NodeId]:
    items = _list(obj, name)
    ids = [_id(v, f"{name}[{i}]") for i, v in enumerate(items)]
    if len(set(ids)) != len(ids):
        raise _bad(f"{name} lists a node twice")
    return ids


def _conf_state(obj: Any, name: str) -> ConfState:
    fields = _list(obj, name)
    if len(fields) not in (5, 7):
        raise _bad(f"{name} must have 5 or 7 fields, got {len(fields)}")
    voters, learners, outgoing, learners_next, auto_leave, *rest = fields
    if rest:
        check_incarnations(rest[0], rest[1], RemoteProtocolError)
    cs = ConfState(
        voters=_ids(voters, f"{name}.voters"),
        learners=_ids(learners, f"{name}.learners"),
        voters_outgoing=_ids(outgoing, f"{name}.voters_outgoing"),
        learners_next=_ids(learners_next, f"{name}.learners_next"),
        auto_leave=_bool(auto_leave, f"{name}.auto_leave"),
        incarnations=rest[0] if rest else (),
        next_incarnation=rest[1] if rest else 1,
    )
    if set(cs.voters) & set(cs.learners):
        raise _bad(f"{name}: a node is both voter and learner")
    return cs


def _snapshot_meta(obj: Any, name: str) -> SnapshotMeta:
    index, term, conf = _list(obj, name, 3)
    return SnapshotMeta(
        index=_int(index, f"{name}.index"),
        term=_int(term, f"{name}.term"),
        conf_state=_conf_state(conf, f"{name}.conf_state"),
    )


def _entries(obj: Any, prev_index: int, prev_term: int, msg_term: int) -> list[Entry]:
    items = _list(obj, "entries")
    out: list[Entry] = []
    last_term = prev_term
    index = prev_index
    for i, item in enumerate(items):
        term, kind, data = _list(item, f"entries[{i}]", 3)
        term = _int(term, f"entries[{i}].term")
        kind = _int(kind, f"entries[{i}].kind")
        if kind > 1:
            raise _bad(f"entries[{i}].kind must be 0 (normal) or 1 (conf change), got {kind}")
        # Log terms never decrease along a log and never exceed the term of the leader sending them (§5.3).
        if not last_term <= term <= msg_term or term == 0:
            raise _bad(f"entries[{i}].term {term} is outside [{max(last_term, 1)}, {msg_term}]")
        last_term = term
        index += 1
        data = _bytes(data, f"entries[{i}].data")
        if kind == EntryKind.CONF_CHANGE:
            # Receivers act on a conf change as soon as they append it, so it must be well formed on arrival.
            try:
                decode_conf_change(data)
            except ValueError as exc:
                raise _bad(f"entries[{i}] is a conf change with malformed data ({exc})") from None
        out.append(Entry(term=term, index=index, kind=kind, data=data))
    return out


def _decode_vote(f: Any) -> Message:
    frm, to, term, last_index, last_term, pre_vote, transfer = f
    return VoteRequest(
        frm=_id(frm, "frm"),
        to=_id(to, "to"),
        term=_int(term, "term"),
        last_index=_int(last_index, "last_index"),
        last_term=_int(last_term, "last_term"),
        pre_vote=_bool(pre_vote, "pre_vote"),
        transfer=_bool(transfer, "transfer"),
    )


def _decode_vote_resp(f: Any) -> Message:
    frm, to, term, pre_vote, reject = f
    return VoteResponse(
        frm=_id(frm, "frm"),
        to=_id(to, "to"),
        term=_int(term, "term"),
        pre_vote=_bool(pre_vote, "pre_vote"),
        reject=_bool(reject, "reject"),
    )


def _decode_app(f: Any) -> Message:
    frm, to, term, prev_index, prev_term, commit, entries = f
    term = _int(term, "term")
    prev_index = _int(prev_index, "prev_index")
    prev_term = _int(prev_term, "prev_term")
    if prev_term > term:
        raise _bad(f"prev_term {prev_term} is greater than the message term {term}")
    ents = _entries(entries, prev_index, prev_term, term)
    if prev_index + len(ents) >= 1 << 63:
        raise _bad("entry indexes overflow")
    return AppendRequest(
        frm=_id(frm, "frm"),
        to=_id(to, "to"),
        term=term,
        prev_index=prev_index,
        prev_term=prev_term,
        commit=_int(commit, "commit"),
        entries=ents,
    )


def _decode_app_resp(f: Any) -> Message:
    frm, to, term, index, reject, hint_index, hint_term = f
    return AppendResponse(
        frm=_id(frm, "frm"),
        to=_id(to, "to"),
        term=_int(term, "term"),
        index=_int(index, "index"),
        reject=_bool(reject, "reject"),
        hint_index=_int(hint_index, "hint_index"),
        hint_term=_int(hint_term, "hint_term"),
    )


def _decode_hb(f: Any) -> Message:
    frm, to, term, commit, seq, quiesce = f
    return Heartbeat(
        frm=_id(frm, "frm"),
        to=_id(to, "to"),
        term=_int(term, "term"),
        commit=_int(commit, "commit"),
        seq=_int(seq, "seq"),
        quiesce=_bool(quiesce, "quiesce"),
    )


def _decode_hb_resp(f: Any) -> Message:
    frm, to, term, seq = f
    return HeartbeatResponse(frm=_id(frm, "frm"), to=_id(to, "to"), term=_int(term, "term"), seq=_int(seq, "seq"))


def _decode_snap(f: Any) -> Message:
    frm, to, term, meta = f
    return InstallSnapshot(
        frm=_id(frm, "frm"), to=_id(to, "to"), term=_int(term, "term"), meta=_snapshot_meta(meta, "meta")
    )


def _decode_timeout_now(f: Any) -> Message:
    frm, to, term = f
    return TimeoutNow(frm=_id(frm, "frm"), to=_id(to, "to"), term=_int(term, "term"))


def _decode_read(f: Any) -> Message:
    frm, to, term, context = f
    return ReadIndexRequest(
        frm=_id(frm, "frm"), to=_id(to, "to"), term=_int(term, "term"), context=_bytes(context, "context")
    )


def _decode_read_resp(f: Any) -> Message:
    frm, to, term, index, context, reject = f
    return ReadIndexResponse(
        frm=_id(frm, "frm"),
        to=_id(to, "to"),
        term=_int(term, "term"),
        index=_int(index, "index"),
        context=_bytes(context, "context"),
        reject=_bool(reject, "reject"),
    )


_DECODERS: Final[dict[int, tuple[str, int, Callable[[Any], Message]]]] = {
    _VOTE: ("VoteRequest", 7, _decode_vote),
    _VOTE_RESP: ("VoteResponse", 5, _decode_vote_resp),
    _APP: ("AppendRequest", 7, _decode_app),
    _APP_RESP: ("AppendResponse", 7, _decode_app_resp),
    _HB: ("Heartbeat", 6, _decode_hb),
    _HB_RESP: ("HeartbeatResponse", 4, _decode_hb_resp),
    _SNAP: ("InstallSnapshot", 4, _decode_snap),
    _TIMEOUT_NOW: ("TimeoutNow", 3, _decode_timeout_now),
    _READ: ("ReadIndexRequest", 4, _decode_read),
    _READ_RESP: ("ReadIndexResponse", 6, _decode_read_resp),
}


# --- the fast path ------------------------------------------------------------------------------------------
#
# The messages of every write and read (appends, heartbeats, read indexes and their answers) are checked first by
# one flat expression each, the header all share by ``_head``: no call per field, no error text built. It accepts
# exactly what the checked decoders above accept (the same types, ranges and invariants, written out); anything it
# does not accept goes to them, which refuse it with the reason (``tests/raft/test_messages.py`` compares the two
# on mutated and arbitrary input).
# Conf-change entries are left to the checked path (their data is decoded on arrival).

_M: Final = 1 << 63


def _head(frm: object, to: object, term: object) -> bool:
    """What every message starts with, as the checked decoders take it: two different node ids and a term."""
    return (
        type(frm) is str
        and 0 < len(frm) <= MAX_ID_LEN
        and type(to) is str
        and 0 < len(to) <= MAX_ID_LEN
        and frm != to
        and type(term) is int
        and 0 <= term < _M
    )


def _fast_app(o: list[Any]) -> Message | None:
    if len(o) != 8:
        return None
    frm: NodeId
    to: NodeId
    _, frm, to, term, prev_index, prev_term, commit, items = o
    if not (
        _head(frm, to, term)
        and type(prev_index) is int
        and 0 <= prev_index < _M
        and type(prev_term) is int
        and 0 <= prev_term <= term
        and type(commit) is int
        and 0 <= commit < _M
        and type(items) is list
        and prev_index + len(items) < _M
    ):
        return None
    entries: list[Entry] = []
    last_term, index = prev_term, prev_index
    for item in items:
        if type(item) is not list or len(item) != 3:
            return None
        t, kind, data = item
        # (``last_term >= 0`` and ``term < 2**63``: the bounds of the entry's own term follow)
        if not (type(t) is int and last_term <= t <= term and t != 0 and type(kind) is int and kind == 0):
            return None
        if type(data) is not bytes:
            return None
        last_term = t
        index += 1
        entries.append(Entry(term=t, index=index, kind=0, data=data))
    return AppendRequest(
        frm=frm, to=to, term=term, prev_index=prev_index, prev_term=prev_term, commit=commit, entries=entries
    )


def _fast_app_resp(o: list[Any]) -> Message | None:
    if len(o) != 8:
        return None
    frm: NodeId
    to: NodeId
    _, frm, to, term, index, reject, hint_index, hint_term = o
    if (
        _head(frm, to, term)
        and type(index) is int
        and 0 <= index < _M
        and type(reject) is bool
        and type(hint_index) is int
        and 0 <= hint_index < _M
        and type(hint_term) is int
        and 0 <= hint_term < _M
    ):
        return AppendResponse(
            frm=frm, to=to, term=term, index=index, reject=reject, hint_index=hint_index, hint_term=hint_term
        )
    return None


def _fast_hb(o: list[Any]) -> Message | None:
    if len(o) != 7:
        return None
    frm: NodeId
    to: NodeId
    _, frm, to, term, commit, seq, quiesce = o
    if (
        _head(frm, to, term)
        and type(commit) is int
        and 0 <= commit < _M
        and type(seq) is int
        and 0 <= seq < _M
        and type(quiesce) is bool
    ):
        return Heartbeat(frm=frm, to=to, term=term, commit=commit, seq=seq, quiesce=quiesce)
    return None


def _fast_hb_resp(o: list[Any]) -> Message | None:
    if len(o) != 5:
        return None
    frm: NodeId
    to: NodeId
    _, frm, to, term, seq = o
    if _head(frm, to, term) and type(seq) is int and 0 <= seq < _M:
        return HeartbeatResponse(frm=frm, to=to, term=term, seq=seq)
    return None


def _fast_read(o: list[Any]) -> Message | None:
    if len(o) != 5:
        return None
    frm: NodeId
    to: NodeId
    _, frm, to, term, context = o
    if _head(frm, to, term) and type(context) is bytes:
        return ReadIndexRequest(frm=frm, to=to, term=term, context=context)
    return None


def _fast_read_resp(o: list[Any]) -> Message | None:
    if len(o) != 7:
        return None
    frm: NodeId
    to: NodeId
    _, frm, to, term, index, context, reject = o
    if (
        _head(frm, to, term)
        and type(index) is int
        and 0 <= index < _M
        and type(context) is bytes
        and type(reject) is bool
    ):
        return ReadIndexResponse(frm=frm, to=to, term=term, index=index, context=context, reject=reject)
    return None


_FAST: Final[dict[int, Callable[[list[Any]], Message | None]]] = {
    _APP: _fast_app,
    _APP_RESP: _fast_app_resp,
    _HB: _fast_hb,
    _HB_RESP: _fast_hb_resp,
    _READ: _fast_read,
    _READ_RESP: _fast_read_resp,
}


def decode_message(obj: Any) -> Message:
    """The message ``obj`` encodes (as produced by ``encode_message`` and a CBOR round trip).

    Raises ``RemoteProtocolError`` naming the first problem for any malformed input, and no other exception.
    """
    if type(obj) is list and obj and type(obj[0]) is int:
        fast = _FAST.get(obj[0])
        if fast is not None:
            msg = fast(obj)
            if msg is not None:
                return msg
    return _decode_checked(obj)


def _decode_checked(obj: Any) -> Message:
    """``decode_message`` with every check made one field at a time, naming the first problem."""
    if not isinstance(obj, (list, tuple)) or not obj:
        raise _bad(f"expected a non-empty list, got {type(obj).__name__}")
    code = obj[0]
    if type(code) is not int or code not in _DECODERS:
        raise _bad(f"unknown message type {code!r:.40}")
    name, nfields, decode = _DECODERS[code]
    if len(obj) != nfields + 1:
        raise _bad(f"{name} must have {nfields} fields, got {len(obj) - 1}")
    try:
        msg = decode(obj[1:])
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{name}: {exc}") from None
    if msg.frm == msg.to:
        raise _bad(f"{name} from {msg.frm!r} is addressed to its own sender")
    return msg
