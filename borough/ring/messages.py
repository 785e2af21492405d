"""SWIM messages: what failure detectors say to each other, and their CBOR list form.

This module owns the shapes of the six SWIM messages (``Ping``, ``Ack``, ``PingReq``, ``Nack``, ``Gossip``, ``Sync``),
the piggybacked membership ``Update`` and the ``Liveness`` values, plus ``encode_message``/``decode_message``.
Decoding validates everything (types, ranges, sizes) and raises ``RemoteProtocolError`` on garbage, because a
peer's bytes are untrusted. It knows nothing of timers, probes or transports: ``membership.py`` decides what
to send and when.

Every message carries its sender's node id and incarnation (a message is the sender's own proof that it is
alive at that incarnation), the sender's member-table version (so a node that sees a newer version knows to
refresh its table from ``_system``) and a bounded list of piggybacked updates.

Wire form: ``[kind, seq, source, source_incarnation, table_version, [updates...], *kind-specific fields]``
with each update ``[node_id, incarnation, liveness, accuser-or-null]``.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from borough.errors import RemoteProtocolError
from borough.ids import NodeId
from borough.ring.members import MAX_ADDRESS_LEN, MAX_NODE_ID_LEN

__all__ = [
    "MAX_SYNC_UPDATES",
    "MESSAGE_TYPES",
    "MAX_UPDATES",
    "Ack",
    "Gossip",
    "Liveness",
    "Nack",
    "Ping",
    "PingReq",
    "SwimMessage",
    "Sync",
    "Update",
    "decode_message",
    "encode_message",
]

# A message never carries more piggybacked updates than this; a peer that sends more is broken or hostile.
MAX_UPDATES = 64
# A Sync carries a whole view (one entry per member); bigger clusters send a random sample of this many.
MAX_SYNC_UPDATES = 1024
_MAX_U63 = 2**63 - 1


class Liveness(enum.IntEnum):
    """What the failure detector believes about a member. Ordered: at one incarnation a later state wins."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2


@attrs.frozen(kw_only=True, slots=True)
class Update:
    """A piggybacked membership claim: ``node_id`` is ``liveness`` at ``incarnation``. ``accuser`` names who
    suspected or declared it (it counts independent confirmations of a suspicion); None for ALIVE."""

    node_id: NodeId
    incarnation: int
    liveness: Liveness
    accuser: NodeId | None = None

    def to_list(self) -> list[Any]:
        return [self.node_id, self.incarnation, int(self.liveness), self.accuser]


@attrs.frozen(kw_only=True, slots=True)
class Ping:
    """A probe: the ``target`` answers with an ``Ack`` carrying the same ``seq``. ``target`` is the node id the
    sender means, so a node that took over the address of another ignores probes meant for it."""

    seq: int
    source: NodeId
    source_incarnation: int
    table_version: int
    updates: tuple[Update, ...] = ()
    target: NodeId


@attrs.frozen(kw_only=True, slots=True)
class Ack:
    """The answer to a ``Ping`` (or, forwarded by an intermediary, to a ``PingReq``), echoing its ``seq``."""

    seq: int
    source: NodeId
    source_incarnation: int
    table_version: int
    updates: tuple[Update, ...] = ()


@attrs.frozen(kw_only=True, slots=True)
class PingReq:
    """An indirect probe: "please ping ``target`` at ``target_address`` for me and forward its ack with my
    ``seq``". The intermediary answers with a ``Nack`` if the target does not answer in time."""

    seq: int
    source: NodeId
    source_incarnation: int
    table_version: int
    updates: tuple[Update, ...] = ()
    target: NodeId
    target_address: str


@attrs.frozen(kw_only=True, slots=True)
class Nack:
    """From an intermediary: "I could not reach the target of your ``PingReq`` ``seq``". It tells the prober
    that the intermediary, at least, is reachable (Lifeguard's local health awareness counts these)."""

    seq: int
    source: NodeId
    source_incarnation: int
    table_version: int
    updates: tuple[Update, ...] = ()


@attrs.frozen(kw_only=True, slots=True)
class Gossip:
    """Updates only: sent to a few random members each gossip interval while there is news to spread."""

    seq: int = 0
    source: NodeId
    source_incarnation: int
    table_version: int
    updates: tuple[Update, ...] = ()


@attrs.frozen(kw_only=True, slots=True)
class Sync:
    """Anti-entropy (memberlist's push-pull): the sender's whole view, one update per member, itself
    included. The receiver merges it and, unless ``reply`` is set, answers with its own view. It repairs what
    gossip cannot: news older than its retransmission budget, e.g. deaths that happened during a partition."""

    seq: int = 0
    source: NodeId
    source_incarnation: int
    table_version: int
    updates: tuple[Update, ...] = ()
    reply: bool


SwimMessage = Ping | Ack | PingReq | Nack | Gossip | Sync

_KINDS: dict[type[Any], int] = {Ping: 1, Ack: 2, PingReq: 3, Nack: 4, Gossip: 5, Sync: 6}
_BY_KIND: dict[int, type[Any]] = {v: k for k, v in _KINDS.items()}
MESSAGE_TYPES: tuple[type[Any], ...] = tuple(_KINDS)  # for isinstance checks: every SWIM message class
_EXTRA_FIELDS: dict[int, int] = {1: 1, 2: 0, 3: 2, 4: 0, 5: 0, 6: 1}


def encode_message(msg: SwimMessage) -> list[Any]:
    """The CBOR-encodable list form of a SWIM message."""
    kind = _KINDS[type(msg)]
    out: list[Any] = [
        kind,
        msg.seq,
        msg.source,
        msg.source_incarnation,
        msg.table_version,
        [u.to_list() for u in msg.updates],
    ]
    if isinstance(msg, Ping):
        out.append(msg.target)
    elif isinstance(msg, PingReq):
        out += [msg.target, msg.target_address]
    elif isinstance(msg, Sync):
        out.append(msg.reply)
    return out


def _u63(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_U63:
        raise RemoteProtocolError(f"SWIM message field {what} must be an integer in [0, 2**63), got {value!r:.100}")
    return value


def _node_id(value: object, what: str) -> NodeId:
    if type(value) is not str or not value or len(value) > MAX_NODE_ID_LEN:
        raise RemoteProtocolError(
            f"SWIM message field {what} must be a non-empty string of at most {MAX_NODE_ID_LEN} characters, "
            f"got {value!r:.100}"
        )
    return NodeId(value)


def _address(value: object) -> str:
    if type(value) is not str or not value or len(value) > MAX_ADDRESS_LEN:
        raise RemoteProtocolError(f"SWIM target address must be a non-empty string, got {value!r:.100}")
    return value


def _update(obj: object) -> Update:
    if type(obj) is not list or len(obj) != 4:
        raise RemoteProtocolError(f"a SWIM update must be [node_id, incarnation, liveness, accuser], got {obj!r:.100}")
    liveness = obj[2]
    if type(liveness) is not int or liveness not in Liveness._value2member_map_:
        raise RemoteProtocolError(f"SWIM update liveness must be 0, 1 or 2, got {liveness!r:.100}")
    accuser = None if obj[3] is None else _node_id(obj[3], "accuser")
    return Update(
        node_id=_node_id(obj[0], "update node id"),
        incarnation=_u63(obj[1], "incarnation"),
        liveness=Liveness(liveness),
        accuser=accuser,
    )


def decode_message(obj: object) -> SwimMessage:
    """Decode and validate a SWIM message from its list form; anything malformed raises ``RemoteProtocolError``
    saying what was wrong (the caller drops the message and may close the peer's connection)."""
    if type(obj) is not list or len(obj) < 6:
        raise RemoteProtocolError(f"a SWIM message must be a list of at least 6 fields, got {obj!r:.100}")
    kind = obj[0]
    if type(kind) is not int or kind not in _BY_KIND:
        raise RemoteProtocolError(f"unknown SWIM message kind {kind!r:.100}")
    if len(obj) != 6 + _EXTRA_FIELDS[kind]:
        raise RemoteProtocolError(
            f"a SWIM message of kind {kind} has {6 + _EXTRA_FIELDS[kind]} fields, got {len(obj)}: {obj!r:.100}"
        )
    raw_updates = obj[5]
    cap = MAX_SYNC_UPDATES if kind == 6 else MAX_UPDATES
    if type(raw_updates) is not list or len(raw_updates) > cap:
        raise RemoteProtocolError(f"SWIM updates must be a list of at most {cap}, got {raw_updates!r:.100}")
    common: dict[str, Any] = {
        "seq": _u63(obj[1], "seq"),
        "source": _node_id(obj[2], "source"),
        "source_incarnation": _u63(obj[3], "source_incarnation"),
        "table_version": _u63(obj[4], "table_version"),
        "updates": tuple(_update(u) for u in raw_updates),
    }
    if kind == 1:
        return Ping(target=_node_id(obj[6], "target"), **common)
    if kind == 3:
        return PingReq(target=_node_id(obj[6], "target"), target_address=_address(obj[7]), **common)
    if kind == 6:
        if type(obj[6]) is not bool:
            raise RemoteProtocolError(f"SWIM sync field reply must be a boolean, got {obj[6]!r:.100}")
        return Sync(reply=obj[6], **common)
    cls = _BY_KIND[kind]
    msg: SwimMessage = cls(**common)
    return msg
