"""The records Raft persists: ids, log entries, hard state, configurations and snapshot metadata.

This module owns the *shape* of what a replica keeps on disk, shared by the Raft core (which produces and reads
them) and the store (which persists them). It is pure data: no I/O, no behaviour beyond converting to and from
plain CBOR-encodable lists, so both the sans-IO core and the storage layer may import it.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from borough.ids import Index, NodeId, Term

__all__ = [
    "ConfState",
    "Entry",
    "EntryKind",
    "HardState",
    "Index",
    "NodeId",
    "SnapshotMeta",
    "Term",
    "Tombstone",
]


class EntryKind(enum.IntEnum):
    """What a log entry carries. A NORMAL entry with empty data is the leader's no-op (§8)."""

    NORMAL = 0
    CONF_CHANGE = 1


@attrs.frozen(kw_only=True, slots=True)
class Entry:
    """One log entry. ``data`` is opaque to Raft (the application's command, or an encoded conf change)."""

    term: int
    index: int
    kind: int = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate bytes this entry costs in a message or on disk (used for batching and byte caps)."""
        return len(self.data) + 24


@attrs.frozen(kw_only=True, slots=True)
class HardState:
    """What Raft must persist before sending any message that depends on it (§5.1, Figure 2)."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0

    def to_list(self) -> list[Any]:
        return [self.term, self.vote, self.commit]

    @classmethod
    def from_list(cls, obj: Any) -> HardState:
        term, vote, commit = obj
        return cls(term=int(term), vote=None if vote is None else NodeId(str(vote)), commit=int(commit))


@attrs.frozen(kw_only=True, slots=True)
class Tombstone:
    """What a replica must not forget when its data is deleted (a committed change removed it): its term and
    vote, the end of its log, and its incarnation. A replica created again under the same name resumes that
    term and vote, and vouches for no candidate whose log is behind that end: it may have acknowledged entries
    up to there, and a lagging member whose stale configuration still counts it as a voter would otherwise win
    with its vote. Messages addressed to ``incarnation`` or an earlier one are meant for a deleted replica:
    they are dropped, never allowed to create a new one (see ``ConfState.incarnations``)."""

    term: int = 0
    vote: NodeId | None = None
    last_index: int = 0
    last_term: int = 0
    incarnation: int = 0

    def to_list(self) -> list[Any]:
        return [self.term, self.vote, self.last_index, self.last_term, self.incarnation]

    @classmethod
    def from_list(cls, obj: Any) -> Tombstone:
        term, vote, last_index, last_term, *rest = obj
        return cls(
            term=int(term),
            vote=None if vote is None else NodeId(str(vote)),
            last_index=int(last_index),
            last_term=int(last_term),
            incarnation=int(rest[0]) if rest else 0,
        )


def _ids(values: Any) -> tuple[NodeId, ...]:
    return tuple(sorted(NodeId(str(v)) for v in values))


def _incarnations(values: Any) -> tuple[tuple[NodeId, int], ...]:
    items = values.items() if isinstance(values, dict) else values
    return tuple(sorted((NodeId(str(node)), int(inc)) for node, inc in items if int(inc) != 0))


@attrs.frozen(kw_only=True, slots=True)
class ConfState:
    """A group's configuration. ``voters_outgoing`` is non-empty only in a joint configuration (§6).

    ``learners_next`` are voters of the outgoing configuration that become learners when the joint
    configuration is left; ``auto_leave`` says the leader leaves the joint configuration by itself once it is
    committed. All member tuples are sorted so equal configurations compare and encode equal.

    Incarnations: a node added to the group (one that was not a member) gets the group's
    ``next_incarnation``, which then grows, so a node removed and later added back is a new incarnation of its
    replica, with a number no earlier one had. Members of the group's first configuration are incarnation 0
    (only non-zero ones are listed). Messages carry the incarnations of sender and recipient, so a message of
    a deleted or superseded replica, or meant for one, is told apart from the current replica's and dropped.
    """

    voters: tuple[NodeId, ...] = attrs.field(default=(), converter=_ids)
    learners: tuple[NodeId, ...] = attrs.field(default=(), converter=_ids)
    voters_outgoing: tuple[NodeId, ...] = attrs.field(default=(), converter=_ids)
    learners_next: tuple[NodeId, ...] = attrs.field(default=(), converter=_ids)
    auto_leave: bool = False
    incarnations: tuple[tuple[NodeId, int], ...] = attrs.field(default=(), converter=_incarnations)
    next_incarnation: int = 1

    @property
    def joint(self) -> bool:
        return bool(self.voters_outgoing)

    def incarnation(self, node: str) -> int:
        """``node``'s incarnation in this configuration (0 for a first-configuration member or a non-member)."""
        for member, inc in self.incarnations:
            if member == node:
                return inc
        return 0

    def members(self) -> tuple[NodeId, ...]:
        """Every node that receives the log under this configuration (voters, outgoing voters, learners)."""
        return _ids(set(self.voters) | set(self.voters_outgoing) | set(self.learners) | set(self.learners_next))

    def to_list(self) -> list[Any]:
        return [
            list(self.voters),
            list(self.learners),
            list(self.voters_outgoing),
            list(self.learners_next),
            self.auto_leave,
        ] + self._incarnation_fields()

    def _incarnation_fields(self) -> list[Any]:
        if not self.incarnations and self.next_incarnation == 1:
            return []  # a configuration no change has added a node to: the five-field form
        return [[[node, inc] for node, inc in self.incarnations], self.next_incarnation]

    @classmethod
    def from_list(cls, obj: Any) -> ConfState:
        voters, learners, outgoing, learners_next, auto_leave, *rest = obj
        return cls(
            voters=voters,
            learners=learners,
            voters_outgoing=outgoing,
            learners_next=learners_next,
            auto_leave=bool(auto_leave),
            incarnations=rest[0] if rest else (),
            next_incarnation=int(rest[1]) if rest else 1,
        )


@attrs.frozen(kw_only=True, slots=True)
class SnapshotMeta:
    """Where a snapshot stands in the log: the last index and term it covers and the configuration there."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()

    def to_list(self) -> list[Any]:
        return [self.index, self.term, self.conf_state.to_list()]

    @classmethod
    def from_list(cls, obj: Any) -> SnapshotMeta:
        index, term, conf = obj
        return cls(index=int(index), term=int(term), conf_state=ConfState.from_list(conf))
