"""The node: one Borough process in a cluster, and the public entry points ``open_node`` and ``serve``.

This module owns wiring and the public API only. ``open_node`` opens the store, the group commit, the
transport and the nursery every background task lives in, then builds a complete ``Node``: its services each
receive the narrow pieces they use (see the layout table in the README), and the node hands inbound frames and
calls to them. What each service does lives in its own module: the replica registry and ticker
(``registry``), the Raft outbox (``outbox``), op execution (``server``), routing (``session``, ``routing``,
``directory``), snapshots, the member table (``members``), ``_system`` duties and the stray sweep
(``duties``), and this node's place in its cluster (``cluster``).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from borough.config import NodeConfig
from borough.errors import Overloaded, RemoteProtocolError
from borough.ids import NodeId
from borough.node.cluster import Cluster, new_id
from borough.node.collector import collector_tuned
from borough.node.directory import Directory
from borough.node.duties import Duties
from borough.node.failover import Failover
from borough.node.incarnations import Stamp
from borough.node.members import MemberWatch
from borough.node.metrics import NodeMetrics
from borough.node.outbox import RaftOutbox
from borough.node.quick import QuickCalls
from borough.node.records import MemberStatus
from borough.node.registrar import Registrar
from borough.node.registry import Replicas
from borough.node.replica import Replica
from borough.node.roles import Roles
from borough.node.routing import Target
from borough.node.server import Server
from borough.node.session import DRAIN_POLL, Session
from borough.node.snapshots import Snapshots
from borough.node.status import serve_node_http
from borough.node.system_state import SYSTEM
from borough.node.transaction import Transactions
from borough.partition import Partition, PartitionBackend, check_partition_name
from borough.raft.messages import InstallSnapshot, Message
from borough.request import Handler, Request, is_transactional
from borough.ring.members import MemberTable
from borough.ring.membership import MemberEvent, Swim, SwimEvent
from borough.ring.membership_driver import MembershipDriver, open_membership
from borough.store import GroupCommit, MemoryStore, Store, open_group_commit
from borough.wire.network import Network
from borough.wire.records import IncomingCall, PeerInfo
from borough.wire.security import open_network
from borough.wire.settings import WireSettings
from borough.wire.transport import Identity, Transport, open_transport

__all__ = ["Node", "open_node", "serve"]

logger = logging.getLogger(__name__)

#: The simulator's hook for recording a run: ``trace(event, details)`` on each tick round and leader change.
Trace = Callable[[str, tuple[Any, ...]], None]


class Node:
    """A running Borough node. Made by ``open_node``; see DESIGN.md for the API."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        node_id: str,
        cluster_id: str | None,
        address: str,
        store: Store,
        committer: GroupCommit,
        transport: Transport,
        detector: MembershipDriver,
        nursery: trio.Nursery,
        rng: random.Random,
        handler: Handler | None,
        trace: Trace | None = None,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.address = address
        self.store = store
        self.committer = committer
        self.fsync = config.fsync
        self.trace = trace
        self._nursery = nursery
        self._detector = detector
        self.transport = transport
        out_of_touch = 2 * config.election_ticks * config.tick_interval
        me = Target(node_id, address)
        self.directory = Directory(
            system_call=lambda op: self.session.system(op),
            seeds=config.join,
            local_system=lambda: self.replicas.system_state(),
            self_target=me,
            on_miss=lambda: self.member_watch.want_refresh(),
            replicas=config.replicas,
        )
        self.replicas = Replicas(
            host=self,
            config=config,
            rng=rng,
            nursery=nursery,
            find_record=partial(self.directory.record, create=False),
            known_record=self.directory.cached_record,
            on_deleted=lambda name: self.session.router.learn_leader(name, None),
            on_tick=None if trace is None else lambda n: trace("tick", (n,)),
            after_round=lambda: self.outbox.flush(),  # (every Raft message is sent in a round: none waits a pass)
        )
        leaders = self.replicas.leaders
        self.failover = Failover(node_id=node_id, replicas=self.replicas, leaders=leaders, members=self.directory)
        self.outbox = RaftOutbox(
            node_id=node_id, send=transport.send, address_of=self.directory.address_of, deliver=self.replicas.deliver
        )
        self.snapshots = Snapshots(
            node_id=node_id,
            call=transport.call,
            address_of=self.directory.address_of,
            find_replica=self.replicas.for_snapshot,
            nursery=nursery,
            timeout=config.request_timeout,
            max_sends=config.max_snapshot_sends,
            max_receives=config.max_snapshot_receives,
            bytes_per_second=config.snapshot_bytes_per_second,
            offload=committer.offloads,
        )
        self.roles = Roles(
            members=lambda: self.directory.members, unknown_member=lambda: self.member_watch.want_refresh()
        )
        transport.trusts_address = self.roles.trusts_address
        self.server = Server(
            node_id=node_id,
            roles=self.roles,
            config=config,
            store=store,
            replicas=self.replicas,
            addresses=self.directory,
            snapshots=self.snapshots,
            replica_set=lambda name, table: self.directory.ring(table).replica_set(name),
            ring_targets=lambda name: self.directory.ring().replica_set(name),
            hosting=self.replicas.hosting,
            cluster_id=lambda: self.cluster.cluster_id,
            invoke_handler=None,
            registrar=Registrar(nursery),
        )
        self.session = Session(
            directory=self.directory,
            call=transport.call,
            limits=self.server.limits,
            request_timeout=config.request_timeout,
            rng=rng,
            me=me,
            execute_here=self.server.execute,
            hosted=lambda name: store if name in self.replicas else None,
        )
        self.transactions = self.server.transactions = Transactions.for_node(store, self.session, self.replicas)
        self.cluster = Cluster(
            node_id=node_id,
            address=address,
            cluster_id=cluster_id,
            config=config,
            store=store,
            replicas=self.replicas,
            session=self.session,
            directory=self.directory,
            set_transport_cluster=transport.set_cluster_id,
            nursery=nursery,
            rng=rng,
        )
        self.member_watch = MemberWatch(
            node_id=node_id,
            directory=self.directory,
            detector=detector,
            system_replica=lambda: self.replicas.get(SYSTEM),
            joined=lambda: self.cluster.cluster_id is not None,
            out_of_touch=out_of_touch,
            on_declared_dead=lambda: self.cluster.reannounce(declared_dead=True),
            on_leaving=self.cluster.decommissioned,
        )
        self.duties = Duties(
            node_id=node_id,
            replicas=self.replicas,
            members=self.member_watch,
            ring_for=self.directory.ring,
            partition_info=self.session.partition_info,
            config=config,
            out_of_touch=out_of_touch,
            nursery=nursery,
        )
        self.handler = handler
        self.metrics = NodeMetrics(self)
        self.server.on_op, committer.observe = self.metrics.observe_op, self.metrics.observe_commit
        self.metrics_address: str | None = None  # where the HTTP listener (metrics_listen) serves, once it does

    def __repr__(self) -> str:
        return f"<Node {self.node_id} at {self.address}>"

    # --- public API -------------------------------------------------------------------------------------

    @property
    def handler(self) -> Handler | None:
        """The application's request handler (may be set after the node started)."""
        return self._handler

    @handler.setter
    def handler(self, handler: Handler | None) -> None:
        self._handler = handler
        self.server.invoke_handler = None if handler is None else self._invoke_handler
        self.server.transactional = is_transactional(handler)

    @property
    def cluster_id(self) -> str | None:
        return self.cluster.cluster_id

    def whoami(self) -> str:
        """This node's id (stable across restarts; ``node.address`` is where it listens)."""
        return self.node_id

    def partition(self, name: str) -> Partition:
        """A handle on partition ``name``; its operations reach the partition's leader wherever it is."""
        return Partition(self.session, check_partition_name(name), self.session.limits)

    async def request(self, partition: str, body: Any) -> Any:
        """Run the handler on ``partition``'s leader, once (docs/transactions.md); its exception: RemoteError."""
        return await self.session.request(check_partition_name(partition), body)

    async def join(self, address: str) -> None:
        """Join the cluster of the node at ``address`` (after ``bootstrap=False``; ConfigError if in one)."""
        await self.cluster.join(address)

    async def members(self) -> MemberTable:
        """The member table, as ``_system``'s leader knows it."""
        return await self.session.members()

    async def partitions(self) -> list[str]:
        """Every partition the cluster has, in name order."""
        return await self.session.partitions()

    async def member_status(self) -> list[MemberStatus]:
        """Every member, its state and the replicas and leaderships it holds (None: it did not answer)."""
        return await self.session.member_status()

    async def decommission(self, node_id: str) -> None:
        """Drain member ``node_id`` (marked LEAVING: its groups move to the others, leaderships first), then
        mark it DEAD once no partition lists it; works for a member that is down too, and one decommissioned
        stays out. Takes as long as moving its data: bound it with your own cancel scope."""
        await self.session.decommission(node_id)

    async def leave(self) -> None:
        """Decommission this node (see ``decommission``), then leave the ``async with open_node(...)`` block."""
        self.cluster.left = True
        await self.session.decommission(self.node_id)
        while len(self.replicas):  # polled: each removed replica deletes its data in its own task
            await self.duties.sweep_once()
            await trio.sleep(DRAIN_POLL)

    async def _invoke_handler(self, name: str, local: PartitionBackend, held: PartitionBackend | None, x: Any) -> Any:
        assert self._handler is not None
        return await self._handler(Request.make(self, name, local, held, x, self.session.limits))

    # --- ReplicaHost ------------------------------------------------------------------------------------

    def send_raft(self, partition: str, messages: Sequence[Message], stamp: Stamp) -> None:
        self.outbox.send(partition, messages, stamp)

    def send_snapshot(self, replica: Replica, message: InstallSnapshot) -> None:
        self.snapshots.start_send(replica, message)

    def leader_changed(self, partition: str, leader: str | None, term: int) -> None:
        if self.trace is not None:
            self.trace("leader", (partition, leader, term))
        self.replicas.leaders.changed(partition, leader)
        address = self.directory.address_of(leader) if leader is not None else None
        self.session.router.learn_leader(partition, Target(leader, address) if address is not None else None)

    # --- the wire ---------------------------------------------------------------------------------------

    def on_message(self, peer: PeerInfo, message: Any) -> None:
        taken = self.roles.frames_from(peer)
        if taken is None:
            return
        self.directory.learn_address(peer.node_id, peer.address)  # (to answer it; bounded)
        if taken == "system":  # a node our table does not list yet: only _system's own Raft traffic
            if _kind(message) == "raft":
                self.outbox.receive(peer, message, only=SYSTEM)
        elif _kind(message) == "swim":
            if peer.address:
                try:
                    self._detector.deliver(peer.address, message[1])
                except RemoteProtocolError as exc:  # the peer's fault, not ours: drop it as the outbox does Raft's
                    logger.warning("dropped a malformed SWIM message from %s: %s", peer, exc)
        else:
            self.outbox.receive(peer, message)

    async def on_call(self, peer: PeerInfo, call: IncomingCall) -> Any:
        return await self.server.handle_call(call)

    async def run(self) -> None:
        """The node's background loops (in its nursery), then this node's place in the cluster."""
        nursery = self._nursery
        nursery.start_soon(self.replicas.tick_forever)
        nursery.start_soon(self.member_watch.refresh_forever)
        nursery.start_soon(self.duties.system_forever)
        nursery.start_soon(self.duties.placement_forever)
        nursery.start_soon(self.duties.sweep_forever)
        nursery.start_soon(self.transactions.effects.pump_forever)
        if self.config.metrics_listen is not None:
            self.metrics_address = await nursery.start(serve_node_http, self, self.config.metrics_listen)
        await self.cluster.start()


def _kind(frame: Any) -> Any:
    """A frame's kind ("raft", "swim"), or None for anything that is not a two-item list."""
    return frame[0] if isinstance(frame, list) and len(frame) == 2 else None


class _Late:
    """The transport's callbacks, before the node they reach exists: a frame is dropped (Raft and SWIM
    retransmit) and a call is refused as Overloaded (nothing ran; the caller backs off and retries)."""

    node: Node | None = None

    def on_message(self, peer: PeerInfo, message: Any) -> None:
        if self.node is not None:
            self.node.on_message(peer, message)

    async def on_call(self, peer: PeerInfo, call: IncomingCall) -> Any:
        if self.node is None:
            raise Overloaded("this node is still starting; retry shortly")
        return await self.node.on_call(peer, call)

    def on_swim_event(self, event: SwimEvent) -> None:
        if self.node is not None:
            self.node.member_watch.on_swim_event(event)
            if isinstance(event, MemberEvent):
                self.node.failover.on_member_event(event)  # followers of a gone leader campaign at once


@asynccontextmanager
async def open_node(
    *,
    handler: Handler | None = None,
    network: Network | None = None,
    store: Store | None = None,
    offload: bool = True,
    trace: Trace | None = None,
    **settings: Any,
) -> AsyncIterator[Node]:
    """Run a Borough node for the duration of the ``async with`` block.

    Settings (``listen``, ``join``, ``data_dir``, ``replicas``, ...) come from keyword arguments, then
    ``BOROUGH_*`` environment variables, then defaults (see ``NodeConfig``). ``certs_dir`` turns on mutual TLS
    (``ca.crt``, ``node.crt``, ``node.key``; see ``borough certs``); without it a node on a non-loopback address
    refuses to start unless ``insecure=True``. ``network`` and ``store`` replace TCP and LevelDB (the simulator
    passes its own; ``certs_dir`` wraps it in TLS too); ``offload=False`` keeps disk writes on the trio thread (for
    deterministic simulation); ``trace`` is the simulator's hook for recording a run (see ``Trace``)."""
    config = NodeConfig.from_env(settings)
    with collector_tuned(config.gc_threshold):  # (before the store opens: loading replicas allocates the most)
        async with _open_node(config, handler, network, store, offload, trace) as node:
            yield node


@asynccontextmanager
async def _open_node(
    config: NodeConfig,
    handler: Handler | None,
    network: Network | None,
    store: Store | None,
    offload: bool,
    trace: Trace | None,
) -> AsyncIterator[Node]:
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8), "big")
    rng = random.Random(seed)
    owned_store = store is None
    if store is None:
        store = _open_store(config)
    try:
        meta = store.node_meta()
        node_id = meta.node_id if meta is not None else new_id(rng)
        cluster_id = meta.cluster_id if meta is not None else None
        late = _Late()
        async with (
            open_group_commit(store, offload=offload) as committer,
            open_transport(
                open_network(
                    role="node",
                    certs_dir=config.certs_dir,
                    insecure=config.insecure,
                    listen=config.listen,
                    inner=network,
                    max_handshaking=config.max_handshaking,
                ),
                identity=Identity(cluster_id=cluster_id, node_id=node_id, address=config.advertise),
                listen=config.listen,
                on_message=late.on_message,
                on_call=late.on_call,
                rng=random.Random(rng.getrandbits(64)),
                settings=WireSettings(
                    max_inbound_connections=config.max_connections, max_handshaking=config.max_handshaking
                ),
            ) as transport,
            trio.open_nursery() as nursery,
        ):
            address = config.advertise or transport.listen_address or config.listen
            swim = Swim(NodeId(node_id), address, rng=random.Random(rng.getrandbits(64)))
            detector = await nursery.start(_run_detector, transport, swim, late.on_swim_event)
            node = Node(
                config,
                node_id=node_id,
                cluster_id=cluster_id,
                address=address,
                store=store,
                committer=committer,
                transport=transport,
                detector=detector,
                nursery=nursery,
                rng=rng,
                handler=handler,
                trace=trace,
            )
            late.node = node
            transport.on_unreachable = node.failover.on_unreachable
            quick = QuickCalls(
                node_id=node_id,
                limits=node.server.limits,
                roles=node.roles,
                store=store,
                replica=node.replicas.get,
                learn_address=node.directory.learn_address,
                on_op=lambda: node.server.on_op,
            )
            transport.on_quick_call = quick.try_call
            # A request's round runs in the step of the reader that brought its frame (``Rounds.leave``).
            transport.dispatch_hooks = quick.hooks(node.replicas.rounds)
            await node.run()
            yield node
            nursery.cancel_scope.cancel()
    finally:
        if owned_store:
            store.close()


def _open_store(config: NodeConfig) -> Store:
    if config.data_dir is None:
        return MemoryStore()
    from borough.store.leveldb import LevelDBStore  # the one import of plyvel, only when a data dir is used

    return LevelDBStore.open(config.data_dir)


async def _run_detector(
    transport: Transport,
    swim: Swim,
    on_event: Callable[[SwimEvent], None],
    task_status: trio.TaskStatus[MembershipDriver],
) -> None:
    def send(address: str, message: object) -> bool:
        return transport.send(address, ["swim", message])

    async with open_membership(swim, send, events_capacity=0, on_event=on_event) as driver:
        task_status.started(driver)
        await trio.sleep_forever()


async def serve(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED, **settings: Any) -> None:
    """Run one node until cancelled: ``trio.run(borough.serve)`` or ``await nursery.start(borough.serve, ...)``
    (which returns the running ``Node``)."""
    async with open_node(**settings) as node:
        task_status.started(node)
        await trio.sleep_forever()
