"""Raft messages for a group this node does not host yet: held while the replica they are for is made.

This module owns what happens when a leader (or a candidate) of a group talks to this node before it hosts a
replica of the group: the messages are held, within bounds (beyond them they are dropped: Raft retransmits), and
the replica is made: from the partition's directory record when this node is one of its initial voters, else
empty, to receive the leader's log or snapshot. A message meant for a replica this node deleted makes nothing
(the sender is a stale leader, or the message was delayed past the removal), nor does a made-up partition.

The common case, an initial voter that is not the ring owner hearing the owner's first append, costs no task and
no wait when the record is known here already (``_system`` sends every node a new record's commit at once): the
replica's first batch goes to the group commit and the replica starts, with the messages held for it, once that
batch is written (at once, unless a synced write is in flight). Anything else (the record must be asked for, the
owner's own replica, an empty replica) goes through the registry's ``local`` in a task. It knows nothing of Raft
itself nor of the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import trio

from borough.errors import BoroughError, NotFound, StorageError
from borough.node.records import DirectoryRecord
from borough.raft.messages import Message
from borough.store.batch import WriteBatch

if TYPE_CHECKING:
    from borough.node.replica import Replica, ReplicaHost

__all__ = ["PENDING_MESSAGES", "PENDING_PARTITIONS", "Arrivals"]

logger = logging.getLogger(__name__)

#: Raft messages held for a partition whose replica is being made (beyond: dropped, Raft retransmits).
PENDING_MESSAGES = 256
#: Partitions whose replicas are being made at once, with messages held for them.
PENDING_PARTITIONS = 1024

Held = tuple[Message, int, int]  # a message with its (recipient's, sender's) incarnations


class Maker(Protocol):
    """What arrivals need of the node's table of replicas (``borough.node.registry.Replicas``)."""

    def __contains__(self, name: object) -> bool: ...

    def start(self, name: str) -> Replica: ...

    async def local(self, name: str, *, empty_ok: bool = False, wait: bool = True) -> Replica: ...

    def first_batch(self, name: str, voters: Sequence[str], appoint: str | None) -> WriteBatch: ...


class Arrivals:
    def __init__(
        self,
        *,
        host: ReplicaHost,
        maker: Maker,
        nursery: trio.Nursery,
        known_record: Callable[[str], DirectoryRecord | None],
        timeout: float,
    ) -> None:
        self._host, self._maker, self._nursery = host, maker, nursery
        self._known_record = known_record  # the record if this node knows it already (no wait)
        self._timeout = timeout  # the most a replica may take to be made in a task
        self._pending: dict[str, list[Held]] = {}
        self._making: set[str] = set()
        #: Messages dropped: meant for a replica this node deleted (an earlier incarnation).
        self.dropped_stale = 0

    def hold(self, partition: str, message: Message, to_inc: int, frm_inc: int) -> None:
        """Hold a cluster member's message for ``partition``, which this node does not host, and make the
        replica it is for (see the module docstring)."""
        pending = self._pending.get(partition)
        if pending is None:
            if len(self._pending) >= PENDING_PARTITIONS or self.deleted_incarnation(partition, to_inc):
                return
            pending = self._pending[partition] = []
        if len(pending) < PENDING_MESSAGES:
            pending.append((message, to_inc, frm_inc))
        if partition not in self._making:
            self._making.add(partition)
            if not self._make_now(partition):
                self._nursery.start_soon(self._make, partition)

    def take(self, name: str) -> list[Held]:
        """The messages held for ``name``'s replica, which has just started (they are no longer held)."""
        return self._pending.pop(name, [])

    def deleted_incarnation(self, partition: str, to_inc: int) -> bool:
        """Whether a message meant for incarnation ``to_inc`` of ``partition``'s replica is meant for one this
        node deleted (it must not make a new replica)."""
        tombstone = self._host.store.tombstone(partition)
        if tombstone is None or to_inc > tombstone.incarnation:
            return False
        self.dropped_stale += 1
        return True

    def _make_now(self, name: str) -> bool:
        """Make the replica of an initial voter that is not the ring owner from the record known here, with no
        task and no wait; False: not that case (``_make`` sees to it)."""
        record = self._known_record(name)
        store = self._host.store
        if record is None or self._host.node_id not in record.voters[1:] or store.has_replica(name):
            return False
        if store.tombstone(name) is not None:
            return False  # (deleted here: it is only ever made empty again, for a leader that adds it back)

        def written(errors: list[BaseException | None]) -> None:
            self._making.discard(name)
            if name in self._maker:
                return  # (made meanwhile, by a read or a snapshot through ``local``: it took the held messages)
            if errors[0] is None:
                self._maker.start(name)
            else:
                logger.info("could not create a replica of %r for an inbound message: %s", name, errors[0])
                self._pending.pop(name, None)

        batch = self._maker.first_batch(name, record.voters, record.voters[0])
        try:
            self._host.committer.submit([batch], sync=False, done=written)
        except StorageError as exc:  # the committer stopped: the node is stopping
            written([exc])
        return True

    async def _make(self, partition: str) -> None:
        try:
            with trio.move_on_after(self._timeout):
                await self._maker.local(partition, empty_ok=True)
        except NotFound:
            logger.info("dropped Raft messages for %r: no such partition is registered", partition)
        except BoroughError as exc:
            logger.info("could not create a replica of %r for an inbound message: %s", partition, exc)
        finally:
            self._making.discard(partition)
            if partition not in self._maker:
                self._pending.pop(partition, None)
