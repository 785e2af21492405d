"""Background duties: what ``_system``'s leader does for the cluster, keeping every group on the ring, and
sweeping replicas left behind.

This module owns three loops. On the node that leads ``_system``: mark members dead once the failure detector
has believed them unreachable for ``dead_after`` (counting only time seen while leading, so a leader that was
itself cut off never condemns the healthy majority), and move ``_system`` towards min(members, replicas) voters.
On every node, for every group it leads: one placement step at a time towards the ring's replica set (add a
learner, promote it, remove a node that left the set, move leadership to the ring owner), with a node-wide
bound on the groups changing at once, so a rebalance never starves the foreground. And on every node: find
replicas this node no longer belongs to (a removed replica is never told so by Raft once its leader stops
replicating to it) and stop them, so their data is deleted. It knows nothing of the wire or of how ops run.

The last two visit only the groups that may have changed, so their work is proportional to the active groups,
not to the hosted ones: every group when the member table (or, for placement, the live set) changed; else the
groups that were awake at the last visit or woke since (``Clocks.watch``). A quiesced group changes only after
it wakes, so one found settled (in place, quiet) is not looked at again until then; an idle node's passes
visit nothing. A pass starts at most ``VISITS_PER_PASS`` placement steps; the rest wait for the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from borough.config import NodeConfig
from borough.errors import BoroughError
from borough.ids import NodeId
from borough.node.clocks import Visits
from borough.node.members import MemberWatch
from borough.node.reconcile import reconcile_once
from borough.node.records import PartitionInfo
from borough.node.registry import Replicas
from borough.node.replica import Replica
from borough.node.statemachine import encode_command
from borough.node.system_state import SYSTEM, state_command
from borough.raft.rawnode import RawNode
from borough.ring.hashring import HashRing
from borough.ring.members import MemberState, MemberTable
from borough.ring.messages import Liveness
from borough.ring.placement import Nothing

__all__ = ["Duties"]

logger = logging.getLogger(__name__)

SYSTEM_DUTY_INTERVAL = 0.5
STRAY_SWEEP_INTERVAL = 5.0
#: How often each led group is compared with the ring.
PLACEMENT_INTERVAL = 1.0
#: Placement steps (each a check of one group against the ring, most finding nothing to do) one pass starts.
VISITS_PER_PASS = 512
#: A pass lets the other tasks run after this many groups (so a full pass is many short steps, not one long one).
YIELD_EVERY = 256


class Duties:
    def __init__(
        self,
        *,
        node_id: str,
        replicas: Replicas,
        members: MemberWatch,
        ring_for: Callable[[MemberTable], HashRing],
        partition_info: Callable[[str], Awaitable[PartitionInfo]],
        config: NodeConfig,
        out_of_touch: float,
        nursery: trio.Nursery,
    ) -> None:
        self._node_id = node_id
        self._replicas = replicas
        self._members = members
        self._ring_for = ring_for
        self._partition_info = partition_info
        self._dead_after = config.dead_after  # (the member table's, and how long operations may take)
        self._out_of_touch = out_of_touch
        self._timeout = config.request_timeout
        self._leading_since: tuple[int, float] | None = None  # (term, time) this node began leading _system
        self._nursery = nursery
        self._moving: set[str] = set()  # groups with a placement step under way
        self._placing = Visits(replicas.clocks)
        self._sweeping = Visits(replicas.clocks)
        self._placement_limit = trio.Semaphore(config.max_moving_partitions)  # groups moving at once

    # --- _system's leader -----------------------------------------------------------------------------------

    async def system_forever(self) -> None:
        while True:
            await trio.sleep(SYSTEM_DUTY_INTERVAL)
            await self.system_once()

    async def system_once(self) -> None:
        replica = self._replicas.get(SYSTEM)
        if replica is None or not replica.is_leader:
            return
        self._members.sync_detector()
        table = self._members.table
        try:
            with trio.move_on_after(self._timeout):
                await self._mark_dead(replica, table)
                await reconcile_once(replica, self._ring_for(table), self._members.live())
        except BoroughError as exc:
            logger.info("_system duty step failed: %s", exc)

    async def _mark_dead(self, replica: Replica, table: MemberTable) -> None:
        """Mark members the failure detector has believed dead for ``dead_after`` seconds as DEAD.

        Only unreachability seen while this replica led ``_system`` in its current term counts: a node that
        was itself cut off (or paused) believes everyone else dead, and if it wins an election right after
        the partition heals its stale view must not declare the healthy majority dead."""
        now = trio.current_time()
        term = replica.term
        if self._leading_since is None or self._leading_since[0] != term:
            self._leading_since = (term, now)
        leading_since = self._leading_since[1]
        view = self._members.view()
        for member in table.members:
            if member.state is not MemberState.ACTIVE or member.node_id == self._node_id:
                continue
            seen = view.get(member.node_id)
            if seen is None or seen.liveness is not Liveness.DEAD:
                continue
            since = max(seen.since if seen.since is not None else now, leading_since)
            if now - since >= self._dead_after:
                logger.warning("marking member %s dead: unreachable for %.1f s", member.node_id, now - since)
                # Only if it is still ACTIVE when the command applies: ``table`` may be older than a change
                # ordered before it (a decommission marking it LEAVING), which DEAD must not overwrite.
                command = state_command(member.node_id, MemberState.DEAD, expected=MemberState.ACTIVE)
                await replica.propose(encode_command(command))

    # --- every group this node leads --------------------------------------------------------------------

    async def placement_forever(self) -> None:
        while True:
            await trio.sleep(PLACEMENT_INTERVAL)
            await self.placement_once()

    async def placement_once(self) -> None:
        """Start one placement step for each group this node leads that may not be on its ring replica set yet
        (``_system`` has its own duty), and wake a quiet group a live follower of which lacks entries. Visits the
        groups that may have changed (see the module's docstring). A group with a step under way is left alone."""
        table = self._members.table
        live = self._members.live()
        visits = self._placing
        names = visits.take(self._replicas, (table.version, frozenset(live)))
        ring = self._ring_for(table)
        started = 0
        for i, name in enumerate(names):
            if started >= VISITS_PER_PASS:
                visits.again.update(names[i:])  # bounded work per pass: the rest next time
                break
            if i and not i % YIELD_EVERY:
                await trio.lowlevel.checkpoint()  # a full pass over 10,000 groups is no single long step
            replica = self._replicas.get(name)
            if replica is None:
                continue
            if not replica.is_leader:
                if not replica.quiesced:
                    visits.again.add(name)  # awake: it may be elected (a quiet one wakes first)
                continue
            quiet = replica.quiesced
            if quiet:
                # A follower of a quiet group that lacks part of the log while its node is alive missed the
                # wake-up (an asymmetric cut, a pause shorter than the detector's bound, or it is a former leader
                # cut off while quiet): wake, and the leader's heartbeat brings it back and catches it up.
                status = replica.status()
                if any(p.match < status.last_index and n in live for n, p in status.progress.items()):
                    replica.command(RawNode.wake)
                    visits.again.add(name)
                    continue
            if name == SYSTEM or name in self._moving or replica.conf_change_in_flight:
                if not (quiet and name == SYSTEM):  # (``_system`` is placed by its own duty)
                    visits.again.add(name)
                continue
            self._moving.add(name)
            started += 1
            self._nursery.start_soon(self._place, replica, ring, live, table)

    async def _place(self, replica: Replica, ring: HashRing, live: set[str], table: MemberTable) -> None:
        settled = False
        try:
            async with self._placement_limit:
                if replica.is_leader:
                    with trio.move_on_after(self._timeout):
                        quiesced = replica.quiesced  # before the step: a step wakes the group
                        step = await reconcile_once(replica, ring, live)
                        # Quiet and in place: not visited again until it wakes (or the table or live set change).
                        settled = quiesced and isinstance(step, Nothing)
        except BoroughError as exc:
            logger.info("partition %r: placement step failed: %s", replica.name, exc)
        finally:
            self._moving.discard(replica.name)
            if not settled:
                self._placing.again.add(replica.name)

    # --- every node ---------------------------------------------------------------------------------------

    async def sweep_forever(self) -> None:
        while True:
            await trio.sleep(STRAY_SWEEP_INTERVAL)
            await self.sweep_once()

    async def sweep_once(self) -> None:
        """Stop replicas this node no longer belongs to. A replica that knows no leader, or whose latest
        configuration leaves this node out, asks the group's leader, and stops when the leader's configuration
        does not list this node. Visits the replicas that may have changed (see the module's docstring)."""
        me = NodeId(self._node_id)
        table = self._members.table
        visits = self._sweeping
        names = visits.take(self._replicas, table.version)
        ring = self._ring_for(table)
        for i, name in enumerate(names):
            if i and not i % YIELD_EVERY:
                await trio.lowlevel.checkpoint()
            replica = self._replicas.get(name)
            if replica is None or replica.removed:
                continue
            quiet = replica.quiesced
            if replica.is_leader:
                if not quiet:
                    visits.again.add(name)  # it may lose its leadership (a quiet one wakes first)
                elif name != SYSTEM and me not in ring.replica_set(name):
                    # A quiet leader hears nothing either: one removed from its group while its node was away
                    # (paused, cut off) would lead its stale copy for ever. Off the ring's placement it is not
                    # trusted: wake it. It stays awake unless a quorum answers it, so check-quorum deposes a stale
                    # one. (A stale `_system` leader is woken when gossip names a newer member table: ``members``.)
                    replica.command(RawNode.wake)
                    visits.again.add(name)
                continue
            if replica.hears_from_leader(self._out_of_touch) and me in replica.status().conf_state.members():
                if not quiet:
                    visits.again.add(name)
                    continue  # a member that hears from its leader
                # A quiet follower hears nothing, so it would never learn that its group removed it while it was
                # cut off. Where the ring places the group it is trusted; elsewhere it is a move in progress or
                # a leftover: the leader is asked, as for a follower out of touch.
                if name != SYSTEM and me in ring.replica_set(name):
                    continue  # settled: not visited again until it wakes or the member table changes
            visits.again.add(name)
            try:
                with trio.move_on_after(self._timeout):
                    info = await self._partition_info(name)
                    # Only a leader of our term or later speaks for the group: one of an earlier term (deposed, or
                    # cut off and not yet told) answers with a configuration older than ours, which may well not
                    # list us yet, and our replica could not follow it anyway.
                    if self._node_id not in {peer.node_id for peer in info.peers} and info.term >= replica.term:
                        replica.remove()
            except BoroughError as exc:
                logger.debug("could not confirm whether %r still has a replica here: %s", name, exc)
