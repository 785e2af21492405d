"""The handshake: exchange HELLO records over a fresh stream and decide whether to go on.

Owns the order (the dialer speaks first, the acceptor answers with its own HELLO even when refusing, so the
dialer learns why) and the translation of a refusal into ``ConfigError`` (another cluster, or a peer whose TLS
certificate does not allow what its HELLO declares) or ``RemoteProtocolError`` (incompatible versions). The rules
themselves live in ``codec.handshake_refusal`` and, for certificates, in the ``authorize`` check the transport
passes (``tls.role_refusal``).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from borough.errors import ConfigError, RemoteProtocolError
from borough.wire import codec as c
from borough.wire.settings import WireSettings

__all__ = ["handshake", "make_hello"]


def make_hello(settings: WireSettings, *, cluster_id: str | None, node_id: str | None, address: str | None) -> c.Hello:
    """Our handshake record, announcing the receive limits in ``settings``."""
    return c.Hello(
        cluster_id=cluster_id,
        node_id=node_id,
        address=address,
        window=settings.window,
        max_frame_size=settings.max_frame_size,
    )


async def handshake(
    stream: trio.abc.Stream,
    *,
    role: c.Role,
    local: c.Hello,
    settings: WireSettings,
    authorize: Callable[[c.Hello], str | None] | None = None,
) -> c.FrameCodec:
    """Exchange HELLOs (the dialer speaks first) and return the codec, ready for ``open_mux``.

    Raises ``ConfigError`` when the peer belongs to another cluster or ``authorize(peer_hello)`` gives a reason
    to refuse it, ``RemoteProtocolError`` when it speaks an incompatible version or garbage,
    ``trio.BrokenResourceError`` if the stream breaks. The caller bounds the time and closes the stream on failure.
    """
    codec = c.FrameCodec(
        role,
        max_frame_size=settings.max_frame_size,
        max_attached_streams=settings.max_attached_streams,
        max_frame_items=settings.max_frame_items,
    )
    if role is c.Role.DIALER:
        await stream.send_all(codec.send(local))
    while True:
        event = codec.next_event()
        if isinstance(event, c.NeedData):
            codec.receive_data(await stream.receive_some(settings.read_size))
            continue
        assert isinstance(event, c.Hello)  # the codec only lets a Hello through first
        break
    denied = authorize(event) if authorize is not None else None
    refusal = denied or c.handshake_refusal(local, event)
    if role is c.Role.ACCEPTOR:
        await stream.send_all(codec.send(local))
    if refusal is not None:
        try:
            await stream.send_all(codec.send(c.GoAway(reason=f"refused: {refusal}")))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        if denied is not None or "cluster" in refusal:
            raise ConfigError(refusal)
        raise RemoteProtocolError(refusal)
    return codec
