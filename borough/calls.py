"""The call protocol between nodes and clients, and the routed ``PartitionBackend`` both of them use.

This module owns what one operation looks like on the wire — ``[op, partition, args, seconds_left]`` with
streams attached beside it — how a body's or reply's ``"streams"`` entry is split off and joined back, and the
client side of every partition operation: build the op, route it to the leader (``borough.routing``), decode
the answer. What a node does when an op reaches it lives in ``borough.server``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import attrs
import trio

from borough.errors import NotFound
from borough.partition import Consistency, PartitionInfo, ScanRange
from borough.routing import Router

__all__ = [
    "Op",
    "RoutedBackend",
    "encode_call",
    "join_streams",
    "split_streams",
]

GET = "get"
WRITE = "write"
SCAN = "scan"
INFO = "info"
REQUEST = "request"
LEADER = "leader"
SYS_JOIN = "sys.join"
SYS_DIR = "sys.dir"
SYS_MEMBERS = "sys.members"
SNAPSHOT = "snap"
OPS = frozenset({GET, WRITE, SCAN, INFO, REQUEST, LEADER, SYS_JOIN, SYS_DIR, SYS_MEMBERS, SNAPSHOT})


#: Operations that may be sent twice without changing the outcome: reads, and _system operations whose
#: effect is the same however often they apply (join, register a partition). Writes and requests are not: a
#: put applied a second time after other writes undoes them, and a handler may do anything.
REPEATABLE = frozenset({GET, SCAN, INFO, LEADER, SYS_JOIN, SYS_DIR, SYS_MEMBERS})


@attrs.frozen(slots=True)
class Op:
    """One operation: its name, CBOR arguments, and for requests the streams attached to the body."""

    name: str
    args: list[Any]
    streams: Mapping[str, Any] | None = None

    @property
    def repeatable(self) -> bool:
        return self.name in REPEATABLE


def seconds_left() -> float | None:
    """The time left in the caller's innermost deadline, to bound the work on the far side too."""
    deadline = trio.current_effective_deadline()
    if math.isinf(deadline):
        return None
    return max(0.0, deadline - trio.current_time())


def encode_call(partition: str, op: Op) -> list[Any]:
    return [op.name, partition, op.args, seconds_left()]


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


class RoutedBackend:
    """Partition operations routed to the partition's leader, wherever it is (members and clients)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def kv_get(self, partition: str, key: str | bytes, consistency: Consistency) -> bytes | None:
        try:
            result = await self.router.run(partition, Op(GET, [key, consistency]), create=False)
        except NotFound:
            return None  # the partition was never created: nothing was ever written to it
        if result is not None and type(result) is not bytes:
            raise TypeError(f"a get answered {type(result).__name__}, expected encoded bytes")
        return result

    async def kv_write(self, partition: str, ops: list[list[Any]]) -> None:
        await self.router.run(partition, Op(WRITE, [ops]), create=True)

    async def kv_scan(
        self, partition: str, scan: ScanRange, limit: int, consistency: Consistency
    ) -> tuple[list[tuple[str | bytes, bytes | None]], bool]:
        try:
            page, more = await self.router.run(partition, Op(SCAN, [scan.to_list(), limit, consistency]), create=False)
        except NotFound:
            return [], False
        return [(k, v) for k, v in page], bool(more)

    async def partition_info(self, partition: str) -> PartitionInfo:
        result = await self.router.run(partition, Op(INFO, []), create=True)
        return PartitionInfo.from_list(result)

    async def request(self, partition: str, body: Any) -> Any:
        body, streams = split_streams(body)
        if streams is None:
            return await self.router.run(partition, Op(REQUEST, [body]), create=True)
        # Streams cannot be replayed: find the leader first, then send once (a request is retried only after
        # answers that prove it did not run, and NotLeader is raised before a handler reads anything).
        await self.router.run(partition, Op(LEADER, []), create=True)
        return await self.router.run(partition, Op(REQUEST, [body], streams), create=True)
