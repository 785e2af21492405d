"""The records operations carry: keys and values checked against the node's limits, write ops, and replies.

This module owns the one validator of user input (``check_key``, ``check_value``, ``write_op_from_list``),
used by a caller before anything leaves and by the server before anything reaches the log, and the frozen
records replies decode into (``ScanPage``, ``PartitionInfo``, ``JoinResult``, ``DirectoryRecord``), each with
its plain CBOR list form. Pure data: no trio, no Raft, no routing. A caller's own bad argument raises
``TypeError``/``ValueError``; ``borough.node.protocol`` turns those into ``RemoteProtocolError`` for wire data.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import attrs

from borough.cbor_safe import CborRejected, safe_loads
from borough.errors import RemoteProtocolError
from borough.ids import NodeId
from borough.kv import encode_bound, encode_key
from borough.ring.members import MemberTable

__all__ = [
    "CONSISTENCIES",
    "Consistency",
    "Delete",
    "DirectoryRecord",
    "JoinResult",
    "Hosting",
    "Limits",
    "MemberStatus",
    "PartitionInfo",
    "Put",
    "ReplicaInfo",
    "ScanPage",
    "ScanRange",
    "WriteOp",
    "check_key",
    "check_partition_name",
    "check_value",
    "write_op_from_list",
    "write_ops_from_wire",
]

Consistency = Literal["linearizable", "stale"]
CONSISTENCIES: tuple[Consistency, ...] = ("linearizable", "stale")


# --- keys, values, write ops ----------------------------------------------------------------------------------


#: The most bytes of keys and values one write (one Raft entry) may carry: with its framing it stays well under
#: the 8 MiB frame between nodes, so an accepted write can always be replicated.
MAX_WRITE_BYTES = 4 * 1024 * 1024


@attrs.frozen(kw_only=True, slots=True)
class Limits:
    """The largest key, value and write (encoded bytes) a node accepts; a client checks the same before sending.
    A write is one Raft entry, and an entry must fit in one message between nodes: ``MAX_WRITE_BYTES``."""

    max_key_bytes: int = 64 * 1024
    max_value_bytes: int = 1024 * 1024
    max_write_bytes: int = MAX_WRITE_BYTES


def check_write(ops: tuple[WriteOp, ...], limits: Limits) -> tuple[WriteOp, ...]:
    """A whole write (one Raft entry): its keys and values together at most ``max_write_bytes``."""
    _check_write_bytes(sum(_op_bytes(op) for op in ops), limits)
    return ops


def _op_bytes(op: WriteOp) -> int:
    """What one op counts toward ``max_write_bytes``: its encoded key, and a put's value."""
    return len(encode_key(op.key)) + (len(op.value) if isinstance(op, Put) else 0)


def _check_write_bytes(total: int, limits: Limits) -> None:
    if total > limits.max_write_bytes:
        raise ValueError(
            f"a write of {total} bytes of keys and values exceeds max_write_bytes={limits.max_write_bytes}; "
            "split it into several writes"
        )


def check_key(key: object, limits: Limits) -> str | bytes:
    """A user key: non-empty ``str`` (valid UTF-8) or ``bytes``, at most ``max_key_bytes`` encoded."""
    if not isinstance(key, (str, bytes)) or type(key) not in (str, bytes):
        raise TypeError(f"a key must be str or bytes, not {type(key).__name__}: {key!r:.60}")
    kb = encode_key(key)
    if len(kb) > limits.max_key_bytes:
        raise ValueError(f"key of {len(kb)} bytes exceeds max_key_bytes={limits.max_key_bytes}")
    return key


def check_value(encoded: object, limits: Limits) -> bytes:
    """A value as it travels and is logged: non-empty CBOR bytes, at most ``max_value_bytes``, that decode
    within the bounds every stored value is read back under (``borough.cbor_safe``), so what is written can
    always be read."""
    if type(encoded) is not bytes or not encoded:
        raise TypeError("a put's value must be CBOR-encoded bytes")
    if len(encoded) > limits.max_value_bytes:
        raise ValueError(
            f"value of {len(encoded)} encoded bytes exceeds max_value_bytes={limits.max_value_bytes}; "
            "send large payloads as a stream attached to a request"
        )
    if _one_scalar(encoded):
        return encoded  # (it decodes within every bound: no need to decode it to know)
    try:
        safe_loads(encoded)
    except CborRejected as exc:
        raise ValueError(
            f"this value cannot be stored ({exc}); store plain data: numbers, strings, bytes, lists, dicts, "
            "sets, dates, decimals, fractions, UUIDs"
        ) from None
    return encoded


_SIMPLE_SIZES: Final = {0xF4: 1, 0xF5: 1, 0xF6: 1, 0xF9: 3, 0xFA: 5, 0xFB: 9}  # false, true, null, the floats


def _one_scalar(encoded: bytes) -> bool:
    """Whether ``encoded`` is exactly one CBOR integer, byte string, text string (valid UTF-8), false, true, null
    or float, with definite length. Such a value decodes within every bound ``borough.cbor_safe`` sets, so it
    needs no decode to be checked; most values are one (the rest go through the full check, as before)."""
    n = len(encoded)
    head = encoded[0]
    major, info = head >> 5, head & 0x1F
    if major == 7:
        return _SIMPLE_SIZES.get(head) == n
    if major > 3 or info > 27:  # an array, map or tag; or a reserved or indefinite-length head
        return False
    if info < 24:
        arg, start = info, 1
    else:
        start = 1 + (1 << (info - 24))  # a 1, 2, 4 or 8-byte argument follows the head
        if n < start:
            return False
        arg = int.from_bytes(encoded[1:start], "big")
    if major < 2:
        return n == start
    if n - start != arg:
        return False
    if major == 3:
        try:
            encoded[start:].decode()
        except UnicodeDecodeError:
            return False
    return True


@attrs.frozen(slots=True)
class Put:
    key: str | bytes
    value: bytes  # CBOR-encoded

    def to_list(self) -> list[Any]:
        return ["put", self.key, self.value]


@attrs.frozen(slots=True)
class Delete:
    key: str | bytes

    def to_list(self) -> list[Any]:
        return ["del", self.key]


WriteOp = Put | Delete


def write_op_from_list(obj: object, limits: Limits) -> WriteOp:
    """One write op as it arrives from the wire (``["put", key, value]`` or ``["del", key]``), checked."""
    if isinstance(obj, list) and len(obj) == 3 and obj[0] == "put":
        return Put(check_key(obj[1], limits), check_value(obj[2], limits))
    if isinstance(obj, list) and len(obj) == 2 and obj[0] == "del":
        return Delete(check_key(obj[1], limits))
    raise ValueError(f"an op must be ['put', key, value] or ['del', key], not {obj!r:.80}")


def write_ops_from_wire(wire_ops: list[Any], limits: Limits) -> tuple[WriteOp, ...]:
    """A write's ops as they arrive from the wire, each checked as ``write_op_from_list`` does and the whole
    write as ``check_write`` does. The commonest op, a put of an ASCII ``str`` or a ``bytes`` key and a value that
    is one CBOR scalar, within the limits, is taken without those calls (the same rules, checked inline); any
    other op, or one that breaks a rule, goes through them, which raise the errors they always do."""
    ops: list[WriteOp] = []
    total = 0
    max_key, max_value = limits.max_key_bytes, limits.max_value_bytes
    for obj in wire_ops:
        if type(obj) is list and len(obj) == 3 and obj[0] == "put":
            key, value = obj[1], obj[2]
            kind = type(key)
            size = len(key) if kind is bytes or (kind is str and key.isascii()) else 0  # (ASCII: a byte a character)
            if 0 < size <= max_key and type(value) is bytes and 0 < len(value) <= max_value and _one_scalar(value):
                put = _new(Put)
                _set(put, "key", key)
                _set(put, "value", value)
                ops.append(put)
                total += size + len(value)
                continue
        op = write_op_from_list(obj, limits)
        ops.append(op)
        total += _op_bytes(op)
    _check_write_bytes(total, limits)
    return tuple(ops)


_new = object.__new__
_set = object.__setattr__  # (how a frozen attrs class sets its fields)


# --- what replies carry -----------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True, slots=True)
class ScanRange:
    """An iterator's bounds and options, as they travel to the replica that serves the pages."""

    gt: str | bytes | None = None
    gte: str | bytes | None = None
    lt: str | bytes | None = None
    lte: str | bytes | None = None
    reverse: bool = False
    values: bool = True

    def __attrs_post_init__(self) -> None:
        if self.gt is not None and self.gte is not None:
            raise ValueError("give at most one lower bound (gt or gte)")
        if self.lt is not None and self.lte is not None:
            raise ValueError("give at most one upper bound (lt or lte)")

    def to_list(self) -> list[Any]:
        return [self.gt, self.gte, self.lt, self.lte, self.reverse, self.values]

    @classmethod
    def from_list(cls, obj: object) -> ScanRange:
        if not isinstance(obj, list) or len(obj) != 6:
            raise ValueError("a scan range is [gt, gte, lt, lte, reverse, values]")
        gt, gte, lt, lte, reverse, values = obj
        for bound in (gt, gte, lt, lte):
            if bound is not None:
                encode_bound(bound)
        if type(reverse) is not bool or type(values) is not bool:
            raise TypeError("a scan range's reverse and values are bools")
        return cls(gt=gt, gte=gte, lt=lt, lte=lte, reverse=reverse, values=values)

    def after(self, key: str | bytes) -> ScanRange:
        """The same range, resuming strictly after ``key`` (in iteration order)."""
        if self.reverse:
            return attrs.evolve(self, lt=key, lte=None)
        return attrs.evolve(self, gt=key, gte=None)


@attrs.frozen(slots=True)
class ScanPage:
    """Up to a page of ``(key, encoded value or None)`` items, and whether more may follow."""

    items: list[tuple[str | bytes, bytes | None]]
    more: bool

    def to_list(self) -> list[Any]:
        return [[[k, v] for k, v in self.items], self.more]

    @classmethod
    def from_list(cls, obj: object) -> ScanPage:
        if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[0], list) or type(obj[1]) is not bool:
            raise ValueError("a scan page is [[[key, value], ...], more]")
        items: list[tuple[str | bytes, bytes | None]] = []
        for item in obj[0]:
            if not isinstance(item, list) or len(item) != 2 or type(item[0]) not in (str, bytes):
                raise ValueError(f"a scan item is [key, value], not {item!r:.80}")
            if item[1] is not None and type(item[1]) is not bytes:
                raise ValueError("a scan item's value is encoded bytes or null")
            items.append((item[0], item[1]))
        return cls(items, obj[1])


MAX_PARTITION_NAME = 1024
RESERVED_PARTITION = "_system"


def check_partition_name(name: object) -> str:
    """A partition name a user may give: a non-empty str of at most MAX_PARTITION_NAME characters, not the
    reserved ``_system``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a partition name must be a non-empty str, not {name!r:.60}")
    if len(name) > MAX_PARTITION_NAME:
        raise ValueError(f"a partition name may have at most {MAX_PARTITION_NAME} characters, not {len(name)}")
    if name == RESERVED_PARTITION:
        raise ValueError(f"the partition name {name!r} is reserved for Borough's member table and directory")
    return name


#: A replica's role in its group, as ``PartitionInfo`` reports it.
ROLES = ("leader", "voter", "learner")
#: How a leader replicates to a follower (``borough.raft.progress.ProgressState`` values; "" for itself).
PROGRESS = ("", "probe", "replicate", "snapshot")


@attrs.frozen(kw_only=True, slots=True)
class ReplicaInfo:
    """One replica of a partition as its leader sees it."""

    node_id: str
    address: str | None
    role: str  # "leader", "voter", "learner"
    match_index: int
    connected: bool
    #: How the leader replicates to it: "probe", "replicate" or "snapshot" ("" for the leader itself).
    progress: str = ""

    def to_list(self) -> list[Any]:
        return [self.node_id, self.address, self.role, self.match_index, self.connected, self.progress]

    @classmethod
    def from_list(cls, p: object) -> ReplicaInfo:
        if (
            not isinstance(p, list)
            or len(p) != 6
            or not isinstance(p[0], str)
            or not (p[1] is None or isinstance(p[1], str))
            or p[2] not in ROLES
            or type(p[3]) is not int
            or type(p[4]) is not bool
            or p[5] not in PROGRESS
        ):
            raise ValueError(
                f"a replica's info is [node_id, address or null, role ({'/'.join(ROLES)}), match, connected, "
                f"progress], not {p!r:.80}"
            )
        return cls(node_id=p[0], address=p[1], role=p[2], match_index=p[3], connected=p[4], progress=p[5])


@attrs.frozen(kw_only=True, slots=True)
class PartitionInfo:
    """Where a partition stands, as its leader sees it: its replicas (voters and learners, each with its
    replication progress), whether its configuration is joint (a change under way), the ring's target replica
    set it is moving towards, snapshots being streamed to followers, and the leader, term, commit and applied
    indexes."""

    name: str
    leader: str | None
    term: int
    commit_index: int
    applied_index: int
    peers: tuple[ReplicaInfo, ...]
    joint: bool = False
    #: The ring's replica set for this partition (owner first): where placement is moving it.
    targets: tuple[str, ...] = ()
    #: Followers the leader is streaming a snapshot to right now.
    snapshots_to: tuple[str, ...] = ()

    @property
    def voters(self) -> tuple[str, ...]:
        return tuple(p.node_id for p in self.peers if p.role != "learner")

    @property
    def learners(self) -> tuple[str, ...]:
        return tuple(p.node_id for p in self.peers if p.role == "learner")

    def to_list(self) -> list[Any]:
        return [
            self.name,
            self.leader,
            self.term,
            self.commit_index,
            self.applied_index,
            [p.to_list() for p in self.peers],
            self.joint,
            list(self.targets),
            list(self.snapshots_to),
        ]

    @classmethod
    def from_list(cls, obj: object) -> PartitionInfo:
        if not isinstance(obj, list) or len(obj) != 9 or not isinstance(obj[5], list):
            raise ValueError(
                "partition info is [name, leader, term, commit, applied, [peers], joint, [targets], [snapshots]]"
            )
        name, leader, term, commit, applied, peers, joint, targets, snapshots = obj
        if not isinstance(name, str) or not (leader is None or isinstance(leader, str)):
            raise ValueError("partition info: name and leader are strings")
        if not all(type(n) is int for n in (term, commit, applied)):
            raise ValueError("partition info: term, commit and applied are integers")
        if type(joint) is not bool:
            raise ValueError("partition info: joint is a bool")
        for ids in (targets, snapshots):
            if not isinstance(ids, list) or not all(isinstance(n, str) for n in ids):
                raise ValueError("partition info: targets and snapshots are lists of node ids")
        return cls(
            name=name,
            leader=leader,
            term=term,
            commit_index=commit,
            applied_index=applied,
            peers=tuple(ReplicaInfo.from_list(p) for p in peers),
            joint=joint,
            targets=tuple(targets),
            snapshots_to=tuple(snapshots),
        )


@attrs.frozen(kw_only=True, slots=True)
class Hosting:
    """The replicas one node holds, and which of them it leads."""

    replicas: tuple[str, ...]
    leaderships: tuple[str, ...]

    def to_list(self) -> list[Any]:
        return [list(self.replicas), list(self.leaderships)]

    @classmethod
    def from_list(cls, obj: object) -> Hosting:
        if not isinstance(obj, list) or len(obj) != 2 or not all(isinstance(x, list) for x in obj):
            raise ValueError("hosting is [[replicas], [leaderships]]")
        replicas, leads = obj
        if not all(isinstance(n, str) for n in (*replicas, *leads)):
            raise ValueError("hosting lists partition names")
        return cls(replicas=tuple(replicas), leaderships=tuple(leads))


@attrs.frozen(kw_only=True, slots=True)
class MemberStatus:
    """One member of the cluster: its row of the member table, and what it holds (None when it did not answer)."""

    node_id: str
    address: str
    state: str  # "JOINING", "ACTIVE", "LEAVING", "DEAD"
    replicas: tuple[str, ...] | None
    leaderships: tuple[str, ...] | None


@attrs.frozen(slots=True)
class JoinResult:
    """What the cluster answers a node that joins (or announces itself): the member table and its id."""

    members: MemberTable
    cluster_id: str | None


@attrs.frozen(kw_only=True, slots=True)
class DirectoryRecord:
    """Where a partition's Raft group was created: its initial voters (ring order, owner first)."""

    name: str
    voters: tuple[NodeId, ...]
    #: The member-table version the voters were chosen from.
    table_version: int

    def to_list(self) -> list[Any]:
        return [self.name, list(self.voters), self.table_version]

    @classmethod
    def from_list(cls, obj: Any) -> DirectoryRecord:
        if (
            not isinstance(obj, list)
            or len(obj) != 3
            or not isinstance(obj[0], str)
            or not isinstance(obj[1], list)
            or not all(isinstance(v, str) and v for v in obj[1])
            or type(obj[2]) is not int
        ):
            raise RemoteProtocolError(f"a directory record must be [name, [voters], version], got {obj!r:.200}")
        return cls(name=obj[0], voters=tuple(NodeId(v) for v in obj[1]), table_version=obj[2])
