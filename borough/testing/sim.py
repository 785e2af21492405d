"""``SimCluster``: whole Borough nodes in one trio run, over a simulated network and in-memory disks.

This module owns a simulated cluster's lifetime and its fault API: every node runs the production code
(``open_node``: replicas, Raft drivers, wire, routing) with a ``SimNetwork`` host as its network and a
``MemoryStore`` as its disk, which survives a crash minus its unsynced writes. Run it under
``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock`` fixture) so simulated
seconds cost no wall time. It knows nothing of what the tests check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import trio

from borough.client import Client, open_client
from borough.node import Node, open_node
from borough.request import Handler
from borough.store import MemoryStore
from borough.wire.simnet import SimNetwork

__all__ = ["SimCluster", "SimNode"]

PORT = 7000


class SimNode:
    """One simulated machine: its host name, address, disk, and the node running on it (None when down)."""

    def __init__(self, cluster: SimCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.host = f"n{index}"
        self.address = f"{self.host}:{PORT}"
        self.store = MemoryStore()
        self.node: Node | None = None
        self.boots = 0
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    def __repr__(self) -> str:
        state = "up" if self.node is not None else "down"
        return f"<SimNode {self.index} {self.address} {state}>"

    @property
    def up(self) -> bool:
        return self.node is not None


class SimCluster:
    """A simulated cluster of ``nodes`` Borough nodes. Use as ``async with SimCluster(5, seed=1) as sim:``.

    Node 0 bootstraps the cluster and the others join it, one by one. ``config`` is passed to every node
    (``election_ticks``, ``request_timeout``, ...); ``handler`` is every node's request handler."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        seed: int = 0,
        handler: Handler | None = None,
        latency: float = 0.0005,
        jitter: float = 0.0002,
        **config: Any,
    ) -> None:
        if nodes < 1:
            raise ValueError("a simulated cluster needs at least one node")
        self.seed = seed
        self.handler = handler
        self.config = config
        self.net = SimNetwork(seed, latency=latency, jitter=jitter)
        self.nodes = [SimNode(self, i) for i in range(nodes)]
        self._nursery: trio.Nursery | None = None
        self._clients = 0

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
        return await self._cm.__aexit__(*exc)

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[SimCluster]:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for sim_node in self.nodes:
                await self._boot(sim_node)
            with trio.fail_after(60):
                await self.wait_system_replicated()
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()

    # --- nodes --------------------------------------------------------------------------------------------

    def _join_for(self, sim_node: SimNode) -> list[str]:
        if sim_node.index == 0 and sim_node.boots == 0:
            return []
        return [n.address for n in self.nodes if n is not sim_node]

    async def _boot(self, sim_node: SimNode) -> Node:
        assert self._nursery is not None
        if sim_node.node is not None:
            raise RuntimeError(f"simulated node {sim_node.index} is already up")
        node: Node = await self._nursery.start(self._run_node, sim_node)
        return node

    async def _run_node(self, sim_node: SimNode, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        sim_node._stopped = trio.Event()
        settings = dict(self.config)
        settings.setdefault("seed", self.seed * 1_000_003 + sim_node.index * 7919 + sim_node.boots)
        join = self._join_for(sim_node)
        sim_node.boots += 1
        try:
            with trio.CancelScope() as scope:
                sim_node._scope = scope
                async with open_node(
                    listen=sim_node.address,
                    join=join,
                    data_dir=None,
                    network=self.net.host(sim_node.host),
                    store=sim_node.store,
                    offload=False,
                    handler=self.handler,
                    **settings,
                ) as node:
                    sim_node.node = node
                    task_status.started(node)
                    await trio.sleep_forever()
        finally:
            sim_node.node = None
            sim_node._scope = None
            sim_node._stopped.set()

    async def crash(self, index: int) -> None:
        """Kill node ``index`` as a power cut would: its tasks stop and its disk loses unsynced writes."""
        sim_node = self.nodes[index]
        await self._stop(sim_node)
        sim_node.store.crash()

    async def stop(self, index: int) -> None:
        """Stop node ``index`` cleanly (everything written so far stays on its disk)."""
        await self._stop(self.nodes[index])

    async def _stop(self, sim_node: SimNode) -> None:
        if sim_node._scope is None:
            raise RuntimeError(f"simulated node {sim_node.index} is not running")
        sim_node._scope.cancel()
        await sim_node._stopped.wait()

    async def restart(self, index: int) -> Node:
        """Start node ``index`` again on its disk (after ``crash`` or ``stop``)."""
        return await self._boot(self.nodes[index])

    async def add_node(self) -> SimNode:
        """A new machine joins the cluster."""
        sim_node = SimNode(self, len(self.nodes))
        self.nodes.append(sim_node)
        await self._boot(sim_node)
        return sim_node

    async def wait_system_replicated(self) -> None:
        """Wait until ``_system`` has min(nodes up, replicas) voters, so no single node is vital to it (bound it
        with ``trio.fail_after``; entering the cluster bounds it by 60 simulated seconds)."""
        from borough.system import SYSTEM

        want = min(sum(1 for n in self.nodes if n.up), self.config.get("replicas", 3))
        while True:
            for sim_node in self.nodes:
                node = sim_node.node
                replica = node.replicas.get(SYSTEM) if node is not None else None
                if replica is not None and replica.is_leader:
                    conf = replica.raw.status().conf_state
                    if len(conf.voters) >= want and not conf.joint:
                        return
            await trio.sleep(0.1)

    # --- network faults -----------------------------------------------------------------------------------

    def _hosts(self, indexes: Iterable[int]) -> list[str]:
        return [self.nodes[i].host for i in indexes]

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between nodes of different groups (nodes not named keep their links)."""
        self.net.partition(*(self._hosts(g) for g in groups))

    def cut(self, a: int, b: int, *, one_way: bool = False) -> None:
        self.net.cut(self.nodes[a].host, self.nodes[b].host, one_way=one_way)

    def isolate(self, index: int) -> None:
        self.net.isolate(self.nodes[index].host)

    def heal(self) -> None:
        self.net.heal()

    def set_latency(self, a: int, b: int, mean: float, jitter: float = 0.0) -> None:
        self.net.set_latency(self.nodes[a].host, self.nodes[b].host, mean, jitter)

    # --- clients ------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def client(self, *, request_timeout: float = 10.0) -> AsyncIterator[Client]:
        """A client process on its own simulated host, seeded with every node's address."""
        self._clients += 1
        host = self.net.host(f"client{self._clients}")
        async with open_client(
            self.addresses, network=host, request_timeout=request_timeout, seed=self.seed + self._clients
        ) as client:
            yield client
