"""The routed session behind a member's and a client's public API: every partition operation, routed.

This module owns what ``Node`` and ``Client`` share: ``get``/``write``/``scan``/``info`` of a partition and
``request``, the member table and ``_system`` calls, each built as a typed op (``borough.node.protocol``) and
routed to the partition's leader (``borough.node.routing``) over the wire, or carried out in place when the
leader is this very node. Each write carries this session's id and the write's seq (``borough.node.sequencer``),
so a partition applies it once however often routing sends it. A member also reads a partition it hosts in
place for a stale read, as DESIGN.md promises. It implements the ``PartitionBackend`` that public
``Partition`` handles use, and knows nothing of Raft or of how a node executes an op (a function it is given
does).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from borough.errors import BoroughError, NotFound
from borough.node.directory import Directory
from borough.node.protocol import (
    Call,
    Export,
    FindLeader,
    Get,
    Hosted,
    Info,
    ListPartitions,
    Op,
    Scan,
    SetState,
    Write,
    encode_call,
)
from borough.node.reads import read_value, scan_page
from borough.node.records import (
    Consistency,
    Hosting,
    Limits,
    MemberStatus,
    PartitionInfo,
    ScanPage,
    ScanRange,
    WriteOp,
    check_write,
)
from borough.node.routing import AttemptExpired, Router, Target, seconds_left
from borough.node.sequencer import Sequencer
from borough.node.streams import IterableReceiveStream, join_streams, split_streams
from borough.node.system_state import SYSTEM
from borough.ring.members import MemberState, MemberTable
from borough.store.base import Store

__all__ = ["Session"]

#: The transport's ``call(address, body, streams=...)``.
CallFn = Callable[..., Awaitable[Any]]
logger = logging.getLogger(__name__)

#: How long ``member_status`` waits for each member's answer.
STATUS_TIMEOUT = 2.0
#: Seconds between checks of whether a decommissioned member still holds replicas.
DRAIN_POLL = 1.0
#: Carries out an op on this node (a member's server): ``(partition, op, streams) -> result``.
ExecuteHere = Callable[[str, Op, Mapping[str, Any] | None], Awaitable[Any]]


class Session:
    """Routed operations for one process. A member passes ``me`` (its own target), ``execute_here`` and
    ``hosted``; a client passes neither."""

    def __init__(
        self,
        *,
        directory: Directory,
        call: CallFn,
        limits: Limits,
        request_timeout: float,
        rng: random.Random,
        me: Target | None = None,
        execute_here: ExecuteHere | None = None,
        hosted: Callable[[str], Store | None] = lambda partition: None,
    ) -> None:
        self.directory = directory
        self.limits = limits
        self._call = call
        self._me = me
        self._execute_here = execute_here
        self._hosted = hosted
        self.sequencer = Sequencer(rng)
        self.router = Router(
            locate=directory.locate, execute=self._execute, request_timeout=request_timeout, rng=rng, me=me
        )

    async def _execute(self, target: Target, partition: str, op: Op, deadline: float) -> Any:
        """Carry out ``op`` at ``target`` (here, when it is this node), giving up at ``deadline``
        (``AttemptExpired``: see ``borough.node.routing.Execute``)."""
        streams = op.streams if isinstance(op, Call) else None
        me, here = self._me, self._execute_here
        if here is not None and me is not None and (target.node_id == me.node_id or target.address == me.address):
            with trio.move_on_at(deadline):
                return await here(partition, op, streams)
            raise AttemptExpired
        try:
            reply = await self._call(
                target.address, encode_call(partition, op, seconds_left(deadline)), streams=streams, deadline=deadline
            )
        except trio.TooSlowError:  # (the call's own deadline: nothing else in it raises this)
            raise AttemptExpired from None
        result = op.decode_result(reply.body)
        if reply.streams:
            return join_streams(result, reply.streams)
        return result

    async def run(self, partition: str, op: Op) -> Any:
        """Route ``op`` to ``partition``'s leader; see ``Router.run``."""
        return await self.router.run(partition, op)

    async def system(self, op: Op) -> Any:
        """An operation of ``_system`` (member table, directory, join)."""
        return await self.router.run(SYSTEM, op)

    async def members(self) -> MemberTable:
        """The member table, as ``_system``'s leader knows it."""
        return await self.directory.refresh_members()

    async def member_status(self) -> list[MemberStatus]:
        """Every member of the member table, with the replicas and leaderships it reports holding (asked of
        each node directly, all at once; None for one that does not answer within ``STATUS_TIMEOUT``)."""
        table = await self.members()
        found: dict[str, Hosting] = {}

        async def ask(node_id: str, address: str) -> None:
            try:
                found[node_id] = await self._execute(
                    Target(node_id, address), SYSTEM, Hosted(), trio.current_time() + STATUS_TIMEOUT
                )
            except (BoroughError, OSError, AttemptExpired) as exc:
                logger.debug("member %s did not say what it holds: %s", node_id, exc)

        async with trio.open_nursery() as nursery:
            for member in table:
                if member.state is not MemberState.DEAD:
                    nursery.start_soon(ask, member.node_id, member.address)
        return [
            MemberStatus(
                node_id=m.node_id,
                address=m.address,
                state=m.state.name,
                replicas=found[m.node_id].replicas if m.node_id in found else None,
                leaderships=found[m.node_id].leaderships if m.node_id in found else None,
            )
            for m in table
        ]

    async def partitions(self) -> list[str]:
        """Every partition in the directory, in name order."""
        names: list[str] = []
        while True:
            page: list[str] = await self.system(ListPartitions(names[-1] if names else None))
            names += page
            if not page:
                return names

    async def decommission(self, node_id: str, *, poll: float = DRAIN_POLL) -> None:
        """Drain member ``node_id`` and remove it: it is marked LEAVING (the ring places nothing on it, and every
        group it belongs to moves to the ring's other members, leadership first), then, once no partition lists
        it, DEAD. Works for a member that is down too. Draining takes as long as moving its data does, so only
        the caller's cancel scope bounds it (each call inside is bounded as usual)."""
        await self.system(SetState(node_id, MemberState.LEAVING))
        while True:
            holding = [name for name in [SYSTEM, *await self.partitions()] if await self._lists(name, node_id)]
            if not holding:
                break
            logger.info("node %s still holds %d partitions (%s, ...)", node_id, len(holding), holding[0])
            await trio.sleep(poll)
        await self.system(SetState(node_id, MemberState.DEAD))

    async def _lists(self, partition: str, node_id: str) -> bool:
        info: PartitionInfo = await self.run(partition, Info())
        return node_id in {peer.node_id for peer in info.peers}

    # --- PartitionBackend -------------------------------------------------------------------------------

    async def kv_get(self, partition: str, key: str | bytes, consistency: Consistency) -> bytes | None:
        store = self._hosted(partition) if consistency == "stale" else None
        if store is not None:
            await trio.lowlevel.checkpoint()
            return read_value(store, partition, key)
        try:
            result: bytes | None = await self.run(partition, Get(key, consistency))
        except NotFound:
            return None  # the partition was never created: nothing was ever written to it
        return result

    async def kv_write(self, partition: str, ops: tuple[WriteOp, ...]) -> None:
        ops = check_write(ops, self.limits)
        with self.sequencer.write(partition) as session:
            await self.run(partition, Write(ops, session))

    async def kv_scan(self, partition: str, scan: ScanRange, limit: int, consistency: Consistency) -> ScanPage:
        store = self._hosted(partition) if consistency == "stale" else None
        if store is not None:
            await trio.lowlevel.checkpoint()
            return scan_page(store, partition, scan, limit)
        try:
            page: ScanPage = await self.run(partition, Scan(scan, limit, consistency))
        except NotFound:
            return ScanPage([], False)
        return page

    async def kv_export(self, partition: str) -> tuple[int, trio.abc.ReceiveStream]:
        result = await self.run(partition, Export())
        if isinstance(result, tuple):  # carried out on this node: the frames as they are made
            applied, frames = result
            return applied, IterableReceiveStream(frames)
        return result["body"], result["streams"]["data"]

    async def partition_info(self, partition: str) -> PartitionInfo:
        info: PartitionInfo = await self.run(partition, Info())
        return info

    async def request(self, partition: str, body: Any) -> Any:
        """Run the application's handler on ``partition``'s leader; see ``Node.request``."""
        body, streams = split_streams(body)
        if streams is None:
            with self.sequencer.write(partition) as session:
                return await self.run(partition, Call(body, session=session))
        # Streams cannot be replayed: find the leader first, then send once (a request is retried only after
        # answers that prove it did not run, and NotLeader is raised before a handler reads anything).
        await self.run(partition, FindLeader())
        return await self.run(partition, Call(body, streams))
