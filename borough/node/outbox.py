"""Raft messages between nodes: coalesced per peer on the way out, decoded and checked on the way in.

This module owns the node-to-node Raft frame, ``["raft", [[partition, message], ...]]``. Every message that
the node's replicas produce in one scheduling round for the same peer leaves as one frame, so the heartbeats
of all groups two nodes share are coalesced into a single frame per tick. Sends never block and may drop
(Raft retransmits): a peer whose address is not known yet is skipped. Inbound frames are hostile until proven
otherwise: a malformed frame or item is logged and dropped, never raised, and each well-formed message goes to
the replica it names (``deliver``). It knows nothing of replicas' internals or of calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from borough.errors import RemoteProtocolError
from borough.raft.messages import Message, decode_message, encode_message
from borough.wire.records import PeerInfo

__all__ = ["RaftOutbox"]

logger = logging.getLogger(__name__)

RAFT = "raft"


class RaftOutbox:
    def __init__(
        self,
        *,
        node_id: str,
        send: Callable[[str, Any], bool],
        address_of: Callable[[str], str | None],
        deliver: Callable[[str, Message], None],
    ) -> None:
        self._node_id = node_id
        self._send = send
        self._address_of = address_of
        self._deliver = deliver
        self._queued: dict[str, list[list[Any]]] = {}
        self._lot = trio.lowlevel.ParkingLot()
        #: Frames of Raft messages sent, and the messages they carried (every group's, coalesced per peer).
        self.frames_sent = 0
        self.messages_sent = 0
        self.dropped_inbound = 0

    # --- outbound -------------------------------------------------------------------------------------------

    def send(self, partition: str, messages: Sequence[Message]) -> None:
        """Queue ``messages`` of ``partition``'s group for their recipients; they leave on the next flush."""
        queued = self._queued
        was_empty = not queued
        for msg in messages:
            items = queued.get(msg.to)
            if items is None:
                items = queued[msg.to] = []
            items.append([partition, encode_message(msg)])
        if was_empty and queued:
            self._lot.unpark_all()

    def flush(self) -> None:
        """Send one frame per peer with everything queued for it."""
        queued, self._queued = self._queued, {}
        for to, items in queued.items():
            address = self._address_of(to)
            if address is None:
                continue  # unknown yet: Raft retransmits once the member table arrives
            if self._send(address, [RAFT, items]):
                self.frames_sent += 1
                self.messages_sent += len(items)

    async def flush_forever(self) -> None:
        while True:
            if not self._queued:
                await self._lot.park()
            self.flush()
            # Let every replica that has work finish its round before the next frame: that is the coalescing.
            await trio.lowlevel.checkpoint()

    # --- inbound --------------------------------------------------------------------------------------------

    def receive(self, peer: PeerInfo, frame: object) -> None:
        """A Raft frame from ``peer``; anything malformed is logged and dropped."""
        if not isinstance(frame, list) or len(frame) != 2 or frame[0] != RAFT or not isinstance(frame[1], list):
            self.dropped_inbound += 1
            logger.warning("dropped a malformed message from %s: %.100r", peer, frame)
            return
        for item in frame[1]:
            try:
                if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str) or not item[0]:
                    raise RemoteProtocolError("a Raft item must be [partition, message]")
                partition = item[0]
                msg = decode_message(item[1])
            except RemoteProtocolError as exc:
                self.dropped_inbound += 1
                logger.warning("dropped a malformed Raft message from %s: %s", peer, exc)
                continue
            if msg.to != self._node_id:
                continue  # meant for an earlier incarnation of this address
            self._deliver(partition, msg)
