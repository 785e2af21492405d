"""The records the wire hands to the layers above: who the peer is, a call as a handler sees it, a reply.

Owns only these shapes and the handler signatures; no behaviour, no I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import attrs
import trio

from borough.wire import codec as c

if TYPE_CHECKING:
    from borough.wire.streams import MuxStream

__all__ = [
    "CallHandler",
    "DispatchHooks",
    "IncomingCall",
    "MessageHandler",
    "PeerCertificate",
    "PeerInfo",
    "PeerRole",
    "Reply",
    "StreamHandler",
    "StreamSource",
]

StreamSource = AsyncIterable[bytes] | AsyncIterable[bytearray] | trio.abc.ReceiveStream
"""What may be attached to a call or reply: an async iterable of bytes, or a trio ReceiveStream."""

S = TypeVar("S")


PeerRole = Literal["node", "client"]
"""What a connection may do: a member ``node`` (Raft, SWIM, join, snapshots and everything a client may do) or a
``client`` (requests and key/value operations only)."""


def _declared_role(hello: c.Hello) -> PeerRole:
    return "client" if hello.node_id is None else "node"


@attrs.frozen(kw_only=True)
class PeerCertificate:
    """What a verified TLS certificate says about the peer: its role and its subject's common name."""

    role: PeerRole
    name: str


@attrs.frozen(kw_only=True)
class PeerInfo:
    """Who is at the other end. ``node_id``, ``address`` and ``cluster_id`` come from its handshake; ``role`` from
    its certificate under TLS (the handshake must declare the same role, see ``tls.role_refusal``), else from the
    handshake (a HELLO without a node id is a client). ``certificate_name`` is the certificate's common name (None
    without TLS). ``is_client`` is ``role == "client"``."""

    node_id: str | None
    address: str | None
    cluster_id: str | None
    is_client: bool
    role: PeerRole = attrs.field()
    certificate_name: str | None = None

    @role.default
    def _role_from_declaration(self) -> PeerRole:
        return "client" if self.is_client else "node"

    @role.validator
    def _check_role(self, _attr: Any, value: PeerRole) -> None:
        if (value == "client") != self.is_client:
            raise ValueError(f"PeerInfo role {value!r} contradicts is_client={self.is_client}")

    @classmethod
    def from_hello(cls, hello: c.Hello, certificate: PeerCertificate | None = None) -> PeerInfo:
        """The peer of a completed handshake; ``certificate`` is its verified TLS certificate, if any (its role
        must agree with the HELLO's declaration: the handshake refuses a peer whose does not)."""
        role = certificate.role if certificate is not None else _declared_role(hello)
        return cls(
            node_id=hello.node_id,
            address=hello.address,
            cluster_id=hello.cluster_id,
            is_client=role == "client",
            role=role,
            certificate_name=certificate.name if certificate is not None else None,
        )

    def __str__(self) -> str:
        who = self.node_id if self.node_id is not None else "client"
        return f"{who}@{self.address}" if self.address else who


@attrs.frozen
class Reply(Generic[S]):
    """A call's answer: ``body`` (any CBOR) and named byte streams. A handler returns ``Reply(body,
    streams={"name": source})``; the caller receives ``Reply[trio.abc.ReceiveStream]``.

    A caller must read each reply stream to its end or close it: an unread reply stream holds a call slot on
    the replying peer. ``async with reply:`` (or ``await reply.aclose()``) closes whatever is left."""

    body: Any = None
    streams: Mapping[str, S] = attrs.field(factory=dict)

    async def aclose(self) -> None:
        """Close every stream (those with an ``aclose``); already finished ones are unaffected."""
        for stream in self.streams.values():
            # Forceful, like trio.aclose_forcefully: every stream gets closed even if we are being cancelled.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with trio.CancelScope() as cs:
                    cs.cancel()
                    await aclose()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Reply[S]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class CallAnswer(Protocol):
    """Answers one inbound call taken by a quick handler (see ``open_mux``): exactly one of the two, once."""

    def reply(self, body: Any) -> None: ...

    def fail(self, error: BaseException) -> None: ...


class CallBound:
    """The cancel scope the wire runs one inbound call in (it cancels the handler when the caller gives up),
    lent to the handler to bound its own run time with, so a call costs one cancel scope, not two: after
    ``limit(deadline, expired)`` the handler is cancelled once ``deadline`` passes and the caller gets the error
    ``expired()`` returns."""

    __slots__ = ("expired", "scope")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.expired: Callable[[], BaseException] | None = None

    def limit(self, deadline: float, expired: Callable[[], BaseException]) -> None:
        self.scope.deadline = min(self.scope.deadline, deadline)
        self.expired = expired


@attrs.frozen(kw_only=True)
class IncomingCall:
    """A call as the handler sees it. ``streams`` are closed when the handler returns. ``bound`` (None when the
    call does not come from the wire) bounds the handler's run time (see ``CallBound``)."""

    peer: PeerInfo
    body: Any
    streams: Mapping[str, trio.abc.ReceiveStream]
    bound: CallBound | None = None


CallHandler = Callable[[IncomingCall], Awaitable[Any]]
#: Takes an inbound call without a task of its own (True), answering it later through ``CallAnswer``; or leaves
#: it (False) to the call handler. Runs in the connection's reader: it must not block, and must not raise.
QuickCallHandler = Callable[[IncomingCall, CallAnswer], bool]
MessageHandler = Callable[[Any], None]


class DispatchHooks(Protocol):
    """Told when a connection's reader starts (``enter``) and ends (``leave``) a run of frames it dispatches in one
    step of the event loop: between the two, the handlers it calls run synchronously and no other task runs. Work
    they queue may wait for ``leave`` and be done there, in the reader's own step, instead of by waking a task of
    its own a pass of the event loop later (a node's Raft rounds: ``borough.node.rounds``). Both run in the
    reader: they must not block, and must not raise."""

    def enter(self) -> None: ...

    def leave(self) -> None: ...


StreamHandler = Callable[["MuxStream"], Awaitable[None]]
