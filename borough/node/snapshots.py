"""Streaming a replica's applied state to a follower that is too far behind, and receiving one.

This module owns both ends of a snapshot transfer: the sender reads a point-in-time snapshot of the
partition's data in chunks and streams it, length-prefixed, beside one call; the receiver stages the chunks in
the store and then offers the snapshot to its Raft core, which decides whether to install it. Transfers are
bounded (``max_snapshot_sends`` at once per node, one per follower and partition, and a node-wide
``snapshot_bytes_per_second`` for the chunks it sends and another for those it receives; as many receives at
once, each buffering one chunk of at most ``MAX_CHUNK_BYTES``: a receiver past its bound answers Overloaded,
and the sender then streams fewer at once to it, see ``PeerWindows``) and every failure is reported to the core
so replication resumes by probing. Moving partitions must not starve foreground traffic: in production the
store work of a chunk (reading it out, writing it in) runs in a worker thread, never on the event loop. It
knows nothing of routing or handlers.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from borough.errors import BoroughError, Overloaded, RemoteProtocolError, Timeout, Unavailable
from borough.node.protocol import SNAPSHOT_TIMEOUTS, SendSnapshot, encode_call
from borough.node.records import MAX_WRITE_BYTES
from borough.node.replica import Replica
from borough.raft.messages import InstallSnapshot, decode_message, encode_message
from borough.store.snapshot import SnapshotReader

#: Sends a call with streams to an address (the transport's ``call``).
CallFn = Callable[..., Awaitable[Any]]
#: This node's replica of a partition for a snapshot meant for an incarnation, created empty if need be.
FindReplica = Callable[[str, int], Awaitable[Replica]]

__all__ = ["Snapshots"]

logger = logging.getLogger(__name__)

CHUNK_BYTES = 256 << 10
#: The largest chunk a receiver takes (a chunk holds at least one item: a write's worth, MAX_WRITE_BYTES at most).
MAX_CHUNK_BYTES = 2 * MAX_WRITE_BYTES
SEND_CONCURRENCY = 4
_LEN = struct.Struct(">I")


class Snapshots:
    def __init__(
        self,
        *,
        node_id: str,
        call: CallFn,
        address_of: Callable[[str], str | None],
        find_replica: FindReplica,
        nursery: trio.Nursery,
        timeout: float,
        max_sends: int = SEND_CONCURRENCY,
        max_receives: int = SEND_CONCURRENCY,
        bytes_per_second: float = 0.0,
        offload: bool = False,
    ) -> None:
        self._node_id = node_id
        self._call = call
        self._address_of = address_of
        self._find_replica = find_replica
        self._nursery = nursery
        self._timeout = timeout
        self._sending: set[tuple[str, str]] = set()
        self._limit = trio.Semaphore(max_sends)
        self._windows = PeerWindows(max_sends)
        self._max_receives = max_receives
        self._receiving = trio.Semaphore(max_receives)
        self._waiting = 0  # streams waiting for a receive slot (at most max_receives)
        self._rate = ByteRate(bytes_per_second)
        self._in_rate = ByteRate(bytes_per_second)
        self._offload = offload
        #: How long a transfer may go without moving a chunk before either end gives it up.
        self._idle = timeout * SNAPSHOT_TIMEOUTS
        self.sent = 0
        self.received = 0
        #: Chunk bytes streamed out and taken in (every transfer, finished or not).
        self.bytes_sent = 0
        self.bytes_received = 0

    # --- sending ----------------------------------------------------------------------------------------

    def sending_to(self, partition: str) -> list[str]:
        """The followers a snapshot of ``partition`` is streaming to now."""
        return sorted(to for name, to in self._sending if name == partition)

    def start_send(self, replica: Replica, message: InstallSnapshot) -> None:
        key = (replica.name, message.to)
        if key in self._sending:
            return  # one transfer per follower and partition; the core waits for its report
        self._sending.add(key)
        self._nursery.start_soon(self._send, replica, message, key)

    async def _send(self, replica: Replica, message: InstallSnapshot, key: tuple[str, str]) -> None:
        ok = False
        try:
            # Room at the receiver first (waiting there holds no slot another follower could use), then here.
            async with self._windows.slot(message.to), self._limit:
                address = self._address_of(message.to)
                if address is None:
                    raise BoroughError(f"no address is known for node {message.to}")
                reader = replica.host.store.snapshot_chunks(replica.name, max_chunk_bytes=CHUNK_BYTES)
                # The reader captured the data at its applied index; describe exactly that state.
                meta = replica.snapshot_meta_at(reader.applied_index)
                out = attrs.evolve(message, meta=meta)
                started, sent_before = trio.current_time(), self.bytes_sent
                # Bounded by its progress, not in all: a big partition at the node's byte rate may take long, but
                # a transfer that moves no chunk for SNAPSHOT_TIMEOUTS request timeouts is given up (the receiver
                # holds it to the same bound, so the call carries no deadline).
                with trio.CancelScope(deadline=started + self._idle) as progress:
                    to_inc, frm_inc = replica.incarnations.stamp(message.to)
                    call = SendSnapshot(encode_message(out), to_inc, frm_inc)
                    await self._call(
                        address,
                        encode_call(replica.name, call, None),
                        streams={"data": self._framed(reader, progress)},
                    )
                    ok = True
                    self.sent += 1
                    self._windows.completed(message.to)
                    logger.info(
                        "snapshot of %r sent to %s: %d bytes in %.1f s", replica.name, message.to,
                        self.bytes_sent - sent_before, trio.current_time() - started,
                    )  # fmt: skip
                if progress.cancelled_caught:
                    logger.warning(
                        "snapshot of %r to %s given up: no chunk moved for %g s", replica.name, message.to, self._idle
                    )
        except Overloaded as exc:
            self._windows.refused(message.to)
            logger.info("snapshot of %r to %s put off: %s", replica.name, message.to, exc)
        except (BoroughError, OSError) as exc:
            logger.warning("snapshot of %r to %s failed: %s", replica.name, message.to, exc)
        finally:
            self._sending.discard(key)
            replica.report_snapshot(message.to, ok)

    async def _framed(self, reader: SnapshotReader, progress: trio.CancelScope) -> AsyncIterator[bytes]:
        """The reader's chunks, length-prefixed, within the node's budget; each one taken moves ``progress``'s
        deadline on. Building a chunk (a LevelDB scan and its encoding) runs in a worker thread when offloading
        (production), so a stream never holds the event loop, and the foreground's messages go on while a
        partition is read out."""
        try:
            while True:
                chunk = await trio.to_thread.run_sync(next, reader, None) if self._offload else next(reader, None)
                if chunk is None:
                    return
                await self._rate.take(len(chunk))
                self.bytes_sent += len(chunk)
                yield _LEN.pack(len(chunk)) + chunk
                progress.deadline = trio.current_time() + self._idle
        finally:
            reader.close()

    # --- receiving --------------------------------------------------------------------------------------

    async def receive(
        self, partition: str, op: SendSnapshot, streams: Mapping[str, trio.abc.ReceiveStream] | None
    ) -> None:
        if not streams or "data" not in streams:
            raise RemoteProtocolError("a snapshot call takes [install_snapshot_message] and a 'data' stream")
        message = decode_message(op.message)
        if type(message) is not InstallSnapshot or message.to != self._node_id:
            raise RemoteProtocolError(
                f"a snapshot call must carry an InstallSnapshot for this node, not {message!r:.100}"
            )
        # Past the bound as many streams wait their turn (unread, so their senders are held back by flow control
        # and spend nothing more: a refused stream has already cost its sender a chunk, of data and of budget);
        # past those, or after waiting as long as a stream may go without moving, a sender is told to back off.
        if self._waiting >= self._max_receives:
            raise Overloaded(
                f"{self._node_id} is receiving {self._max_receives} snapshots already and as many wait; the "
                "leader retries later"
            )
        self._waiting += 1
        try:
            with trio.move_on_after(self._idle) as waited:
                await self._receiving.acquire()  # FIFO: streams get their turn in the order they came
        finally:
            self._waiting -= 1
        if waited.cancelled_caught:
            raise Overloaded(
                f"{self._node_id} has been receiving {self._max_receives} snapshots for {self._idle:g} s; the leader "
                "retries later"
            )
        try:
            await self._receive(partition, op, message, streams["data"])
        finally:
            self._receiving.release()

    async def _receive(
        self, partition: str, op: SendSnapshot, message: InstallSnapshot, data: trio.abc.ReceiveStream
    ) -> None:
        # The server does not bound a snapshot call in all (see ``_send``): we bound it by its progress.
        with trio.CancelScope(deadline=trio.current_time() + self._idle) as progress:
            await self._receive_within(partition, op, message, data, progress)
        if progress.cancelled_caught:
            raise Timeout(
                f"partition {partition!r}: the snapshot stream from {message.frm} moved no chunk for "
                f"{self._idle:g} s; given up"
            )

    async def _receive_within(
        self,
        partition: str,
        op: SendSnapshot,
        message: InstallSnapshot,
        data: trio.abc.ReceiveStream,
        progress: trio.CancelScope,
    ) -> None:
        replica = await self._find_replica(partition, op.to_inc)
        if not replica.incarnations.admit(message.frm, op.to_inc, op.frm_inc, member=op.member):
            raise Unavailable(
                f"partition {partition!r}: this snapshot is meant for, or comes from, an earlier incarnation "
                f"of a replica (to {op.to_inc}, from {op.frm_inc}): dropped"
            )
        # Beginning an install writes to the store, which may wait for a synced write: off the loop if we can.
        store = replica.host.store
        begun = await trio.to_thread.run_sync(store.begin_snapshot_install, partition) if self._offload else None
        try:
            install = replica.begin_install(begun)
        except BaseException:
            if begun is not None:
                begun.abort()
            raise
        try:
            async with contextlib.aclosing(_unframed(data)) as chunks:
                async for chunk in chunks:
                    # Reading on waits while the node's budget is spent; the stream's credit window then
                    # holds the sender back too.
                    await self._in_rate.take(len(chunk))
                    self.bytes_received += len(chunk)
                    if self._offload:
                        await trio.to_thread.run_sync(install.add_chunk, chunk)
                    else:
                        install.add_chunk(chunk)
                    progress.deadline = trio.current_time() + self._idle
            if not install.done:
                raise RemoteProtocolError("the snapshot stream ended before its last chunk")
        except BaseException:
            install.abort()
            raise
        if replica.offer_snapshot(install, message):
            self.received += 1


class PeerWindows:
    """How many snapshots this node streams to each peer at once: ``limit`` at first. A peer that answers
    Overloaded (it is receiving all it takes, from every sender) narrows its window to the transfers still
    running to it, at least one; as many transfers as the window holds, completed, widen it by one again
    (additive increase, so a busy receiver is probed about once per window, not after every transfer). A send
    waits for room in its peer's window before it reads any data, so the senders share a receiver's slots
    instead of spending reads and bytes on streams it refuses."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._peers: dict[str, _Window] = {}

    def window(self, peer: str) -> int:
        found = self._peers.get(peer)
        return found.size if found is not None else self._limit

    @contextlib.asynccontextmanager
    async def slot(self, peer: str) -> AsyncIterator[None]:
        w = self._peers.get(peer)
        if w is None:
            w = self._peers[peer] = _Window(self._limit)
        w.users += 1
        try:
            while w.running >= w.size:
                await w.room.park()
            w.running += 1
            try:
                yield
            finally:
                w.running -= 1
                w.room.unpark()
        finally:
            w.users -= 1
            if not w.users and w.size >= self._limit:
                del self._peers[peer]  # nothing left to remember: the map holds only peers in use or narrowed

    def refused(self, peer: str) -> None:
        """``peer`` answered Overloaded to a transfer (which has given its slot back)."""
        w = self._peers.setdefault(peer, _Window(self._limit))
        w.size = max(1, w.running)
        w.completed = 0

    def completed(self, peer: str) -> None:
        w = self._peers.get(peer)
        if w is not None and w.size < self._limit:
            w.completed += 1
            if w.completed >= w.size:
                w.size += 1
                w.completed = 0
                w.room.unpark()


@attrs.define
class _Window:
    size: int
    running: int = 0
    users: int = 0  # transfers waiting for or holding a slot
    completed: int = 0  # transfers completed since the window last changed
    room: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)


class ByteRate:
    """A node-wide budget of bytes per second shared by every snapshot being sent (0: unbounded), so moving
    partitions never takes all of the network or disk from foreground traffic."""

    def __init__(self, bytes_per_second: float) -> None:
        self._rate = bytes_per_second
        self._free_at = 0.0  # when the budget has room again

    async def take(self, size: int) -> None:
        """Wait until ``size`` bytes fit in the budget (every caller gets its turn in order)."""
        if self._rate <= 0:
            await trio.lowlevel.checkpoint()
            return
        now = trio.current_time()
        start = max(now, self._free_at)
        self._free_at = start + size / self._rate
        if start > now:
            await trio.sleep(start - now)
        else:
            await trio.lowlevel.checkpoint()


async def _unframed(stream: trio.abc.ReceiveStream) -> AsyncGenerator[bytes, None]:
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
