"""The frame codec's vocabulary: frame kinds, connection roles and the events the codec produces and consumes.

Plain frozen records, no behaviour and no I/O (sans-IO like ``codec.py``, which re-exports all of it).
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

__all__ = [
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "Call",
    "ConnectionClosed",
    "Data",
    "End",
    "Event",
    "GoAway",
    "Hello",
    "Kind",
    "Message",
    "NeedData",
    "Open",
    "Ping",
    "Pong",
    "Reply",
    "Reset",
    "Role",
    "Stop",
    "Window",
]

PROTOCOL_VERSION: Final = 1
MIN_PROTOCOL_VERSION: Final = 1


class Kind(enum.IntEnum):
    HELLO = 0
    OPEN = 1
    DATA = 2
    END = 3
    RESET = 4
    STOP = 5
    WINDOW = 6
    CALL = 7
    REPLY = 8
    MESSAGE = 9
    PING = 10
    PONG = 11
    GOAWAY = 12


class Role(enum.Enum):
    """Which end of the connection we are: the dialer opens odd stream ids, the acceptor even ones."""

    DIALER = 1
    ACCEPTOR = 0


class NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()
"""Returned by ``next_event`` when a whole frame has not arrived yet: feed more with ``receive_data``."""


# ---------------------------------------------------------------------------------------------------- events


@attrs.frozen(kw_only=True)
class Hello:
    """The handshake record. ``cluster_id``/``node_id``/``address`` are None for a node that has not joined a
    cluster yet / a client that is not a member / a side that does not listen. ``window`` and
    ``max_frame_size`` are the sender's receive limits, which the other side must respect."""

    version: int = PROTOCOL_VERSION
    min_version: int = MIN_PROTOCOL_VERSION
    cluster_id: str | None
    node_id: str | None
    address: str | None
    window: int
    max_frame_size: int


@attrs.frozen(kw_only=True)
class Open:
    stream_id: int
    header: Any


@attrs.frozen(kw_only=True)
class Data:
    stream_id: int
    data: bytes


@attrs.frozen(kw_only=True)
class End:
    stream_id: int


@attrs.frozen(kw_only=True)
class Reset:
    """``error`` is None (plain abort, e.g. a cancelled call) or ``{"type": str, "message": str, "fields": map}``,
    which ``errors_codec`` turns back into an exception."""

    stream_id: int
    error: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Stop:
    stream_id: int


@attrs.frozen(kw_only=True)
class Window:
    stream_id: int
    credit: int


@attrs.frozen(kw_only=True)
class Call:
    stream_id: int
    body: Any
    streams: dict[str, int]


@attrs.frozen(kw_only=True)
class Reply:
    stream_id: int
    body: Any
    streams: dict[str, int]


@attrs.frozen(kw_only=True)
class Message:
    body: Any


@attrs.frozen(kw_only=True)
class Ping:
    nonce: int


@attrs.frozen(kw_only=True)
class Pong:
    nonce: int


@attrs.frozen(kw_only=True)
class GoAway:
    reason: str


@attrs.frozen(kw_only=True)
class ConnectionClosed:
    """The peer closed its side cleanly, at a frame boundary."""


Event = (
    Hello | Open | Data | End | Reset | Stop | Window | Call | Reply | Message | Ping | Pong | GoAway | ConnectionClosed
)
