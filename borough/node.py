"""The node: one Borough process in a cluster, and the public entry points ``open_node`` and ``serve``.

This module owns a node's lifetime and wiring: its store and group commit, its transport, the nursery every
background task lives in (one task per hosted replica, the ticker, the outbox flusher, ``_system`` duties),
bootstrapping or joining a cluster, creating replicas (from directory records, or empty when a leader adds this
node), and dispatching inbound Raft messages. Routing lives in ``borough.routing``, what an operation does
once it reaches a node in ``borough.server``, snapshot transfer in ``borough.snapshots``.

Messages to a peer produced by every replica in one scheduling round leave as one frame (``["raft", [[p, m],
...]]``), so the heartbeats of all groups two nodes share are coalesced into a single frame per tick.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from borough.calls import SYS_JOIN, Op, RoutedBackend, encode_call
from borough.config import NodeConfig
from borough.directory import Directory
from borough.errors import BoroughError, ConfigError, NotFound, NotLeader, RemoteProtocolError, Unavailable
from borough.partition import Consistency, Partition, ScanRange, check_partition_name
from borough.raft.config import RaftConfig
from borough.raft.messages import InstallSnapshot, Message, decode_message, encode_message
from borough.raft.records import ConfState, SnapshotMeta
from borough.reconcile import reconcile_once
from borough.replica import Replica
from borough.request import Handler
from borough.ring.hashring import HashRing
from borough.ring.members import MemberState, MemberTable
from borough.ring.membership import MemberEvent, Swim, SwimEvent, TableVersionEvent
from borough.ring.membership_driver import MembershipDriver, open_membership
from borough.ring.messages import Liveness
from borough.routing import Router, Target
from borough.server import Server, scan_page
from borough.snapshots import Snapshots
from borough.statemachine import KvStateMachine, StateMachine, SystemStateMachine, encode_command
from borough.store import GroupCommit, LevelDBStore, MemoryStore, Store, open_group_commit
from borough.system import SYSTEM, SystemState, state_command
from borough.wire.mux import IncomingCall, PeerInfo
from borough.wire.network import Network, TcpNetwork
from borough.wire.transport import Identity, Transport, open_transport

__all__ = ["Node", "open_node", "serve"]

logger = logging.getLogger(__name__)

#: Raft messages held for a partition whose replica is being created (beyond: dropped, Raft retransmits).
PENDING_MESSAGES = 256
PENDING_PARTITIONS = 1024
SYSTEM_DUTY_INTERVAL = 0.5
MEMBER_REFRESH_INTERVAL = 2.0
STRAY_SWEEP_INTERVAL = 5.0


class Node:
    """A running Borough node. Made by ``open_node``; see DESIGN.md for the API."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        store: Store,
        rng: random.Random,
        handler: Handler | None,
    ) -> None:
        self.config = config
        self.store = store
        self.rng = rng
        self.handler: Handler | None = handler
        meta = store.node_meta()
        self.node_id: str = meta.node_id if meta is not None else _new_id(rng)
        self.cluster_id: str | None = meta.cluster_id if meta is not None else None
        self.address: str = config.advertise or config.listen
        self.fsync = config.fsync
        self.replicas: dict[str, Replica] = {}
        self.limits = {"max_key_bytes": config.max_key_bytes, "max_value_bytes": config.max_value_bytes}
        self.server = Server(self)
        self.snapshots = Snapshots(self)
        self.directory = Directory(
            system_call=self._system_call,
            seeds=config.join,
            local_system=self._local_system,
            self_target=None,
        )
        self.directory.on_miss = self.want_member_refresh
        self.router = Router(
            locate=self.directory.locate,
            execute=self._execute,
            request_timeout=config.request_timeout,
            rng=rng,
        )
        self.backend = NodeBackend(self, self.router)
        self._outbox: dict[str, list[list[Any]]] = {}
        self._outbox_lot = trio.lowlevel.ParkingLot()
        self._pending: dict[str, list[Message]] = {}
        self._creating: set[str] = set()
        self._rings: tuple[int, HashRing] | None = None
        self._joined = trio.Event()
        # Set by _run once the node's services exist.
        self.nursery: trio.Nursery = None  # type: ignore[assignment]
        self.transport: Transport = None  # type: ignore[assignment]
        self.committer: GroupCommit = None  # type: ignore[assignment]
        self.membership: MembershipDriver = None  # type: ignore[assignment]
        self._swim_table_version = -1
        #: Frames of Raft messages sent, and the messages they carried (every group's, coalesced per peer).
        self.raft_frames_sent = 0
        self.raft_messages_sent = 0
        self._refresh_wanted = trio.Event()
        self._reannouncing = False
        #: A replica that has heard nothing from a leader this long may have been removed from its group.
        self._out_of_touch = 2 * config.election_ticks * config.tick_interval
        self._leading_since: tuple[int, float] | None = None  # (term, time) this node began leading _system
        #: Simulation hook (``borough.testing`` records a run's trace through it): called as
        #: ``trace(event, details)`` on each Raft tick round ("tick") and leader change ("leader"). Must not
        #: raise or block; None (production) costs one attribute test per tick round.
        self.trace: Callable[[str, tuple[Any, ...]], None] | None = None

    def __repr__(self) -> str:
        return f"<Node {self.node_id} at {self.address}>"

    # --- public API -------------------------------------------------------------------------------------

    def whoami(self) -> str:
        """This node's id (stable across restarts; ``node.address`` is where it listens)."""
        return self.node_id

    def partition(self, name: str) -> Partition:
        """A handle on partition ``name``; its operations reach the partition's leader wherever it is."""
        return Partition(self.backend, check_partition_name(name), **self.limits)

    async def request(self, partition: str, body: Any) -> Any:
        """Run the application's handler on the leader of ``partition`` with ``body``; return its reply.

        Retries on leader changes within the deadline (the caller's cancel scope and ``request_timeout``);
        a handler's exception arrives as ``RemoteError``."""
        return await self.backend.request(check_partition_name(partition), body)

    async def join(self, address: str) -> None:
        """Join the cluster that the node at ``address`` belongs to (a node started with ``bootstrap=False``
        and an empty data dir). A node already in a cluster raises ConfigError."""
        if self.cluster_id is not None:
            raise ConfigError(
                f"node {self.node_id} already belongs to cluster {self.cluster_id}; "
                "to move it to another cluster, start it on an empty data dir"
            )
        self.directory.seeds.append(address)
        await self._join()

    async def members(self) -> MemberTable:
        """The member table, as ``_system``'s leader knows it."""
        return await self.directory.refresh_members()

    # --- replicas ---------------------------------------------------------------------------------------

    def _local_system(self) -> SystemState | None:
        replica = self.replicas.get(SYSTEM)
        if replica is None:
            return None
        machine = replica.machine
        assert isinstance(machine, SystemStateMachine)
        return machine.state

    def _raft_config(self, name: str) -> RaftConfig:
        c = self.config
        return RaftConfig(
            id=self.node_id,  # type: ignore[arg-type]
            group=name,
            election_tick=c.election_ticks,
            heartbeat_tick=c.heartbeat_ticks,
            read_only=c.read_mode,  # type: ignore[arg-type]
            max_msg_bytes=c.max_msg_bytes,
            max_uncommitted_bytes=c.max_uncommitted_bytes,
        )

    def _start_replica(self, name: str) -> Replica:
        machine: StateMachine = SystemStateMachine(self.store, name) if name == SYSTEM else KvStateMachine(name)
        replica = Replica(self, name, self._raft_config(name), machine, random.Random(self.rng.getrandbits(64)))
        replica.set_snapshot_every(self.config.snapshot_entries)
        self.replicas[name] = replica
        self.nursery.start_soon(self._run_replica, replica, name=f"replica {name!r}")
        pending = self._pending.pop(name, ())
        for message in pending:
            replica.deliver(message)
        return replica

    async def _run_replica(self, replica: Replica) -> None:
        try:
            await replica.run()
            if replica.removed:
                # Removed from the group: delete the replica's data. It stays in ``self.replicas`` (stopped,
                # refusing everything) until the delete is written, so no message can start a new replica on
                # top of data that is about to disappear.
                batch = self.store.write_batch()
                batch.destroy(replica.name, replica.raw.tombstone())
                await self.committer.commit(batch)
                self.router.learn_leader(replica.name, None)
        finally:
            if self.replicas.get(replica.name) is replica:
                del self.replicas[replica.name]

    async def _bootstrap_replica(self, name: str, voters: Sequence[str]) -> Replica:
        """Create a new group's replica with its initial configuration (a snapshot meta at index 0)."""
        batch = self.store.write_batch()
        batch.set_snapshot_meta(name, SnapshotMeta(index=0, term=0, conf_state=ConfState(voters=voters)))
        await self.committer.commit(batch)
        existing = self.replicas.get(name)
        if existing is not None:
            return existing
        return self._start_replica(name)

    async def local_replica(self, name: str, *, empty_ok: bool = False) -> Replica:
        """This node's replica of ``name``, created if this node is one of its initial voters (or, with
        ``empty_ok``, created empty to receive a snapshot). Raises NotLeader when this node holds none."""
        replica = self.replicas.get(name)
        if replica is not None:
            return replica
        if name in self.store.replicas():
            return self._start_replica(name)
        if name != SYSTEM:
            try:
                record = await self.directory.record(name, create=False)
            except NotFound:
                record = None
            if record is not None and self.node_id in record.voters:
                replica = await self._bootstrap_replica(name, record.voters)
                if record.voters[0] == self.node_id:
                    replica.campaign()  # the ring owner starts the first election at once
                return replica
        if empty_ok:
            return self.replicas.get(name) or self._start_replica(name)
        raise NotLeader(name, None)

    async def local_leader(self, name: str) -> Replica:
        """This node's replica of ``name`` if it leads the group; else NotLeader with the leader's address."""
        replica = await self.local_replica(name)
        if not replica.is_leader:
            leader = replica.raw.leader
            address = self.directory.address_of(leader) if leader else None
            raise NotLeader(name, leader, address)
        return replica

    def ring_for(self, table: MemberTable) -> HashRing:
        if self._rings is None or self._rings[0] != table.version:
            self._rings = (table.version, HashRing(table, replicas=self.config.replicas))
        return self._rings[1]

    # --- ReplicaHost ------------------------------------------------------------------------------------

    def send_raft(self, partition: str, messages: Sequence[Message]) -> None:
        outbox = self._outbox
        was_empty = not outbox
        for msg in messages:
            items = outbox.get(msg.to)
            if items is None:
                items = outbox[msg.to] = []
            items.append([partition, encode_message(msg)])
        if was_empty:
            self._outbox_lot.unpark_all()

    def send_snapshot(self, replica: Replica, message: InstallSnapshot) -> None:
        self.snapshots.start_send(replica, message)

    def leader_changed(self, partition: str, leader: str | None, term: int) -> None:
        if self.trace is not None:
            self.trace("leader", (partition, leader, term))
        if leader is None:
            self.router.learn_leader(partition, None)
            return
        address = self.directory.address_of(leader)
        if address is not None:
            self.router.learn_leader(partition, Target(leader, address))

    # --- the wire ---------------------------------------------------------------------------------------

    def _on_message(self, peer: PeerInfo, message: Any) -> None:
        if peer.node_id:
            self.directory.learn_address(peer.node_id, peer.address)
        if isinstance(message, list) and len(message) == 2 and message[0] == "swim":
            if peer.address and not peer.is_client and self.membership is not None:
                self.membership.deliver(peer.address, message[1])
            return
        if (
            not isinstance(message, list)
            or len(message) != 2
            or message[0] != "raft"
            or not isinstance(message[1], list)
        ):
            logger.warning("dropped a malformed message from %s: %.100r", peer, message)
            return
        for item in message[1]:
            try:
                if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str) or not item[0]:
                    raise RemoteProtocolError("a Raft item must be [partition, message]")
                partition = item[0]
                msg = decode_message(item[1])
            except RemoteProtocolError as exc:
                logger.warning("dropped a malformed Raft message from %s: %s", peer, exc)
                continue
            if msg.to != self.node_id:
                continue  # meant for an earlier incarnation of this address
            replica = self.replicas.get(partition)
            if replica is not None:
                replica.deliver(msg)
            else:
                self._hold_for_creation(partition, msg)

    def _hold_for_creation(self, partition: str, msg: Message) -> None:
        pending = self._pending.get(partition)
        if pending is None:
            if len(self._pending) >= PENDING_PARTITIONS:
                return
            pending = self._pending[partition] = []
        if len(pending) < PENDING_MESSAGES:
            pending.append(msg)
        if partition not in self._creating:
            self._creating.add(partition)
            self.nursery.start_soon(self._create_for_message, partition)

    async def _create_for_message(self, partition: str) -> None:
        """A leader is talking to us about a group we do not host: create the replica (from its directory
        record when we are an initial voter, else empty, waiting for the leader's log or snapshot)."""
        try:
            with trio.move_on_after(self.config.request_timeout):
                await self.local_replica(partition, empty_ok=True)
        except BoroughError as exc:
            logger.info("could not create a replica of %r for an inbound message: %s", partition, exc)
        finally:
            self._creating.discard(partition)
            if partition not in self.replicas:
                self._pending.pop(partition, None)

    async def _on_call(self, peer: PeerInfo, call: IncomingCall) -> Any:
        return await self.server.handle_call(call)

    async def _execute(self, target: Target, partition: str, op: Op) -> Any:
        if target.node_id == self.node_id or target.address == self.address:
            return await self.server.execute(partition, op, remote=False)
        reply = await self.transport.call(target.address, encode_call(partition, op), streams=op.streams)
        if reply.streams:
            from borough.calls import join_streams

            return join_streams(reply.body, reply.streams)
        return reply.body

    async def _system_call(self, name: str, args: list[Any]) -> Any:
        return await self.router.run(SYSTEM, Op(name, args), create=False)

    # --- background tasks -------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        interval = self.config.tick_interval
        while True:
            await trio.sleep(interval)
            if self.trace is not None:
                self.trace("tick", (len(self.replicas),))
            for replica in list(self.replicas.values()):
                replica.tick()

    async def _flusher(self) -> None:
        while True:
            if not self._outbox:
                await self._outbox_lot.park()
            outbox, self._outbox = self._outbox, {}
            for to, items in outbox.items():
                address = self.directory.address_of(to)
                if address is None:
                    continue  # unknown yet: Raft retransmits once the member table arrives
                if self.transport.send(address, ["raft", items]):
                    self.raft_frames_sent += 1
                    self.raft_messages_sent += len(items)
            await trio.lowlevel.checkpoint()

    def current_members(self) -> MemberTable:
        """The newest member table this node knows (its own ``_system`` replica's, or the last fetched)."""
        local = self._local_system()
        table = self.directory.members
        if local is not None and local.members.version > table.version:
            table = local.members
        return table

    def want_member_refresh(self) -> None:
        self._refresh_wanted.set()

    async def _member_refresher(self) -> None:
        """Keep the member table fresh (nodes that do not host ``_system`` ask for it: periodically, and at
        once when gossip says a newer version exists) and hand it to the failure detector."""
        while True:
            with trio.move_on_after(MEMBER_REFRESH_INTERVAL):
                await self._refresh_wanted.wait()
            self._refresh_wanted = trio.Event()
            system = self.replicas.get(SYSTEM)
            if self.cluster_id is not None and (system is None or not system.hears_from_leader(self._out_of_touch)):
                try:
                    with trio.move_on_after(MEMBER_REFRESH_INTERVAL):
                        await self.directory.refresh_members()
                except BoroughError as exc:
                    logger.debug("member table refresh failed: %s", exc)
            self._sync_swim_table()
            me = self.current_members().get(self.node_id)  # type: ignore[arg-type]
            if me is not None and me.state is MemberState.DEAD and not self._reannouncing:
                # Declared dead while cut off (a long partition, a long pause): we are alive, say so again.
                logger.warning("node %s finds itself marked DEAD in the member table; announcing itself", self.node_id)
                self._reannouncing = True
                self.nursery.start_soon(self._reannounce)
            await trio.sleep(0.05)  # at most twenty refreshes a second, however much gossip asks

    def _sync_swim_table(self) -> None:
        table = self.current_members()
        if table.version != self._swim_table_version and self.membership is not None:
            self._swim_table_version = table.version
            self.membership.set_table(table)

    def _on_swim_event(self, event: SwimEvent) -> None:
        if isinstance(event, TableVersionEvent):
            if event.version > self.current_members().version:
                self.want_member_refresh()
        elif isinstance(event, MemberEvent):
            logger.info("member %s is %s (incarnation %d)", event.node_id, event.liveness.name, event.incarnation)

    def live_members(self) -> set[str]:
        """Members the failure detector believes alive (this node included)."""
        if self.membership is None:
            return {self.node_id}
        return set(self.membership.live()) | {self.node_id}

    async def _stray_sweeper(self) -> None:
        """Delete replicas this node no longer belongs to. A replica removed from its group is never told so by
        Raft once the leader stops replicating to it (the commit of its removal never reaches it), so a replica
        that knows no leader, or whose latest configuration leaves this node out, asks the group's leader, and
        stops when the leader's configuration does not list this node."""
        while True:
            await trio.sleep(STRAY_SWEEP_INTERVAL)
            for name, replica in list(self.replicas.items()):
                if replica.is_leader or replica.removed:
                    continue
                if (
                    replica.hears_from_leader(self._out_of_touch)
                    and self.node_id in replica.raw.status().conf_state.members()
                ):
                    continue  # a member that hears from its leader
                try:
                    with trio.move_on_after(self.config.request_timeout):
                        info = await self.backend.partition_info(name)
                        if self.node_id not in {peer.node_id for peer in info.peers}:
                            replica.remove()
                except BoroughError as exc:
                    logger.debug("could not confirm whether %r still has a replica here: %s", name, exc)

    async def _system_duties(self) -> None:
        """On ``_system``'s leader: grow ``_system`` towards min(members, replicas) voters."""
        while True:
            await trio.sleep(SYSTEM_DUTY_INTERVAL)
            replica = self.replicas.get(SYSTEM)
            if replica is None or not replica.is_leader:
                continue
            self._sync_swim_table()
            table = self.current_members()
            live = self.live_members()
            try:
                with trio.move_on_after(self.config.request_timeout):
                    await self._mark_dead(replica, table)
                    await reconcile_once(replica, self.ring_for(table), live)
            except BoroughError as exc:
                logger.info("_system duty step failed: %s", exc)

    async def _mark_dead(self, replica: Replica, table: MemberTable) -> None:
        """Mark members the failure detector has believed dead for ``dead_after`` seconds as DEAD.

        Only unreachability seen while this replica led ``_system`` in its current term counts: a node that
        was itself cut off (or paused) believes everyone else dead, and if it wins an election right after
        the partition heals its stale view must not declare the healthy majority dead."""
        now = trio.current_time()
        term = replica.raw.term
        if self._leading_since is None or self._leading_since[0] != term:
            self._leading_since = (term, now)
        leading_since = self._leading_since[1]
        view = self.membership.view() if self.membership is not None else {}
        for member in table.members:
            if member.state is not MemberState.ACTIVE or member.node_id == self.node_id:
                continue
            seen = view.get(member.node_id)
            if seen is None or seen.liveness is not Liveness.DEAD:
                continue
            since = max(seen.since if seen.since is not None else now, leading_since)
            if now - since >= self.config.dead_after:
                logger.warning("marking member %s dead: unreachable for %.1f s", member.node_id, now - since)
                await replica.propose(encode_command(state_command(member.node_id, MemberState.DEAD)))

    # --- cluster membership -----------------------------------------------------------------------------

    async def _bootstrap(self) -> None:
        cluster_id = _new_id(self.rng)
        self.store.init_node_meta(self.node_id, cluster_id)
        self.cluster_id = cluster_id
        self.transport.set_cluster_id(cluster_id)
        replica = await self._bootstrap_replica(SYSTEM, [self.node_id])
        replica.campaign()
        await self._announce()
        logger.info("node %s bootstrapped cluster %s at %s", self.node_id, cluster_id, self.address)

    async def _announce(self) -> None:
        """Add (or update) this node in the member table."""
        result = await self.router.run(SYSTEM, Op(SYS_JOIN, [self.node_id, self.address]), create=False)
        table, cluster_id = result
        self.directory.set_members(MemberTable.from_list(table))
        return cluster_id  # type: ignore[no-any-return]

    async def _join(self) -> None:
        if not self.directory.seeds:
            raise ConfigError("joining a cluster needs the address of one of its nodes (join=[...])")
        result = await self.router.run(SYSTEM, Op(SYS_JOIN, [self.node_id, self.address]), create=False)
        table, cluster_id = result
        if not isinstance(cluster_id, str):
            raise Unavailable("the cluster did not say its id; retry the join")
        self.store.init_node_meta(self.node_id, cluster_id)
        self.cluster_id = cluster_id
        self.transport.set_cluster_id(cluster_id)
        self.directory.set_members(MemberTable.from_list(table))
        self._joined.set()
        logger.info("node %s joined cluster %s at %s", self.node_id, cluster_id, self.address)

    async def _resume(self) -> None:
        for name in sorted(self.store.replicas()):
            if name not in self.replicas:
                self._start_replica(name)
        self._joined.set()

    async def _start(self) -> None:
        """Resume from the data dir, or join the cluster given, or bootstrap a new one."""
        if self.cluster_id is not None:
            await self._resume()
            if self.config.join:
                await self._check_join_cluster()
            self.nursery.start_soon(self._reannounce)
        elif self.config.join:
            await self._join()
        elif self.config.bootstrap:
            await self._bootstrap()

    async def _check_join_cluster(self) -> None:
        """A restarted node told to join: make sure the nodes it was given belong to its own cluster."""
        try:
            with trio.move_on_after(self.config.request_timeout):
                await self._announce()
        except ConfigError as exc:
            raise ConfigError(
                f"the data dir of node {self.node_id} belongs to cluster {self.cluster_id}, but the nodes at "
                f"{', '.join(self.config.join)} refused it ({exc}); start this node with another data dir "
                "(or remove this one) to join that cluster"
            ) from None
        except BoroughError as exc:
            logger.info("node %s could not announce itself yet: %s", self.node_id, exc)

    async def _reannounce(self) -> None:
        """After a restart (or after being declared dead), make sure the member table has this node, ACTIVE, at
        its current address."""
        try:
            await self._reannounce_loop()
        finally:
            self._reannouncing = False

    async def _reannounce_loop(self) -> None:
        while True:
            try:
                await self._announce()
                return
            except ConfigError as exc:
                logger.error("node %s was refused by its cluster: %s", self.node_id, exc)
                return
            except (BoroughError, OSError) as exc:
                logger.info("node %s could not announce itself yet: %s", self.node_id, exc)
                await trio.sleep(1.0)


class NodeBackend(RoutedBackend):
    """A member's partition operations: routed to the leader, except stale reads of a partition this node
    hosts, which read the local replica as DESIGN.md promises."""

    def __init__(self, node: Node, router: Router) -> None:
        super().__init__(router)
        self.node = node

    async def kv_get(self, partition: str, key: str | bytes, consistency: Consistency) -> bytes | None:
        if consistency == "stale" and partition in self.node.replicas:
            await trio.lowlevel.checkpoint()
            try:
                return self.node.store.get_encoded(partition, key)
            except NotFound:
                return None
        return await super().kv_get(partition, key, consistency)

    async def kv_scan(
        self, partition: str, scan: ScanRange, limit: int, consistency: Consistency
    ) -> tuple[list[tuple[str | bytes, bytes | None]], bool]:
        if consistency == "stale" and partition in self.node.replicas:
            await trio.lowlevel.checkpoint()
            items, more = scan_page(self.node, partition, scan, limit)
            return [(k, v) for k, v in items], more
        return await super().kv_scan(partition, scan, limit, consistency)


def _new_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


@asynccontextmanager
async def open_node(
    *,
    handler: Handler | None = None,
    network: Network | None = None,
    store: Store | None = None,
    offload: bool = True,
    trace: Callable[[str, tuple[Any, ...]], None] | None = None,
    **settings: Any,
) -> AsyncIterator[Node]:
    """Run a Borough node for the duration of the ``async with`` block.

    Settings (``listen``, ``join``, ``data_dir``, ``replicas``, ...) come from keyword arguments, then
    ``BOROUGH_*`` environment variables, then defaults (see ``NodeConfig``). ``network`` and ``store`` replace
    TCP and LevelDB (the simulator passes its own); ``offload=False`` keeps disk writes on the trio thread (for
    deterministic simulation); ``trace`` is the simulator's hook for recording a run (see ``Node.trace``)."""
    config = NodeConfig.from_env(settings)
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8), "big")
    rng = random.Random(seed)
    owned_store = store is None
    if store is None:
        store = MemoryStore() if config.data_dir is None else LevelDBStore.open(config.data_dir)
    try:
        node = Node(config, store=store, rng=rng, handler=handler)
        node.trace = trace
        async with (
            open_group_commit(store, offload=offload) as committer,
            open_transport(
                network or TcpNetwork(),
                identity=Identity(cluster_id=node.cluster_id, node_id=node.node_id, address=config.advertise),
                listen=config.listen,
                on_message=node._on_message,
                on_call=node._on_call,
                rng=random.Random(rng.getrandbits(64)),
            ) as transport,
            trio.open_nursery() as nursery,
        ):
            node.committer = committer
            node.transport = transport
            node.nursery = nursery
            if config.advertise is None and transport.listen_address is not None:
                node.address = transport.listen_address
            node.directory._self = Target(node.node_id, node.address)
            swim = Swim(node.node_id, node.address, rng=random.Random(rng.getrandbits(64)))  # type: ignore[arg-type]
            membership = await nursery.start(_run_membership, node, swim)
            node.membership = membership
            nursery.start_soon(node._ticker)
            nursery.start_soon(node._flusher)
            nursery.start_soon(node._member_refresher)
            nursery.start_soon(node._system_duties)
            nursery.start_soon(node._stray_sweeper)
            await node._start()
            yield node
            nursery.cancel_scope.cancel()
    finally:
        if owned_store:
            store.close()


async def _run_membership(node: Node, swim: Swim, task_status: trio.TaskStatus[MembershipDriver]) -> None:
    def send(address: str, message: object) -> bool:
        return node.transport.send(address, ["swim", message])

    async with open_membership(swim, send, events_capacity=0, on_event=node._on_swim_event) as driver:
        task_status.started(driver)
        await trio.sleep_forever()


async def serve(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED, **settings: Any) -> None:
    """Run one node until cancelled: ``trio.run(borough.serve)`` or ``await nursery.start(borough.serve, ...)``
    (which returns the running ``Node``)."""
    async with open_node(**settings) as node:
        task_status.started(node)
        await trio.sleep_forever()
