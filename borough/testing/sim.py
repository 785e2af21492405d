"""``SimCluster``: whole Borough nodes in one trio run, over a simulated network and in-memory disks.

This module owns a simulated cluster's lifetime and its fault API: every node runs the production code
(``open_node``: replicas, Raft drivers, wire, routing) with a ``SimNetwork`` host as its network and a
``MemoryStore`` as its disk, which survives a crash minus its unsynced writes. Run it under
``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock`` fixture) so simulated
seconds cost no wall time.

Determinism: entering the cluster seeds trio's scheduler (``scheduler.seed_scheduler``); the network, every
node and every client get seeds derived from ``seed``; disk writes run inline. Everything the run does is
recorded in ``sim.trace`` (deliveries, tick rounds, leader changes, faults, and what ``record`` is given), so
two runs of one scenario can be compared by ``sim.trace.digest()``.

It also answers questions about the cluster's state that checks need (who leads a partition, whether its
replicas agree), but knows nothing of what a test decides from them.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from borough.client import Client, open_client
from borough.errors import BoroughError, StorageError
from borough.node.node import Node, open_node
from borough.node.statemachine import encode_command
from borough.node.system_state import SYSTEM, state_command
from borough.request import Handler
from borough.ring.members import MemberState
from borough.store import MemoryStore
from borough.testing.scheduler import TaskGate, seed_scheduler
from borough.testing.trace import Trace
from borough.wire.simnet import SimNetwork

__all__ = ["SimCluster", "SimNode"]

PORT = 7000


def _only(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is a ``kind``, or an exception group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(inner, kind) for inner in exc.exceptions)
    return isinstance(exc, kind)


class SimNode:
    """One simulated machine: its host name, address, disk, and the node running on it (None when down)."""

    def __init__(self, cluster: SimCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.host = f"n{index}"
        self.address = f"{self.host}:{PORT}"
        self.store = MemoryStore()
        self.disk_error: BaseException | None = None  # set by ``SimCluster.fail_disk``
        self.fail_stopped = False  # its node stopped on a disk error: the next boot reopens the disk
        self.node: Node | None = None
        self.node_id: str | None = None  # known once the node first ran; stable across restarts
        self.boots = 0
        self.paused = False
        self.removed = False
        self.booting = False
        self._scope: trio.CancelScope | None = None
        self._task: trio.lowlevel.Task | None = None
        self._stopped = trio.Event()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "up" if self.node is not None else "down"
        if self.removed:
            state += ", removed"
        return f"<SimNode {self.index} {self.address} {state}>"

    @property
    def up(self) -> bool:
        """Running (a paused node is up: its process exists, it just does not run)."""
        return self.node is not None


class SimCluster:
    """A simulated cluster of ``nodes`` Borough nodes. Use as ``async with SimCluster(5, seed=1) as sim:``.

    Node 0 bootstraps the cluster and the others join it, one by one. ``config`` is passed to every node
    (``election_ticks``, ``request_timeout``, ...); ``handler`` is every node's request handler.
    ``keep_trace`` is how many recent trace lines ``sim.trace`` keeps for reports (None: all; the digest always
    covers every event). Must run under ``trio.testing.MockClock(autojump_threshold=0)``."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        seed: int = 0,
        handler: Handler | None = None,
        latency: float = 0.0005,
        jitter: float = 0.0002,
        keep_trace: int | None = 200,
        **config: Any,
    ) -> None:
        if nodes < 1:
            raise ValueError("a simulated cluster needs at least one node")
        self.seed = seed
        self.handler = handler
        self.config = config
        self.trace = Trace(keep=keep_trace)
        self.net = SimNetwork(seed, latency=latency, jitter=jitter)
        self.net.tracer = self.trace.record_bytes
        self.nodes = [SimNode(self, i) for i in range(nodes)]
        self._nursery: trio.Nursery | None = None
        self._clients = 0
        self._gate = TaskGate()

    def __getitem__(self, index: int) -> Node:
        node = self.nodes[index].node
        if node is None:
            raise RuntimeError(f"simulated node {index} is down")
        return node

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    async def __aenter__(self) -> SimCluster:
        self._cm = self._run()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        error = exc[1]
        if isinstance(error, BaseException) and not isinstance(error, trio.Cancelled):
            error.add_note(self.replay_note())
        return await self._cm.__aexit__(*exc)

    def replay_note(self) -> str:
        """What a failure inside this cluster says about replaying it (added to the exception as a note)."""
        where = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        how = f"python -m pytest {shlex.quote(where)}" if where else "run the same code again"
        return (
            f"borough.testing: SimCluster(seed={self.seed}) failed at t={trio.current_time():g} after "
            f"{self.trace.count} events (trace digest {self.trace.digest()}); the run is a function of its seed, "
            f"so it replays exactly: {how}"
        )

    def record(self, kind: str, *details: object) -> None:
        """Add an event of the test's own (a client result, a check) to the trace."""
        self.trace.record(kind, *details)

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[SimCluster]:
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock) or clock.autojump_threshold != 0:
            raise RuntimeError(
                "SimCluster runs on virtual time: run it under trio.testing.MockClock(autojump_threshold=0) "
                "(in pytest-trio, take the autojump_clock fixture as an argument of the test; elsewhere use "
                "borough.testing.run_simulation)"
            )
        seed_scheduler(self.seed)
        self.record("start", self.seed, len(self.nodes), sorted(self.config.items()))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for sim_node in self.nodes:
                await self._boot(sim_node)
            with trio.fail_after(60):
                await self.wait_system_replicated()
            try:
                yield self
            finally:
                self._gate.open_all()
                nursery.cancel_scope.cancel()

    # --- nodes --------------------------------------------------------------------------------------------

    def _join_for(self, sim_node: SimNode) -> list[str]:
        if sim_node.index == 0 and sim_node.boots == 0:
            return []
        return [n.address for n in self.nodes if n is not sim_node]

    async def _boot(self, sim_node: SimNode) -> Node:
        assert self._nursery is not None
        if sim_node.node is not None or sim_node.booting:
            raise RuntimeError(f"simulated node {sim_node.index} is already up")
        sim_node.booting = True
        try:
            node: Node = await self._nursery.start(self._run_node, sim_node)
        finally:
            sim_node.booting = False
        return node

    async def _run_node(self, sim_node: SimNode, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        sim_node._stopped = trio.Event()
        settings = dict(self.config)
        settings.setdefault("seed", self.seed * 1_000_003 + sim_node.index * 7919 + sim_node.boots)
        join = self._join_for(sim_node)
        sim_node.boots += 1
        index = sim_node.index

        def trace(event: str, details: tuple[Any, ...]) -> None:
            self.trace.record(event, index, *details)

        self.record("boot", index, sim_node.boots)
        if sim_node.fail_stopped:
            sim_node.fail_stopped = False
            sim_node.store.crash()  # its process exited: what it had not synced is gone, and the store reopens
        try:
            with trio.CancelScope() as scope:
                sim_node._scope = scope
                sim_node._task = trio.lowlevel.current_task()
                async with open_node(
                    listen=sim_node.address,
                    join=join,
                    data_dir=None,
                    network=self.net.host(sim_node.host),
                    store=sim_node.store,
                    offload=False,
                    handler=self.handler,
                    trace=trace,
                    **settings,
                ) as node:
                    sim_node.node = node
                    sim_node.node_id = node.node_id
                    task_status.started(node)
                    await trio.sleep_forever()
        except BaseException as exc:
            # A node whose disk failed stops (fail-stop), as its process would exit; the cluster goes on. Any
            # other storage error is a bug and fails the run.
            if sim_node.disk_error is None or not _only(exc, StorageError):
                raise
            self.record("fail-stop", index, str(sim_node.disk_error))
            sim_node.fail_stopped = True
        finally:
            sim_node.node = None
            sim_node._scope = None
            sim_node._task = None
            sim_node.paused = False
            sim_node._stopped.set()

    async def crash(self, index: int) -> None:
        """Kill node ``index`` as a power cut would: its tasks stop and its disk loses unsynced writes.
        (A paused node is resumed and killed at the same virtual instant.)"""
        sim_node = self.nodes[index]
        self.record("crash", index)
        await self._stop(sim_node)
        sim_node.store.crash()

    async def stop(self, index: int) -> None:
        """Stop node ``index`` cleanly (everything written so far stays on its disk)."""
        self.record("stop", index)
        await self._stop(self.nodes[index])

    async def _stop(self, sim_node: SimNode) -> None:
        if sim_node._scope is None:
            raise RuntimeError(f"simulated node {sim_node.index} is not running")
        if sim_node.paused:
            self._unfreeze(sim_node)
        sim_node._scope.cancel()
        await sim_node._stopped.wait()

    async def restart(self, index: int) -> Node:
        """Start node ``index`` again on its disk (after ``crash`` or ``stop``)."""
        sim_node = self.nodes[index]
        if sim_node.removed:
            raise RuntimeError(f"simulated node {index} was removed from the cluster; add a new node instead")
        return await self._boot(sim_node)

    def fail_disk(self, index: int, error: BaseException | None = None) -> None:
        """Make node ``index``'s disk refuse every write from now on (a full disk by default): its next write
        fails and the node stops, as a real one does (fail-stop), while the others go on. ``heal_disk`` undoes
        it for later boots."""
        sim_node = self.nodes[index]
        sim_node.disk_error = error if error is not None else OSError(28, "No space left on device")
        self.record("fail-disk", index)
        sim_node.store.fail_writes(sim_node.disk_error)

    def heal_disk(self, index: int) -> None:
        sim_node = self.nodes[index]
        sim_node.disk_error = None
        sim_node.store.fail_writes(None)

    def pause(self, index: int) -> None:
        """Freeze node ``index`` as SIGSTOP would: none of its tasks runs, so its timers do not fire and it
        neither reads nor sends; the network keeps its connections and queues what peers send it (senders
        block once a link's buffer is full). Time goes on: on ``resume`` every timer that expired meanwhile
        fires at once and it reads what queued up, as a resumed process would. Call no method of a paused
        node's ``Node`` directly (that code would run in the caller's task); use a client or another node."""
        sim_node = self.nodes[index]
        if sim_node._task is None or sim_node.node is None:
            raise RuntimeError(f"simulated node {index} is not running, so it cannot be paused")
        if sim_node.paused:
            return
        self.record("pause", index)
        sim_node.paused = True
        self._gate.close(sim_node._task)

    def resume(self, index: int) -> None:
        """Let a paused node run again (no-op if it is not paused)."""
        sim_node = self.nodes[index]
        if sim_node.paused:
            self.record("resume", index)
            self._unfreeze(sim_node)

    def _unfreeze(self, sim_node: SimNode) -> None:
        sim_node.paused = False
        if sim_node._task is not None:
            self._gate.open(sim_node._task)

    async def add_node(self) -> SimNode:
        """A new machine joins the cluster."""
        sim_node = SimNode(self, len(self.nodes))
        self.nodes.append(sim_node)
        self.record("add", sim_node.index)
        await self._boot(sim_node)
        return sim_node

    async def remove_node(self, index: int, *, state: MemberState = MemberState.DEAD) -> None:
        """Node ``index`` leaves the cluster for good: it is stopped (if running) and marked ``state`` (DEAD,
        or LEAVING) in the member table through ``_system``, so the ring places nothing new on it and
        ``_system`` replaces it. Partitions it already holds keep their other replicas (moving them off it is
        later work), so they keep serving while a quorum of each is up. Bound it with ``trio.fail_after``."""
        if state not in (MemberState.DEAD, MemberState.LEAVING):
            raise ValueError(f"a removed node is DEAD or LEAVING, not {state.name}")
        sim_node = self.nodes[index]
        if sim_node.node_id is None:
            raise RuntimeError(f"simulated node {index} never ran, so it has no member to remove")
        self.record("remove", index, state.name)
        sim_node.removed = True  # first: nothing may restart it while it stops
        if sim_node.up:
            await self._stop(sim_node)
        command = encode_command(state_command(sim_node.node_id, state))
        while True:
            leader = self.leader_replica(SYSTEM)
            if leader is not None:
                try:
                    await leader.propose(command)
                    return
                except BoroughError:
                    pass  # lost leadership meanwhile: try the next leader
            await trio.sleep(0.1)

    async def wait_system_replicated(self) -> None:
        """Wait until ``_system`` has min(nodes up, replicas) voters, so no single node is vital to it (bound it
        with ``trio.fail_after``; entering the cluster bounds it by 60 simulated seconds)."""
        want = min(sum(1 for n in self.nodes if n.up), self.config.get("replicas", 3))
        while True:
            for sim_node in self.nodes:
                node = sim_node.node
                replica = node.replicas.get(SYSTEM) if node is not None else None
                if replica is not None and replica.is_leader:
                    conf = replica.status().conf_state
                    if len(conf.voters) >= want and not conf.joint:
                        return
            await trio.sleep(0.1)

    # --- questions about the cluster's state ---------------------------------------------------------------

    def running(self) -> list[SimNode]:
        """Nodes whose process runs (up and not paused)."""
        return [n for n in self.nodes if n.node is not None and not n.paused]

    def leader_replica(self, partition: str) -> Any:
        """The replica that leads ``partition`` among running nodes, as a majority of its group sees it: the
        leader of the highest term that a quorum of its voters (running, same term) recognise; else None."""
        replicas = [(n, n.node.replicas.get(partition)) for n in self.running() if n.node is not None]
        candidates = [r for _, r in replicas if r is not None and r.is_leader]
        by_id = {n.node_id: r for n, r in replicas if r is not None}
        for replica in sorted(candidates, key=lambda r: -r.term):
            conf = replica.status().conf_state
            term, me = replica.term, replica.host.node_id
            for voters in (conf.voters, conf.voters_outgoing):
                if not voters:
                    continue
                agree = sum(
                    1
                    for v in voters
                    if (r := by_id.get(v)) is not None and r.term == term and (v == me or r.leader == me)
                )
                if agree <= len(voters) // 2:
                    break
            else:
                return replica
        return None

    async def leader_index(self, partition: str, *, within: float = 10.0) -> int:
        """The index of the node whose replica leads ``partition`` (``leader_replica``), once one does; fails
        with ``trio.TooSlowError`` after ``within`` virtual seconds without a leader."""
        with trio.fail_after(within):
            await self.wait_for_leaders([partition])
        replica = self.leader_replica(partition)
        assert replica is not None
        return self.index_of(replica.host.node_id)

    async def wait_for_leaders(self, partitions: Iterable[str], *, poll: float = 0.05) -> float:
        """Wait until each partition has a leader that a quorum recognises (``leader_replica``); returns the
        virtual seconds waited. Bound it with ``trio.fail_after``."""
        start = trio.current_time()
        names = sorted(set(partitions))
        while True:  # polled: leadership changes inside the replicas, with no event to wait on
            if all(self.leader_replica(p) is not None for p in names):
                return trio.current_time() - start
            await trio.sleep(poll)

    def replica_states(self, partition: str) -> dict[int, tuple[int, list[tuple[Any, bytes]]]]:
        """Each running member's replica of ``partition``: node index -> (applied index, its items encoded).
        Members are those of the configuration of the partition's leader (every running replica when it has
        none); a replica left on a node the group removed is not a member."""
        leader = self.leader_replica(partition)
        members = set(leader.status().conf_state.members()) if leader is not None else None
        out = {}
        for sim_node in self.running():
            node = sim_node.node
            assert node is not None
            replica = node.replicas.get(partition)
            if replica is not None and (members is None or node.node_id in members):
                out[sim_node.index] = (replica.applied, list(node.store.iterate(partition, encoded=True)))
        return out

    async def wait_converged(self, partitions: Iterable[str], *, poll: float = 0.05) -> None:
        """Wait until, for each partition, every member of its leader's configuration that is running has
        applied the leader's commit index. Bound it with ``trio.fail_after``."""
        names = sorted(set(partitions))
        while True:
            done = True
            for name in names:
                leader = self.leader_replica(name)
                if leader is None:
                    done = False
                    break
                status = leader.status()
                for member in status.conf_state.members():
                    sim_node = self._by_id(member)
                    if sim_node is None or sim_node.node is None or sim_node.paused:
                        continue
                    replica = sim_node.node.replicas.get(name)
                    if replica is None or replica.applied < status.commit:
                        done = False
            if done:
                return
            await trio.sleep(poll)

    def describe(self) -> str:
        """The cluster's state as text, for failure reports: each node, and each of its replicas' Raft state."""
        lines = [f"cluster at t={trio.current_time():g} (seed {self.seed}):"]
        for sim_node in self.nodes:
            lines.append(f"  node {sim_node.index} {sim_node.node_id} {sim_node!r}")
            node = sim_node.node
            if node is None:
                continue
            for name in sorted(node.replicas):
                replica = node.replicas.get(name)
                assert replica is not None
                st = replica.status()
                conf = st.conf_state
                voters = ",".join(self._short(v) for v in conf.voters)
                if conf.voters_outgoing:
                    voters += " & " + ",".join(self._short(v) for v in conf.voters_outgoing)
                learners = ",".join(self._short(v) for v in (*conf.learners, *conf.learners_next))
                lines.append(
                    f"    {name}: {st.role.name.lower()} term {st.term} leader {self._short(st.leader)} "
                    f"commit {st.commit} applied {replica.applied} last {st.last_index} voters [{voters}]"
                    + (f" learners [{learners}]" if learners else "")
                    + (" quiesced" if replica.quiesced else "")
                )
        return "\n".join(lines)

    def _short(self, node_id: str | None) -> str:
        if node_id is None:
            return "-"
        sim_node = self._by_id(node_id)
        return f"n{sim_node.index}" if sim_node is not None else node_id[:6]

    def _by_id(self, node_id: str) -> SimNode | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def index_of(self, node_id: str) -> int:
        """The simulated node index of ``node_id``."""
        sim_node = self._by_id(node_id)
        if sim_node is None:
            raise KeyError(f"no simulated node has id {node_id!r}")
        return sim_node.index

    # --- network faults -----------------------------------------------------------------------------------

    def _hosts(self, indexes: Iterable[int]) -> list[str]:
        return [self.nodes[i].host for i in indexes]

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between nodes of different groups (nodes not named keep their links; clients keep
        theirs to every node)."""
        lists = [sorted(g) for g in groups]
        self.record("partition", lists)
        self.net.partition(*(self._hosts(g) for g in lists))

    def cut(self, a: int, b: int, *, one_way: bool = False) -> None:
        """Stop delivery a->b and b->a (``one_way``: a->b only); live connections crossing it are severed."""
        self.record("cut", a, b, one_way)
        self.net.cut(self.nodes[a].host, self.nodes[b].host, one_way=one_way)

    def cut_client(self, index: int, client_host: str, *, one_way: bool = False) -> None:
        """Stop delivery from node ``index`` to the client on ``client_host`` (and back, unless ``one_way``):
        with ``one_way`` the node gets the client's calls but its replies are lost."""
        self.record("cut-client", index, client_host, one_way)
        self.net.cut(self.nodes[index].host, client_host, one_way=one_way)

    def isolate(self, index: int) -> None:
        """Cut node ``index`` from every other host, clients included."""
        self.record("isolate", index)
        self.net.isolate(self.nodes[index].host)

    def heal(self) -> None:
        """Remove every cut and isolation (latencies set stay as they are; ``reset_latency`` undoes them)."""
        self.record("heal")
        self.net.heal()

    def set_latency(self, a: int, b: int, mean: float, jitter: float = 0.0) -> None:
        """Latency of the link between nodes a and b, both ways: ``mean`` +- ``jitter`` seconds (uniform)."""
        self.record("latency", a, b, mean, jitter)
        self.net.set_latency(self.nodes[a].host, self.nodes[b].host, mean, jitter)

    def reset_latency(self) -> None:
        """Every link back to the cluster's default latency and jitter."""
        self.record("latency-reset")
        self.net._latency.clear()

    def kill_connections(self, index: int) -> None:
        """Reset every live connection of node ``index`` (like TCP RSTs); they reconnect as usual."""
        self.record("rst", index)
        self.net.kill_connections(self.nodes[index].host)

    # --- clients ------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def client(
        self, *, request_timeout: float = 10.0, seeds: Sequence[int] | None = None, host: str | None = None
    ) -> AsyncIterator[Client]:
        """A client process on its own simulated host (``host``, default ``client1``, ``client2``, ... in order
        of creation; ``cut_client`` names it), given the addresses of nodes ``seeds`` (default: every node that
        is not removed)."""
        self._clients += 1
        host_name = host if host is not None else f"client{self._clients}"
        if host_name in {n.host for n in self.nodes}:
            raise ValueError(f"{host_name!r} is a node's host; give the client another name")
        chosen = [self.nodes[i] for i in seeds] if seeds is not None else [n for n in self.nodes if not n.removed]
        async with open_client(
            [n.address for n in chosen],
            network=self.net.host(host_name),
            request_timeout=request_timeout,
            seed=self.seed * 1_000_003 + 500_009 * self._clients,
        ) as client:
            yield client
