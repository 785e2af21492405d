"""The records the wire hands to the layers above: who the peer is, a call as a handler sees it, a reply.

Owns only these shapes and the handler signatures; no behaviour, no I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import trio

from borough.wire import codec as c

if TYPE_CHECKING:
    from borough.wire.streams import MuxStream

__all__ = ["CallHandler", "IncomingCall", "MessageHandler", "PeerInfo", "Reply", "StreamHandler", "StreamSource"]

StreamSource = AsyncIterable[bytes] | AsyncIterable[bytearray] | trio.abc.ReceiveStream
"""What may be attached to a call or reply: an async iterable of bytes, or a trio ReceiveStream."""

S = TypeVar("S")


@attrs.frozen(kw_only=True)
class PeerInfo:
    """Who is at the other end, from its handshake. ``is_client`` for a process that is not a member."""

    node_id: str | None
    address: str | None
    cluster_id: str | None
    is_client: bool

    @classmethod
    def from_hello(cls, hello: c.Hello) -> PeerInfo:
        return cls(
            node_id=hello.node_id, address=hello.address, cluster_id=hello.cluster_id, is_client=hello.node_id is None
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


@attrs.frozen(kw_only=True)
class IncomingCall:
    """A call as the handler sees it. ``streams`` are closed when the handler returns."""

    peer: PeerInfo
    body: Any
    streams: Mapping[str, trio.abc.ReceiveStream]


CallHandler = Callable[[IncomingCall], Awaitable[Any]]
MessageHandler = Callable[[Any], None]
StreamHandler = Callable[["MuxStream"], Awaitable[None]]
