"""Reading a replica's applied data on this node, and the partition a handler runs next to.

This module owns the one way the node layer reads its store for a caller: a value by key (``read_value``) and a
page of a range (``scan_page``), each returning encoded values exactly as they travel. The server, a stale read
of a hosted partition and a handler's ``request.partition`` all use them. ``LocalBackend`` is that handler's
partition: operations on this node's leader replica, never routed. It knows nothing of routing or the wire.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from borough.errors import NotFound
from borough.node.protocol import PartitionInfo, ReplicaInfo, ScanPage, ScanRange, WriteOp
from borough.node.replica import Replica
from borough.node.statemachine import write_command
from borough.store.base import Store

__all__ = ["PAGE_BYTES", "LocalBackend", "partition_info", "read_value", "scan_page"]

AddressOf = Callable[[str], str | None]

#: Most bytes of values one scan page carries (at least one item is always sent).
PAGE_BYTES = 1 << 20


def read_value(store: Store, partition: str, key: str | bytes) -> bytes | None:
    """The encoded value of ``key`` in this node's replica of ``partition``, or None when it is missing."""
    try:
        return store.get_encoded(partition, key)
    except NotFound:
        return None


def scan_page(store: Store, partition: str, scan: ScanRange, limit: int) -> ScanPage:
    """Up to ``limit`` items of the range and whether more follow, capped at PAGE_BYTES of values."""
    items: list[tuple[str | bytes, bytes | None]] = []
    size = 0
    more = False
    for key, raw in store.iterate(
        partition,
        encoded=True,
        gt=scan.gt,
        gte=scan.gte,
        lt=scan.lt,
        lte=scan.lte,
        reverse=scan.reverse,
        limit=limit + 1,
    ):
        if len(items) >= limit or (items and size >= PAGE_BYTES):
            more = True
            break
        items.append((key, raw if scan.values else None))
        size += len(raw) if scan.values else 0
    return ScanPage(items, more)


def partition_info(replica: Replica, address_of: AddressOf) -> PartitionInfo:
    """Where ``replica``'s group stands, as this replica sees it (complete on the leader, which tracks peers)."""
    status = replica.status()
    conf = status.conf_state
    me = replica.host.node_id
    peers = []
    for node_id in conf.members():
        progress = status.progress.get(node_id)
        if node_id == status.leader:
            role = "leader"
        elif node_id in conf.learners or node_id in conf.learners_next:
            role = "learner"
        else:
            role = "voter"
        peers.append(
            ReplicaInfo(
                node_id=node_id,
                address=address_of(node_id),
                role=role,
                match_index=progress.match if progress is not None else 0,
                connected=node_id == me or (progress is not None and progress.recent_active),
            )
        )
    return PartitionInfo(
        name=replica.name,
        leader=status.leader,
        term=status.term,
        commit_index=status.commit,
        applied_index=replica.applied,
        peers=tuple(peers),
    )


class LocalBackend:
    """A handler's ``request.partition``: operations on this node's leader replica, no routing. If the replica
    loses leadership meanwhile, the operation raises NotLeader (which the server reports as an outcome that
    may be partial, never as a reason to run the request elsewhere)."""

    def __init__(self, store: Store, replica: Replica, address_of: AddressOf) -> None:
        self._store = store
        self._replica = replica
        self._address_of = address_of

    async def _barrier(self, consistency: str) -> None:
        if consistency == "stale":
            await trio.lowlevel.checkpoint()
        else:
            await self._replica.read_barrier()

    async def kv_get(self, partition: str, key: str | bytes, consistency: str) -> bytes | None:
        await self._barrier(consistency)
        return read_value(self._store, partition, key)

    async def kv_write(self, partition: str, ops: tuple[WriteOp, ...]) -> None:
        await self._replica.propose(write_command(ops))

    async def kv_scan(self, partition: str, scan: ScanRange, limit: int, consistency: str) -> ScanPage:
        await self._barrier(consistency)
        return scan_page(self._store, partition, scan, limit)

    async def partition_info(self, partition: str) -> PartitionInfo:
        await trio.lowlevel.checkpoint()
        return partition_info(self._replica, self._address_of)
