"""Byte streams beside a body or reply: splitting them off a caller's dict and joining them back.

A body or reply ``{"...": ..., "streams": {name: source}}`` travels as the body without ``"streams"`` plus
named streams multiplexed on the node link. When the handler runs on the caller's own node, the sources never
touch the wire; ``IterableReceiveStream`` gives the handler the same ``trio.abc.ReceiveStream`` type it would
get from a remote caller. It knows nothing of operations or routing.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import trio

__all__ = ["IterableReceiveStream", "join_streams", "local_streams", "split_streams"]


def split_streams(body: Any) -> tuple[Any, dict[str, Any] | None]:
    """A body or reply ``{"...": ..., "streams": {name: source}}`` becomes (body without streams, streams)."""
    if isinstance(body, dict) and "streams" in body:
        streams = body["streams"]
        if not isinstance(streams, Mapping) or not all(isinstance(k, str) for k in streams):
            raise TypeError("'streams' must map names (str) to async iterables of bytes or trio ReceiveStreams")
        rest = {k: v for k, v in body.items() if k != "streams"}
        return rest, dict(streams) if streams else None
    return body, None


def join_streams(body: Any, streams: Mapping[str, trio.abc.ReceiveStream] | None) -> Any:
    if not streams:
        return body
    joined = dict(body) if isinstance(body, dict) else {"body": body}
    joined["streams"] = dict(streams)
    return joined


class IterableReceiveStream(trio.abc.ReceiveStream):
    """A ``trio.abc.ReceiveStream`` over an async iterable of bytes, for streams that never leave the node
    (a handler running on the caller's own node sees the same type as a remote one)."""

    def __init__(self, source: AsyncIterable[bytes] | trio.abc.ReceiveStream) -> None:
        self._source = source
        self._iter: AsyncIterator[bytes] | None = None
        self._buffer = b""
        self._done = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self._buffer and not self._done:
            if isinstance(self._source, trio.abc.ReceiveStream):
                chunk = await self._source.receive_some(max_bytes)
                if not chunk:
                    self._done = True
                return bytes(chunk)
            if self._iter is None:
                self._iter = aiter(self._source)
            try:
                while not self._buffer:
                    self._buffer = bytes(await anext(self._iter))
            except StopAsyncIteration:
                self._done = True
        if max_bytes is None or max_bytes >= len(self._buffer):
            chunk, self._buffer = self._buffer, b""
        else:
            chunk, self._buffer = self._buffer[:max_bytes], self._buffer[max_bytes:]
        return chunk

    async def aclose(self) -> None:
        self._done = True
        self._buffer = b""
        source = self._source
        closer = getattr(self._iter if self._iter is not None else source, "aclose", None)
        if closer is not None:
            await closer()
        elif isinstance(source, trio.abc.ReceiveStream):
            await source.aclose()
        await trio.lowlevel.checkpoint()


def local_streams(streams: Mapping[str, Any] | None) -> dict[str, trio.abc.ReceiveStream] | None:
    if not streams:
        return None
    return {
        name: s if isinstance(s, trio.abc.ReceiveStream) else IterableReceiveStream(s) for name, s in streams.items()
    }
