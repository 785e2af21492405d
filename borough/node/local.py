"""The partition a handler runs next to, and what a replica reports about its group.

This module owns ``LocalBackend``, a handler's ``request.partition``: operations on this node's leader replica,
never routed (reads through ``borough.node.reads``, writes proposed to the replica), and ``partition_info``,
a replica's view of its group as ``Partition.info()`` reports it. It knows nothing of routing or the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from borough.node.export import write_export
from borough.node.reads import read_value, scan_page
from borough.node.records import PartitionInfo, ReplicaInfo, ScanPage, ScanRange, WriteOp
from borough.node.replica import Replica
from borough.node.statemachine import propose_write
from borough.node.streams import IterableReceiveStream
from borough.store.base import Store

__all__ = ["LocalBackend", "partition_info"]

AddressOf = Callable[[str], str | None]


def partition_info(
    replica: Replica,
    address_of: AddressOf,
    targets: Sequence[str] = (),
    snapshots_to: Sequence[str] = (),
) -> PartitionInfo:
    """Where ``replica``'s group stands, as this replica sees it (complete on the leader, which tracks peers);
    ``targets`` is the ring's replica set for it, ``snapshots_to`` the followers a snapshot is streaming to."""
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
                progress=progress.state.value if progress is not None and node_id != status.leader else "",
            )
        )
    return PartitionInfo(
        name=replica.name,
        leader=status.leader,
        term=status.term,
        commit_index=status.commit,
        applied_index=replica.applied,
        peers=tuple(peers),
        joint=bool(conf.voters_outgoing),
        targets=tuple(targets),
        snapshots_to=tuple(snapshots_to),
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
        await propose_write(self._replica, ops)

    async def kv_scan(self, partition: str, scan: ScanRange, limit: int, consistency: str) -> ScanPage:
        await self._barrier(consistency)
        return scan_page(self._store, partition, scan, limit)

    async def partition_info(self, partition: str) -> PartitionInfo:
        await trio.lowlevel.checkpoint()
        return partition_info(self._replica, self._address_of)

    async def kv_export(self, partition: str) -> tuple[int, trio.abc.ReceiveStream]:
        await self._barrier("linearizable")
        applied, items = self._store.export(partition)
        return applied, IterableReceiveStream(write_export(items, offload=self._store.blocking_writes))
