"""The member table: which nodes are in the cluster, where they listen, and what part they play in the ring.

This module owns the records the ring is built from (``Member``, ``MemberState``, ``MemberTable``) and their
CBOR list form. It is pure data: it knows nothing of Raft, SWIM, sockets or time. The node layer keeps the
table in the ``_system`` partition and bumps ``version`` on every change; SWIM only spreads liveness and the
version number, it never edits the table.

Member states and what they mean for the ring:

======== ============== ============================================================================
state    ring target?   meaning
======== ============== ============================================================================
JOINING  no             registered but not yet serving; probed by SWIM, owns no replica slots yet
ACTIVE   yes            a full member: the ring places replicas on it
LEAVING  no             being drained: it stays a replica of the partitions it holds until placement
                        has moved each of them away, but the ring no longer places anything on it
DEAD     no             declared gone by the ``_system`` leader; its replicas are replaced
======== ============== ============================================================================

Only ACTIVE members are ring targets (``MemberTable.ring_members()``), so every node at the same table
version computes the same replica sets.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from borough.errors import RemoteProtocolError
from borough.ids import NodeId

__all__ = ["MAX_ADDRESS_LEN", "MAX_NODE_ID_LEN", "Member", "MemberState", "MemberTable"]

MAX_NODE_ID_LEN = 256
MAX_ADDRESS_LEN = 512
# A table larger than this is certainly garbage (or an attack); the ring is designed for tens to hundreds.
MAX_MEMBERS = 10_000
_MAX_VERSION = 2**63 - 1


class MemberState(enum.IntEnum):
    """A member's role in the cluster, as recorded in the member table (not its SWIM liveness)."""

    JOINING = 0
    ACTIVE = 1
    LEAVING = 2
    DEAD = 3

    @property
    def in_ring(self) -> bool:
        """Whether the ring places replicas on a member in this state (only ACTIVE; see the module docstring)."""
        return self is MemberState.ACTIVE


def _check_node_id(value: object, what: str = "node id") -> NodeId:
    if not isinstance(value, str) or not value or len(value) > MAX_NODE_ID_LEN:
        raise ValueError(f"{what} must be a non-empty string of at most {MAX_NODE_ID_LEN} characters, got {value!r}")
    return NodeId(value)


def _check_address(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ADDRESS_LEN:
        raise ValueError(f"address must be a non-empty string of at most {MAX_ADDRESS_LEN} characters, got {value!r}")
    return value


def _check_state(value: object) -> MemberState:
    if isinstance(value, MemberState):
        return value
    if type(value) is not int or value not in MemberState._value2member_map_:
        raise ValueError(f"member state must be one of {[int(s) for s in MemberState]}, got {value!r}")
    return MemberState(value)


@attrs.frozen(kw_only=True, slots=True)
class Member:
    """One row of the member table: a node's stable id, its listen address (``host:port``) and its state."""

    node_id: NodeId = attrs.field(converter=_check_node_id)
    address: str = attrs.field(converter=_check_address)
    state: MemberState = attrs.field(default=MemberState.ACTIVE, converter=_check_state)

    def to_list(self) -> list[Any]:
        return [self.node_id, self.address, int(self.state)]

    @classmethod
    def from_list(cls, obj: object) -> Member:
        """Decode a member from its CBOR list form; garbage raises ``RemoteProtocolError``."""
        if not isinstance(obj, list) or len(obj) != 3:
            raise RemoteProtocolError(f"a member must be a list [node_id, address, state], got {obj!r:.200}")
        try:
            return cls(node_id=obj[0], address=obj[1], state=obj[2])
        except ValueError as exc:
            raise RemoteProtocolError(f"invalid member {obj!r:.200}: {exc}") from None


def _sorted_members(members: Iterable[Member]) -> tuple[Member, ...]:
    result = tuple(sorted(members, key=lambda m: m.node_id))
    for m in result:
        if not isinstance(m, Member):
            raise TypeError(f"a member table holds Member records, got {m!r}")
    for a, b in zip(result, result[1:], strict=False):
        if a.node_id == b.node_id:
            raise ValueError(f"node id {a.node_id!r} appears twice in the member table")
    if len(result) > MAX_MEMBERS:
        raise ValueError(f"a member table holds at most {MAX_MEMBERS} members, got {len(result)}")
    return result


def _check_version(value: object) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_VERSION:
        raise ValueError(f"member table version must be an integer in [0, 2**63), got {value!r}")
    return value


@attrs.frozen(kw_only=True, slots=True)
class MemberTable:
    """The whole member table at one version. Members are kept sorted by node id, so equal tables compare
    and encode equal; node ids are unique. Changing a member gives a new table with ``version + 1``."""

    version: int = attrs.field(default=0, converter=_check_version)
    members: tuple[Member, ...] = attrs.field(default=(), converter=_sorted_members)
    _by_id: dict[NodeId, Member] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {m.node_id: m for m in self.members})

    # -- lookups -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def get(self, node_id: NodeId) -> Member | None:
        """The member with this id, or None."""
        return self._by_id.get(node_id)

    def __getitem__(self, node_id: NodeId) -> Member:
        try:
            return self._by_id[node_id]
        except KeyError:
            raise KeyError(f"node {node_id!r} is not in the member table (version {self.version})") from None

    def node_ids(self) -> tuple[NodeId, ...]:
        return tuple(m.node_id for m in self.members)

    def address_of(self, node_id: NodeId) -> str | None:
        m = self._by_id.get(node_id)
        return None if m is None else m.address

    def ring_members(self) -> tuple[Member, ...]:
        """The members the ring places replicas on (state ACTIVE), sorted by node id."""
        return tuple(m for m in self.members if m.state.in_ring)

    def in_state(self, *states: MemberState) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.state in states)

    # -- changes (each returns a new table with the next version) ---------------------------------------
    def with_member(self, member: Member) -> MemberTable:
        """A table with ``member`` added or replacing the row with its node id, at ``version + 1``."""
        rest = [m for m in self.members if m.node_id != member.node_id]
        return MemberTable(version=self.version + 1, members=(*rest, member))

    def with_state(self, node_id: NodeId, state: MemberState) -> MemberTable:
        """A table with ``node_id``'s state changed, at ``version + 1``; KeyError if it is not a member."""
        return self.with_member(attrs.evolve(self[node_id], state=state))

    def without(self, node_id: NodeId) -> MemberTable:
        """A table without ``node_id``, at ``version + 1``; KeyError if it is not a member."""
        self[node_id]
        return MemberTable(version=self.version + 1, members=[m for m in self.members if m.node_id != node_id])

    # -- CBOR list form ----------------------------------------------------------------------------------
    def to_list(self) -> list[Any]:
        return [self.version, [m.to_list() for m in self.members]]

    @classmethod
    def from_list(cls, obj: object) -> MemberTable:
        """Decode a table from ``[version, [[node_id, address, state], ...]]``; garbage (wrong shapes or types,
        duplicate ids, too many members) raises ``RemoteProtocolError`` naming what was wrong."""
        if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[1], list):
            raise RemoteProtocolError(f"a member table must be a list [version, [members]], got {obj!r:.200}")
        if len(obj[1]) > MAX_MEMBERS:
            raise RemoteProtocolError(f"a member table holds at most {MAX_MEMBERS} members, got {len(obj[1])}")
        members = [Member.from_list(m) for m in obj[1]]
        try:
            return cls(version=obj[0], members=members)
        except ValueError as exc:
            raise RemoteProtocolError(f"invalid member table: {exc}") from None
