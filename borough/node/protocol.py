"""The call protocol above the wire: one typed record per operation.

This module owns what an operation is (``Get``, ``Write``, ``Scan``, ``Info``, ``FindLeader``, ``Call``,
``Join``, ``Locate``, ``Members``, ``SetState``, ``ListPartitions``, ``Hosted``, ``SendSnapshot``) and how it travels
(``[name, partition, args, seconds_left]`` with streams beside it). The keys, values, write ops and reply
records it carries, and the one validator that judges them, live in ``borough.node.records``. Every op says
whether it is ``repeatable`` (sending it twice cannot change the outcome) and whether it may register its
partition (``creates``); ``retry_safe`` is ``repeatable`` or, for a write, whether it carries a session (the
partition applies a session's write once however often it arrives: ``borough.node.session_table``). Routing
decides on those fields, never on exception order. Every op also decodes its own reply, so what comes back is
checked as strictly as what goes out.

It knows nothing of trio, Raft or routing: records in, records out. Errors on the wire side are
``RemoteProtocolError``; a caller's own bad argument is ``TypeError``/``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self, TypeVar

import attrs

from borough.errors import RemoteProtocolError
from borough.node.records import (
    MAX_PARTITION_NAME,
    Consistency,
    DirectoryRecord,
    Hosting,
    JoinResult,
    Limits,
    PartitionInfo,
    ScanPage,
    ScanRange,
    WriteOp,
    check_key,
    check_partition_name,
    write_ops_from_wire,
)
from borough.node.session_table import SessionRef
from borough.ring.members import Member, MemberState, MemberTable

__all__ = [
    "MAX_PAGE_ITEMS",
    "OPS",
    "Call",
    "FindLeader",
    "Get",
    "Hosted",
    "Info",
    "Join",
    "Locate",
    "ListPartitions",
    "Members",
    "Op",
    "Scan",
    "SendSnapshot",
    "SetState",
    "Write",
    "decode_call",
    "encode_call",
]

#: Most items one scan page may ask for.
MAX_PAGE_ITEMS = 10_000
_T = TypeVar("_T")


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed call: {what}")


def _wire(check: Any, *args: Any) -> Any:
    """Run a caller-side check on wire data: its TypeError/ValueError becomes a RemoteProtocolError."""
    try:
        return check(*args)
    except (TypeError, ValueError) as exc:
        raise _bad(str(exc)) from None


# --- operations -------------------------------------------------------------------------------------------------


class Op:
    """One operation. Subclasses must say, as class keywords, their wire ``name``, whether they are
    ``repeatable`` (safe to send again after a failure that may have reached the leader) and whether they may
    register their partition (``creates``). There is no default for ``repeatable``: forgetting it is a
    TypeError at import, never a silent "safe to retry"."""

    __slots__ = ()
    name: ClassVar[str]
    repeatable: ClassVar[bool]
    creates: ClassVar[bool]
    #: Operations only ``_system`` serves.
    system: ClassVar[bool]
    #: Reads any replica can serve (linearizable ones through ReadIndex): routing spreads them over the replicas.
    spread: ClassVar[bool] = False

    @property
    def stale(self) -> bool:  # a read any replica answers from its own state alone (no ReadIndex round trip)
        return getattr(self, "consistency", None) == "stale"

    def __init_subclass__(
        cls, *, name: str | None = None, repeatable: bool | None = None, creates: bool = False, system: bool = False
    ) -> None:
        super().__init_subclass__()
        if name is None or repeatable is None:
            if all(k in cls.__dict__ for k in ("name", "repeatable", "creates", "system")):
                return  # attrs rebuilding a slotted class whose keywords were already given
            raise TypeError(f"operation {cls.__name__} must say name= and repeatable= (is it safe to send twice?)")
        cls.name, cls.repeatable, cls.creates, cls.system = name, repeatable, creates, system

    @property
    def retry_safe(self) -> bool:
        """Whether routing may send this op again after a failure that may have reached the leader."""
        return self.repeatable

    @property
    def attempt_bounded(self) -> bool:
        """Whether one attempt at one node is bounded by ``ATTEMPT_TIMEOUT`` (when ``retry_safe``)."""
        return True

    def to_args(self) -> list[Any]:
        raise NotImplementedError

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> Op:
        """Decode and validate arguments from the wire; raises RemoteProtocolError."""
        raise NotImplementedError

    def encode_result(self, result: Any) -> Any:
        """The reply body for ``result`` (the server's side)."""
        return result

    def decode_result(self, body: Any) -> Any:
        """The result a reply body stands for (the caller's side); raises RemoteProtocolError if malformed."""
        return body


def _nargs(cls: type[Op], args: list[Any], n: int, shape: str) -> None:
    if len(args) != n:
        raise _bad(f"{cls.name} takes {shape}")


def _consistency(value: object) -> Consistency:
    if value == "linearizable":
        return "linearizable"
    if value == "stale":
        return "stale"
    raise _bad(f"consistency must be 'linearizable' or 'stale', not {value!r:.40}")


def _decoded(body: Any, decode: Callable[[Any], _T]) -> _T:
    try:
        return decode(body)
    except (TypeError, ValueError, RemoteProtocolError) as exc:
        raise RemoteProtocolError(f"malformed reply: {exc}") from None


@attrs.frozen(slots=True)
class Get(Op, name="get", repeatable=True):
    spread: ClassVar[bool] = True
    key: str | bytes
    consistency: Consistency = "linearizable"

    def to_args(self) -> list[Any]:
        return [self.key, self.consistency]

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> Get:
        _nargs(cls, args, 2, "[key, 'linearizable' | 'stale']")
        return cls(_wire(check_key, args[0], limits), _consistency(args[1]))

    def decode_result(self, body: Any) -> bytes | None:
        if body is not None and type(body) is not bytes:
            raise RemoteProtocolError(f"a get answered {type(body).__name__}, expected encoded bytes")
        return body


@attrs.frozen(slots=True)
class Write(Op, name="write", repeatable=False, creates=True):
    """Puts and deletes applied atomically, in order, as one Raft entry; with a session (``[ops, [session,
    seq, low]]`` on the wire), at most once however often it is sent, so routing retries it after any failure."""

    ops: tuple[WriteOp, ...]
    session: SessionRef | None = None

    @property
    def retry_safe(self) -> bool:
        return self.session is not None

    def to_args(self) -> list[Any]:
        ops = [op.to_list() for op in self.ops]
        return [ops] if self.session is None else [ops, self.session.to_list()]

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> Write:
        if len(args) not in (1, 2):
            raise _bad("write takes [ops] or [ops, [session, seq, low]]")
        if not isinstance(args[0], list) or not args[0]:
            raise _bad("a write needs a non-empty list of ops")
        ops = _wire(write_ops_from_wire, args[0], limits)
        session = _wire(SessionRef.from_list, args[1]) if len(args) == 2 else None
        return cls(ops, session)

    def decode_result(self, body: Any) -> None:
        return None


@attrs.frozen(slots=True)
class Scan(Op, name="scan", repeatable=True):
    spread: ClassVar[bool] = True
    range: ScanRange
    limit: int
    consistency: Consistency = "linearizable"

    def to_args(self) -> list[Any]:
        return [self.range.to_list(), self.limit, self.consistency]

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> Scan:
        _nargs(cls, args, 3, "[range, limit, consistency]")
        if type(args[1]) is not int or args[1] < 1:
            raise _bad("a scan's limit is a positive integer")
        scan = _wire(ScanRange.from_list, args[0])
        return cls(scan, min(args[1], MAX_PAGE_ITEMS), _consistency(args[2]))

    def encode_result(self, result: ScanPage) -> Any:
        return result.to_list()

    def decode_result(self, body: Any) -> ScanPage:
        return _decoded(body, ScanPage.from_list)


class _NoArgs:
    __slots__ = ()
    name: ClassVar[str]

    def to_args(self) -> list[Any]:
        return []

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> Self:
        if args:
            raise _bad(f"{cls.name} takes no arguments")
        return cls()


@attrs.frozen(slots=True)
class Info(_NoArgs, Op, name="info", repeatable=True, creates=True):
    def encode_result(self, result: PartitionInfo) -> Any:
        return result.to_list()

    def decode_result(self, body: Any) -> PartitionInfo:
        return _decoded(body, PartitionInfo.from_list)


@attrs.frozen(slots=True)
class Export(_NoArgs, Op, name="export", repeatable=True):
    """The partition's items as of one applied index, from its leader: the reply body is that index and the
    ``data`` stream the items (``borough.node.export``)."""

    def decode_result(self, body: Any) -> int:
        if type(body) is not int or body < 0:
            raise RemoteProtocolError("malformed reply: an export answers its applied index")
        return body


@attrs.frozen(slots=True)
class FindLeader(_NoArgs, Op, name="leader", repeatable=True, creates=True):
    """Succeeds on the partition's leader: routing finds it before a request whose streams cannot be replayed."""

    def decode_result(self, body: Any) -> None:
        return None


@attrs.frozen(slots=True)
class Call(Op, name="request", repeatable=False, creates=True):
    """Run the application's handler on the partition's leader with ``body`` (and byte streams beside it)."""

    body: Any
    streams: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    #: With a session (``[body, [session, seq, low]]`` on the wire) the handler's transaction records its
    #: reply under it, so the request runs once however often routing sends it (issue 18).
    session: SessionRef | None = None

    @property
    def retry_safe(self) -> bool:
        return self.session is not None

    @property
    def attempt_bounded(self) -> bool:
        return False  # a handler may run long: one node's attempt is bounded only by the deadline

    def to_args(self) -> list[Any]:
        return [self.body] if self.session is None else [self.body, self.session.to_list()]

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> Call:
        if len(args) not in (1, 2):
            raise _bad("request takes [body] or [body, [session, seq, low]]")
        session = _wire(SessionRef.from_list, args[1]) if len(args) == 2 else None
        return cls(args[0], session=session)


@attrs.frozen(slots=True)
class Join(Op, name="sys.join", repeatable=True, system=True):
    """Add (or update) a member in the member table; applying it twice changes nothing more."""

    node_id: str
    address: str

    def to_args(self) -> list[Any]:
        return [self.node_id, self.address]

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> Join:
        _nargs(cls, args, 2, "[node_id, address]")
        try:  # the member table's own rules, before anything is proposed
            member = Member(node_id=args[0], address=args[1])
        except (TypeError, ValueError) as exc:
            raise _bad(f"sys.join takes [node_id, address] as non-empty strings ({exc})") from None
        return cls(member.node_id, member.address)

    def encode_result(self, result: JoinResult) -> Any:
        return [result.members.to_list(), result.cluster_id]

    def decode_result(self, body: Any) -> JoinResult:
        if not isinstance(body, list) or len(body) != 2 or not (body[1] is None or isinstance(body[1], str)):
            raise RemoteProtocolError("malformed reply: sys.join answers [members, cluster_id]")
        return JoinResult(MemberTable.from_list(body[0]), body[1])


@attrs.frozen(slots=True)
class Locate(Op, name="sys.dir", repeatable=True, system=True):
    """A partition's directory record; with ``create`` it is registered (exactly once) if missing."""

    partition: str
    create: bool

    def to_args(self) -> list[Any]:
        return [self.partition, self.create]

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> Locate:
        _nargs(cls, args, 2, "[partition, create]")
        try:
            if type(args[1]) is not bool:
                raise TypeError("create is a bool")
            return cls(check_partition_name(args[0]), args[1])
        except (TypeError, ValueError) as exc:
            raise _bad(f"sys.dir takes [partition, create] ({exc})") from None

    def encode_result(self, result: DirectoryRecord | None) -> Any:
        return None if result is None else result.to_list()

    def decode_result(self, body: Any) -> DirectoryRecord | None:
        return None if body is None else DirectoryRecord.from_list(body)


@attrs.frozen(slots=True)
class Members(_NoArgs, Op, name="sys.members", repeatable=True, system=True):
    def encode_result(self, result: MemberTable) -> Any:
        return result.to_list()

    def decode_result(self, body: Any) -> MemberTable:
        return MemberTable.from_list(body)


@attrs.frozen(slots=True)
class SetState(Op, name="sys.state", repeatable=True, system=True):
    """Mark a member LEAVING (placement drains it) or DEAD (gone); setting the same state twice changes nothing."""

    node_id: str
    state: MemberState

    def to_args(self) -> list[Any]:
        return [self.node_id, int(self.state)]

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> SetState:
        _nargs(cls, args, 2, "[node_id, state]")
        if not isinstance(args[0], str) or not args[0] or args[1] not in (MemberState.LEAVING, MemberState.DEAD):
            raise _bad("sys.state takes [node_id, LEAVING or DEAD]")
        return cls(args[0], MemberState(args[1]))

    def encode_result(self, result: MemberTable) -> Any:
        return result.to_list()

    def decode_result(self, body: Any) -> MemberTable:
        return MemberTable.from_list(body)


@attrs.frozen(slots=True)
class ListPartitions(Op, name="sys.partitions", repeatable=True, system=True):
    """A page of the partition directory's names, in order, after ``after``."""

    after: str | None = None
    limit: int = 1000

    def to_args(self) -> list[Any]:
        return [self.after, self.limit]

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> ListPartitions:
        _nargs(cls, args, 2, "[after, limit]")
        if not (args[0] is None or isinstance(args[0], str)) or type(args[1]) is not int or args[1] < 1:
            raise _bad("sys.partitions takes [after or null, a positive limit]")
        return cls(args[0], min(args[1], MAX_PAGE_ITEMS))

    def decode_result(self, body: Any) -> list[str]:
        if not isinstance(body, list) or not all(isinstance(n, str) for n in body):
            raise RemoteProtocolError("malformed reply: sys.partitions answers a list of names")
        return body


@attrs.frozen(slots=True)
class Hosted(_NoArgs, Op, name="node.hosted", repeatable=True):
    """Which replicas the node it reaches holds and leads (sent to one node, with ``_system`` as the partition)."""

    def encode_result(self, result: Hosting) -> Any:
        return result.to_list()

    def decode_result(self, body: Any) -> Hosting:
        return _decoded(body, Hosting.from_list)


#: A snapshot stream may go this many request timeouts without moving a chunk (its sender and its receiver both
#: bound it so; in all it may take as long as the partition's size at the node's byte rate needs).
SNAPSHOT_TIMEOUTS = 6


@attrs.frozen(slots=True)
class SendSnapshot(Op, name="snap", repeatable=False):
    """A leader streams a replica's applied state (the ``data`` stream) with its encoded InstallSnapshot and
    the incarnations of recipient and sender (see ``borough.node.incarnations``). ``member`` is not on the wire:
    the receiving server sets it False for a sender its member table does not list (only ``_system`` takes one)."""

    message: Any
    to_inc: int = 0
    frm_inc: int = 0
    member: bool = attrs.field(default=True, kw_only=True)

    def to_args(self) -> list[Any]:
        return [self.message, self.to_inc, self.frm_inc]

    @classmethod
    def from_args(cls, args: list[Any], limits: Limits) -> SendSnapshot:
        _nargs(cls, args, 3, "[install_snapshot_message, to_incarnation, from_incarnation]")
        for value in args[1:]:
            if type(value) is not int or not 0 <= value < 1 << 63:
                raise RemoteProtocolError("a snapshot call's incarnations must be integers in [0, 2**63)")
        return cls(args[0], args[1], args[2])


OPS: dict[str, type[Op]] = {
    cls.name: cls
    for cls in (
        Get,
        Write,
        Scan,
        Info,
        FindLeader,
        Call,
        Join,
        Locate,
        Members,
        SetState,
        ListPartitions,
        Hosted,
        SendSnapshot,
        Export,
    )  # fmt: skip
}


# --- the envelope -----------------------------------------------------------------------------------------------


def encode_call(partition: str, op: Op, seconds_left: float | None) -> list[Any]:
    """The call body: ``[name, partition, args, seconds_left]`` (streams travel beside it)."""
    return [op.name, partition, op.to_args(), seconds_left]


def decode_call(body: object, limits: Limits) -> tuple[str, Op, float | None]:
    """A call body from the wire, validated: (partition, op, the caller's seconds left or None)."""
    if not isinstance(body, list) or len(body) != 4:
        raise _bad("expected [op, partition, args, seconds_left]")
    name, partition, args, left = body
    if not isinstance(name, str) or not isinstance(partition, str) or not partition or not isinstance(args, list):
        raise _bad("op and partition must be strings and args a list")
    if len(partition) > MAX_PARTITION_NAME:
        raise _bad(f"a partition name may have at most {MAX_PARTITION_NAME} characters")
    if left is not None and (type(left) not in (int, float) or not left >= 0):
        raise _bad("seconds_left must be a non-negative number or null")
    cls = OPS.get(name)
    if cls is None:
        raise _bad(f"unknown operation {name!r:.40}")
    return partition, cls.from_args(args, limits), None if left is None else float(left)
