"""Streaming a replica's applied state to a follower that is too far behind, and receiving one.

This module owns both ends of a snapshot transfer: the sender reads a point-in-time snapshot of the
partition's data in chunks and streams it, length-prefixed, beside one call; the receiver stages the chunks in
the store and then offers the snapshot to its Raft core, which decides whether to install it. Transfers are
bounded (a few at once per node, one per follower and partition) and every failure is reported to the core so
replication resumes by probing. It knows nothing of routing or handlers.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from borough.calls import SNAPSHOT, Op, encode_call
from borough.errors import BoroughError, RemoteProtocolError
from borough.raft.messages import InstallSnapshot, decode_message, encode_message
from borough.replica import Replica

if TYPE_CHECKING:
    from borough.node import Node

__all__ = ["Snapshots"]

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 64 << 20
SEND_CONCURRENCY = 4
_LEN = struct.Struct(">I")


class Snapshots:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._sending: set[tuple[str, str]] = set()
        self._limit = trio.Semaphore(SEND_CONCURRENCY)
        self.sent = 0
        self.received = 0

    # --- sending ----------------------------------------------------------------------------------------

    def start_send(self, replica: Replica, message: InstallSnapshot) -> None:
        key = (replica.name, message.to)
        if key in self._sending:
            return  # one transfer per follower and partition; the core waits for its report
        self._sending.add(key)
        self.node.nursery.start_soon(self._send, replica, message, key)

    async def _send(self, replica: Replica, message: InstallSnapshot, key: tuple[str, str]) -> None:
        ok = False
        try:
            async with self._limit:
                address = self.node.directory.address_of(message.to)
                if address is None:
                    raise BoroughError(f"no address is known for node {message.to}")
                store = self.node.store
                reader = store.snapshot_chunks(replica.name, max_chunk_bytes=CHUNK_BYTES)
                # The reader captured the data at its applied index; describe exactly that state.
                meta = replica.raw.snapshot_meta_at(reader.applied_index)
                out = attrs.evolve(message, meta=meta)
                with trio.move_on_after(self.node.config.request_timeout * 6):
                    await self.node.transport.call(
                        address,
                        encode_call(replica.name, Op(SNAPSHOT, [encode_message(out)])),
                        streams={"data": _framed(reader)},
                    )
                    ok = True
                    self.sent += 1
        except (BoroughError, OSError) as exc:
            logger.warning("snapshot of %r to %s failed: %s", replica.name, message.to, exc)
        finally:
            self._sending.discard(key)
            replica.raw.report_snapshot(message.to, ok)
            replica._wake()

    # --- receiving --------------------------------------------------------------------------------------

    async def receive(self, partition: str, args: list[Any], streams: Mapping[str, trio.abc.ReceiveStream]) -> None:
        if len(args) != 1 or "data" not in streams:
            raise RemoteProtocolError("a snapshot call takes [install_snapshot_message] and a 'data' stream")
        message = decode_message(args[0])
        if type(message) is not InstallSnapshot or message.to != self.node.node_id:
            raise RemoteProtocolError(
                f"a snapshot call must carry an InstallSnapshot for this node, not {message!r:.100}"
            )
        replica = await self.node.local_replica(partition, empty_ok=True)
        install = replica.begin_install()
        try:
            async for chunk in _unframed(streams["data"]):
                install.add_chunk(chunk)
        except BaseException:
            install.abort()
            raise
        replica.offer_snapshot(install, message)
        self.received += 1


async def _framed(reader: Any) -> AsyncIterator[bytes]:
    try:
        for chunk in reader:
            yield _LEN.pack(len(chunk)) + chunk
            await trio.lowlevel.checkpoint()
    finally:
        reader.close()


async def _unframed(stream: trio.abc.ReceiveStream) -> AsyncIterator[bytes]:
    buffer = bytearray()
    while True:
        data = await stream.receive_some(1 << 16)
        if not data:
            if buffer:
                raise RemoteProtocolError("a snapshot stream ended in the middle of a chunk")
            return
        buffer += data
        while len(buffer) >= 4:
            (size,) = _LEN.unpack_from(buffer)
            if size > MAX_CHUNK_BYTES:
                raise RemoteProtocolError(f"a snapshot chunk of {size} bytes exceeds the limit of {MAX_CHUNK_BYTES}")
            if len(buffer) < 4 + size:
                break
            chunk = bytes(buffer[4 : 4 + size])
            del buffer[: 4 + size]
            yield chunk
