"""Raft messages between nodes: coalesced per peer on the way out, decoded and checked on the way in.

This module owns the node-to-node Raft frame, ``["raft", [[partition, message, to_inc, frm_inc], ...]]``
(the incarnations of recipient and sender, see ``borough.node.incarnations``). Every message that
the node's replicas produce in one scheduling round for the same peer leaves as one frame (or a few, each
under ``FRAME_BUDGET`` bytes and ``FRAME_ITEMS`` CBOR items), so the heartbeats of all groups two nodes share
are coalesced into a single frame per tick. Sends never block and may drop (Raft retransmits): a peer whose
address is not known yet is skipped, and a frame the wire refuses is dropped and counted, never raised. Inbound
frames are hostile until proven otherwise: a malformed frame or item is logged and dropped, never raised, and
each well-formed message goes to the replica it names (``deliver``). It knows nothing of replicas' internals or
of calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from borough.errors import LocalProtocolError, RemoteProtocolError
from borough.node.incarnations import Stamp
from borough.raft.messages import AppendRequest, InstallSnapshot, Message, decode_message, encode_message
from borough.wire.records import PeerInfo

__all__ = ["RaftOutbox"]

logger = logging.getLogger(__name__)

RAFT = "raft"
#: Most bytes of Raft messages (estimated) one frame carries: well under the wire's 8 MiB frame limit, so the
#: appends of many groups catching up one peer leave as several frames, never as one frame the wire refuses.
FRAME_BUDGET = 2 * 1024 * 1024
#: Most CBOR data items (estimated) one frame carries: a quarter of the wire's default ``max_frame_items`` (65,536),
#: so the heartbeats or votes of thousands of groups woken at once never make a frame the receiver refuses (which
#: closes the connection), and decoding one frame stays a short step of the receiver's event loop.
FRAME_ITEMS = 16_384
#: At most one dropped inbound message is logged this often (the rest are counted: ``dropped_inbound``).
LOG_EVERY = 10.0
#: Estimated bytes of a message besides its entries' data, and of each entry besides its data.
_MESSAGE_OVERHEAD = 64
_ENTRY_OVERHEAD = 24


class _Frame:
    __slots__ = ("count", "items", "size")

    def __init__(self) -> None:
        self.items: list[list[Any]] = []
        self.size = 0
        self.count = 0  # CBOR data items, estimated (``_items``)


_MAX_INCARNATION = 1 << 63


def _size(msg: Message) -> int:
    if type(msg) is AppendRequest:
        return _MESSAGE_OVERHEAD + sum(_ENTRY_OVERHEAD + len(e.data) for e in msg.entries)
    return _MESSAGE_OVERHEAD


class Deliver(Protocol):
    """Hands a peer's Raft message to its replica (``Replicas.deliver``); ``member`` is False for a sender the
    member table does not list."""

    def __call__(self, partition: str, message: Message, to_inc: int, frm_inc: int, *, member: bool) -> None: ...


def _items(msg: Message) -> int:
    """An upper bound of the CBOR data items ``[partition, message, to_inc, frm_inc]`` counts as a frame's item:
    the item and its 4 fields, the message's (at most 8), and 4 per entry (the entry and its 3 fields)."""
    if type(msg) is AppendRequest:
        return 16 + 4 * len(msg.entries)
    return 16


class RaftOutbox:
    def __init__(
        self,
        *,
        node_id: str,
        send: Callable[[str, Any], bool],
        address_of: Callable[[str], str | None],
        deliver: Deliver,
        frame_budget: int = FRAME_BUDGET,
    ) -> None:
        self._node_id = node_id
        self._send = send
        self._address_of = address_of
        self._deliver = deliver
        self._queued: dict[str, list[_Frame]] = {}
        self._lot = trio.lowlevel.ParkingLot()
        #: Frames of Raft messages sent, and the messages they carried (every group's, coalesced per peer).
        self.frames_sent = 0
        self.messages_sent = 0
        self.dropped_inbound = 0
        self.dropped_outbound = 0
        self._frame_budget = frame_budget
        self._reported_at = -LOG_EVERY  # when a dropped inbound message was last logged
        self._unreported = 0

    # --- outbound -------------------------------------------------------------------------------------------

    def send(self, partition: str, messages: Sequence[Message], stamp: Stamp) -> None:
        """Queue ``messages`` of ``partition``'s group for their recipients, each with the incarnations
        ``stamp(recipient)`` gives; they leave on the next flush."""
        queued = self._queued
        was_empty = not queued
        for msg in messages:
            frames = queued.get(msg.to)
            if frames is None:
                frames = queued[msg.to] = [_Frame()]
            frame = frames[-1]
            size, count = _size(msg), _items(msg)
            if frame.items and (frame.size + size > self._frame_budget or frame.count + count > FRAME_ITEMS):
                frame = _Frame()
                frames.append(frame)
            to_inc, frm_inc = stamp(msg.to)
            frame.items.append([partition, encode_message(msg), to_inc, frm_inc])
            frame.size += size
            frame.count += count
        if was_empty and queued and self._lot:  # (a parking lot is true while a task waits in it)
            self._lot.unpark_all()

    def flush(self) -> None:
        """Send what is queued for each peer: one frame per peer, or a few when it would exceed the budget."""
        queued, self._queued = self._queued, {}
        for to, frames in queued.items():
            address = self._address_of(to)
            if address is None:
                continue  # unknown yet: Raft retransmits once the member table arrives
            for frame in frames:
                try:
                    sent = self._send(address, [RAFT, frame.items])
                except LocalProtocolError as exc:  # over the frame limit after all: drop it, Raft retransmits
                    self.dropped_outbound += len(frame.items)
                    logger.warning("dropped %d Raft messages for %s: %s", len(frame.items), to, exc)
                    continue
                if sent:
                    self.frames_sent += 1
                    self.messages_sent += len(frame.items)

    async def flush_forever(self) -> None:
        """Flush whenever something is queued. A node does not run this: its rounds, where every Raft message is
        made, flush right after each round and each finished write (``Rounds(after=...)``), a pass sooner."""
        while True:
            if not self._queued:
                await self._lot.park()
            self.flush()
            # Let every replica that has work finish its round before the next frame: that is the coalescing.
            await trio.lowlevel.checkpoint()

    # --- inbound --------------------------------------------------------------------------------------------

    def _drop(self, message: str, *args: object) -> None:
        """Count a dropped inbound message; log at most one every ``LOG_EVERY`` seconds (a hostile peer's frame
        of a hundred malformed items, resent in a loop, must not turn into a hundred log lines each time: the
        logging alone would starve the event loop, as the live-port fuzzer showed)."""
        self.dropped_inbound += 1
        try:
            now = trio.current_time()
        except RuntimeError:  # (called outside trio: a synchronous test)
            now = self._reported_at + LOG_EVERY
        if now - self._reported_at < LOG_EVERY:
            self._unreported += 1
            return
        more = f" ({self._unreported} more dropped since the last report)" if self._unreported else ""
        self._reported_at, self._unreported = now, 0
        logger.warning(message + "%s; counted in outbox.dropped_inbound", *args, more)

    def receive(self, peer: PeerInfo, frame: object, *, only: str | None = None) -> None:
        """A Raft frame from ``peer``; anything malformed is logged and dropped. With ``only`` (a peer the member
        table does not list, which may speak for that group alone), messages of other partitions, and messages in
        another node's name, are dropped too, and the rest are delivered as a non-member's."""
        if not isinstance(frame, list) or len(frame) != 2 or frame[0] != RAFT or not isinstance(frame[1], list):
            self._drop("dropped a malformed message from %s: %.100r", peer, frame)
            return
        node_id, deliver, member = self._node_id, self._deliver, only is None
        for item in frame[1]:
            try:
                if type(item) is not list or len(item) != 4:
                    raise RemoteProtocolError("a Raft item must be [partition, message, to_inc, frm_inc]")
                partition, encoded, to_inc, frm_inc = item
                if not (
                    type(partition) is str
                    and partition
                    and type(to_inc) is int
                    and 0 <= to_inc < _MAX_INCARNATION
                    and type(frm_inc) is int
                    and 0 <= frm_inc < _MAX_INCARNATION
                ):
                    raise RemoteProtocolError("a Raft item must be [partition, message, to_inc, frm_inc]")
                msg = decode_message(encoded)
            except RemoteProtocolError as exc:
                self._drop("dropped a malformed Raft message from %s: %s", peer, exc)
                continue
            if msg.to != node_id or (only is not None and (partition != only or msg.frm != peer.node_id)):
                continue  # meant for an earlier incarnation of this address, or not this peer's to send
            if type(msg) is InstallSnapshot:
                # A snapshot arrives only on the snapshot path, with its data (see ``snapshots``); as a bare
                # message it would ask the core to install data that was never staged.
                self._drop("dropped an InstallSnapshot sent as a plain Raft message by %s", peer)
                continue
            deliver(partition, msg, to_inc, frm_inc, member=member)
