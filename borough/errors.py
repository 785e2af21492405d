"""The errors Borough raises: one root, ``BoroughError``, and a child per thing that can go wrong.

Every error says what happened and what to do about it. ``NotLeader`` is internal: routing retries it and
callers of the public API never see it. This module knows nothing of the rest of Borough, so every layer
(the sans-IO cores included) may import it.
"""

from __future__ import annotations

__all__ = [
    "BoroughError",
    "ConfigError",
    "LocalProtocolError",
    "NotFound",
    "NotDelivered",
    "NotLeader",
    "Overloaded",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "Forbidden",
    "StorageError",
    "Timeout",
    "Unavailable",
]


class BoroughError(Exception):
    """The root of every error Borough raises on purpose.

    ``provably_not_run`` is True for the errors that prove the operation took no effect anywhere (it was
    refused before anything was proposed, or never left this process). Routing retries exactly those after a
    write or a request; for any other error the outcome of a write is unknown. It is data, so the decision
    never hangs on the order of ``except`` clauses."""

    provably_not_run: bool = False


class NotFound(BoroughError, KeyError):
    """A key is not in the partition. Also a ``KeyError``, so ``except KeyError`` works."""

    def __init__(self, key: object, partition: str | None = None) -> None:
        super().__init__(key)
        self.key = key
        self.partition = partition

    def __str__(self) -> str:
        # KeyError.__str__ would print only repr(key); say where we looked.
        where = f" in partition {self.partition!r}" if self.partition is not None else ""
        return f"key {self.key!r} not found{where}"


class Timeout(BoroughError, TimeoutError):
    """An operation did not finish within its deadline (the caller's cancel scope or the default timeout)."""


class Unavailable(BoroughError):
    """No quorum or no leader could be reached in time: the partition cannot serve right now; retry later."""


class Overloaded(BoroughError):
    """A bounded queue or the uncommitted-bytes cap is full: back off and retry. Raised before anything is
    proposed, so the operation did not run."""

    provably_not_run = True


class NotDelivered(Unavailable):
    """The call never left this process (no usable connection to the peer): retrying it elsewhere is safe,
    unlike an ``Unavailable`` raised once the call was sent, which may or may not have taken effect."""

    provably_not_run = True


class RemoteError(BoroughError):
    """An error from the far side that has no class of its own here: a request handler's exception
    (``from_handler``), or one of a node's own refusals (``type_name`` NoHandler, NotAMember, SystemError,
    InternalError, StaleWrite). ``type_name`` and ``message`` describe it."""

    def __init__(self, type_name: str, message: str, *, from_handler: bool = True) -> None:
        what = f"the request handler raised {type_name}" if from_handler else type_name
        super().__init__(f"{what}: {message}")
        self.type_name = type_name
        self.message = message
        self.from_handler = from_handler


class ProtocolError(BoroughError):
    """A peer and this node disagree about the wire protocol."""


class LocalProtocolError(ProtocolError):
    """This node tried to do something the protocol forbids (a bug in Borough, or misuse of a low-level API)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids; the connection to it is closed."""


class StorageError(BoroughError):
    """The data directory could not be read or written (disk full, I/O error, corruption)."""


class ConfigError(BoroughError):
    """A setting or the data directory is not usable as given; the message says which and what to do."""


class Forbidden(BoroughError):
    """The caller's role does not allow this operation: a client sent what only a member node may send, or a
    process that is not a member of the cluster spoke for one. Nothing ran; retrying does not help."""


class NotLeader(BoroughError):
    """Internal: this replica is not the partition's leader. ``leader`` is a hint (node id) or None.

    Raised before anything is proposed, or once a proposal is provably lost (an entry of a later term was
    committed at or before its index), so the operation did not run."""

    provably_not_run = True

    def __init__(self, partition: str, leader: str | None = None, leader_address: str | None = None) -> None:
        hint = f"; the leader is probably {leader}" if leader else "; no leader is known yet"
        super().__init__(f"this node is not the leader of partition {partition!r}{hint}")
        self.partition = partition
        self.leader = leader
        self.leader_address = leader_address
