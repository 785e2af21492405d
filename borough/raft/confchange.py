"""Membership changes: what a conf change asks for, the configuration it leads to, and its log encoding.

This module owns the transitions between configurations (Ongaro's thesis §4, the paper's §6): single-voter
changes applied directly, several changes at once through a joint configuration that is left automatically
(``auto_leave``) or by an explicit empty change, and learners (which receive the log but never vote). It knows
``ConfState`` and nothing of logs, progress or roles.

A conf-change entry records both the change and the configuration that results from it. A replica's
configuration is the one recorded by the last conf-change entry in its log (or its snapshot's, when there is
none): it takes effect when the entry is appended, and reverts if the entry is truncated away. Because the
result is in the entry, a replica that receives the log from index 1 (no snapshot) derives the same
configurations as everyone else without knowing the group's bootstrap configuration.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs
import cbor2

from borough.errors import ConfigError
from borough.raft.records import ConfState, NodeId

__all__ = [
    "ChangeType",
    "ConfChange",
    "ConfChangeSingle",
    "InvalidConfChange",
    "Transition",
    "apply_conf_change",
    "decode_conf_change",
    "encode_conf_change",
]


class InvalidConfChange(ConfigError):
    """A proposed membership change cannot be applied to the current configuration (the message says why)."""


class ChangeType(enum.IntEnum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


class Transition(enum.IntEnum):
    """How a change is carried out.

    AUTO: a change of at most one voter is applied directly; anything larger goes through a joint
    configuration that the leader leaves by itself once it is committed. JOINT_IMPLICIT: always through a joint
    configuration, left automatically. JOINT_EXPLICIT: always joint, left only by proposing an empty change.
    """

    AUTO = 0
    JOINT_IMPLICIT = 1
    JOINT_EXPLICIT = 2


@attrs.frozen(kw_only=True, slots=True)
class ConfChangeSingle:
    type: ChangeType
    node: NodeId


def _singles(changes: Iterable[ConfChangeSingle]) -> tuple[ConfChangeSingle, ...]:
    return tuple(changes)


@attrs.frozen(kw_only=True, slots=True)
class ConfChange:
    """Changes to apply together. No changes at all means "leave the joint configuration"."""

    changes: tuple[ConfChangeSingle, ...] = attrs.field(default=(), converter=_singles)
    transition: Transition = Transition.AUTO

    @classmethod
    def add_voter(cls, node: str) -> ConfChange:
        return cls(changes=(ConfChangeSingle(type=ChangeType.ADD_VOTER, node=NodeId(node)),))

    @classmethod
    def add_learner(cls, node: str) -> ConfChange:
        return cls(changes=(ConfChangeSingle(type=ChangeType.ADD_LEARNER, node=NodeId(node)),))

    @classmethod
    def remove(cls, node: str) -> ConfChange:
        return cls(changes=(ConfChangeSingle(type=ChangeType.REMOVE_NODE, node=NodeId(node)),))

    @classmethod
    def leave_joint(cls) -> ConfChange:
        return cls()

    @property
    def is_leave_joint(self) -> bool:
        return not self.changes


def apply_conf_change(cs: ConfState, change: ConfChange) -> ConfState:
    """The configuration that results from applying ``change`` to ``cs``; raises ``InvalidConfChange``.

    A node that becomes a member gets the next incarnation number (see ``ConfState``); members keep theirs."""
    return _with_incarnations(cs, _members_after(cs, change))


def _with_incarnations(old: ConfState, new: ConfState) -> ConfState:
    """``new`` with the incarnations of ``old``'s members carried over and a fresh one for each node added."""
    was = set(old.members())
    incarnations: dict[str, int] = {}
    next_incarnation = old.next_incarnation
    for node in new.members():
        if node in was:
            incarnations[node] = old.incarnation(node)
        else:
            incarnations[node] = next_incarnation
            next_incarnation += 1
    return attrs.evolve(new, incarnations=incarnations, next_incarnation=next_incarnation)


def _members_after(cs: ConfState, change: ConfChange) -> ConfState:
    if change.is_leave_joint:
        if not cs.joint:
            raise InvalidConfChange("cannot leave a joint configuration: the configuration is not joint")
        return ConfState(voters=cs.voters, learners=set(cs.learners) | set(cs.learners_next))
    if cs.joint:
        raise InvalidConfChange(
            "a joint configuration is in effect: leave it (an empty conf change) before proposing another change"
        )
    old_voters = set(cs.voters)
    voters = set(cs.voters)
    learners = set(cs.learners)
    for single in change.changes:
        node = single.node
        if not isinstance(node, str) or not node:
            raise InvalidConfChange(f"a conf change names an invalid node id {node!r}")
        if single.type == ChangeType.ADD_VOTER:
            voters.add(node)
            learners.discard(node)
        elif single.type == ChangeType.ADD_LEARNER:
            voters.discard(node)
            learners.add(node)
        elif single.type == ChangeType.REMOVE_NODE:
            voters.discard(node)
            learners.discard(node)
        else:
            raise InvalidConfChange(f"unknown conf change type {single.type!r}")
    if not voters:
        raise InvalidConfChange("the change would remove every voter; a group needs at least one")
    changed_voters = len(old_voters ^ voters)
    joint = change.transition != Transition.AUTO or changed_voters > 1
    if not joint:
        return ConfState(voters=voters, learners=learners)
    # Entering a joint configuration: the outgoing half is the old voter set. A node demoted from voter to
    # learner stays a voter of the outgoing half until the joint configuration is left, so it is parked in
    # learners_next rather than learners (a node is never a learner and a voter of the same configuration).
    learners_next = learners & old_voters
    return ConfState(
        voters=voters,
        learners=learners - old_voters,
        voters_outgoing=old_voters,
        learners_next=learners_next,
        auto_leave=change.transition != Transition.JOINT_EXPLICIT,
    )


def check_incarnations(incarnations: Any, next_incarnation: Any, error: type[Exception]) -> None:
    """Raise ``error`` unless these are a configuration's well-formed incarnation fields."""
    if type(next_incarnation) is not int or not 1 <= next_incarnation < 1 << 63:
        raise error("a configuration's next incarnation must be a positive 63-bit integer")
    if not isinstance(incarnations, list) or len(incarnations) > 1024:
        raise error("a configuration's incarnations must be a list of [node, incarnation] pairs")
    for pair in incarnations:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or type(pair[0]) is not str
            or not pair[0]
            or type(pair[1]) is not int
            or not 1 <= pair[1] < next_incarnation
        ):
            raise error(f"malformed incarnation {pair!r:.80} (a node id and a number below the next incarnation)")


def encode_conf_change(change: ConfChange, result: ConfState) -> bytes:
    """The data of a conf-change log entry: the change and the configuration it results in."""
    return cbor2.dumps([[[int(s.type), s.node] for s in change.changes], int(change.transition), result.to_list()])


def decode_conf_change(data: bytes) -> tuple[ConfChange, ConfState]:
    """Inverse of ``encode_conf_change``; raises ``ValueError`` describing what is wrong with ``data``."""
    try:
        obj: Any = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for garbage; all mean the same here
        raise ValueError(f"conf change data is not valid CBOR ({exc})") from None
    if not isinstance(obj, list) or len(obj) != 3:
        raise ValueError("conf change data must be a list of [changes, transition, configuration]")
    raw_changes, transition, conf = obj
    if not isinstance(raw_changes, list) or type(transition) is not int or transition not in (0, 1, 2):
        raise ValueError("conf change data has malformed changes or transition")
    singles = []
    for item in raw_changes:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError("a single conf change must be [type, node]")
        kind, node = item
        if type(kind) is not int or kind not in (0, 1, 2) or type(node) is not str or not node:
            raise ValueError(f"malformed single conf change {item!r:.80}")
        singles.append(ConfChangeSingle(type=ChangeType(kind), node=NodeId(node)))
    if not isinstance(conf, list) or len(conf) not in (5, 7):
        raise ValueError("conf change data must carry a configuration of 5 or 7 fields")
    for part in conf[:4]:
        if not isinstance(part, list) or not all(type(v) is str and v for v in part):
            raise ValueError("a configuration's member lists must hold non-empty node id strings")
    if type(conf[4]) is not bool:
        raise ValueError("a configuration's auto_leave must be a boolean")
    if len(conf) == 7:
        check_incarnations(conf[5], conf[6], ValueError)
    result = ConfState.from_list(conf)
    if not result.voters:
        raise ValueError("a configuration must have at least one voter")
    if set(result.voters) & set(result.learners):
        raise ValueError("a configuration lists a node as both voter and learner")
    return ConfChange(changes=singles, transition=Transition(transition)), result
