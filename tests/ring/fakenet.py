"""A small in-test network for the trio membership driver: seeded latency, per-node loss, partitions, crashes.

The real simulated network comes from the wire layer; this fake only routes SWIM messages between drivers in
one trio run, under ``autojump_clock``. Messages go through CBOR bytes so the wire form is exercised too.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import attrs
import cbor2
import trio

from borough.raft.records import NodeId
from borough.ring.members import Member, MemberTable
from borough.ring.membership import MemberEvent, Swim, SwimConfig, SwimEvent
from borough.ring.membership_driver import MembershipDriver, SendFn, open_membership
from borough.ring.messages import Liveness


def node_name(i: int) -> NodeId:
    return NodeId(f"n{i:02d}")


def address_of(node_id: str) -> str:
    return f"{node_id}.local:7000"


def make_table(n: int, version: int = 1) -> MemberTable:
    return MemberTable(
        version=version, members=[Member(node_id=node_name(i), address=address_of(node_name(i))) for i in range(n)]
    )


@attrs.define
class FakeNetwork:
    rng: random.Random
    latency: tuple[float, float] = (0.001, 0.010)
    drivers: dict[str, MembershipDriver] = attrs.Factory(dict)
    loss: dict[str, float] = attrs.Factory(dict)
    groups: list[set[str]] | None = None
    crashed: set[str] = attrs.Factory(set)
    sent: int = 0
    delivered: int = 0
    _heap: list[tuple[float, int, str, str, bytes]] = attrs.Factory(list)
    _n: int = 0
    _wake: trio.Event = attrs.Factory(trio.Event)

    def connected(self, a: str, b: str) -> bool:
        if a in self.crashed or b in self.crashed:
            return False
        return self.groups is None or any(a in g and b in g for g in self.groups)

    def partition(self, *groups: Iterable[str]) -> None:
        self.groups = [{address_of(n) for n in g} for g in groups]

    def heal(self) -> None:
        self.groups = None

    def sender(self, src: str) -> SendFn:
        def send(address: str, message: object) -> bool:
            self.sent += 1
            loss = max(self.loss.get(src, 0.0), self.loss.get(address, 0.0))
            if loss and self.rng.random() < loss:
                return True  # lost on the way: the sender cannot tell
            self._n += 1
            when = trio.current_time() + self.rng.uniform(*self.latency)
            heapq.heappush(self._heap, (when, self._n, src, address, cbor2.dumps(message)))
            self._wake.set()
            return True

        return send

    async def run(self) -> None:
        while True:
            while self._heap and self._heap[0][0] <= trio.current_time():
                _, _, src, dst, wire = heapq.heappop(self._heap)
                driver = self.drivers.get(dst)
                if driver is None or not self.connected(src, dst):
                    continue
                self.delivered += 1
                driver.deliver(src, cbor2.loads(wire))
            self._wake = trio.Event()
            with trio.move_on_at(self._heap[0][0] if self._heap else float("inf")):
                await self._wake.wait()


@attrs.define
class Cluster:
    """N drivers on one FakeNetwork, each in its own cancel scope so it can be crashed (cancelled)."""

    net: FakeNetwork
    table: MemberTable
    nursery: trio.Nursery
    config: SwimConfig | None = None
    scopes: dict[NodeId, trio.CancelScope] = attrs.Factory(dict)
    drivers: dict[NodeId, MembershipDriver] = attrs.Factory(dict)
    events: list[tuple[float, NodeId, SwimEvent]] = attrs.Factory(list)

    async def start_node(self, node_id: NodeId, *, incarnation: int = 0) -> MembershipDriver:
        address = address_of(node_id)
        self.net.crashed.discard(address)
        core = Swim(
            node_id,
            address,
            rng=random.Random(self.net.rng.getrandbits(64)),
            config=self.config,
            table=self.table,
            incarnation=incarnation,
        )

        def record(event: SwimEvent) -> None:
            self.events.append((trio.current_time(), node_id, event))

        async def run(task_status: trio.TaskStatus[MembershipDriver]) -> None:
            with trio.CancelScope() as scope:
                self.scopes[node_id] = scope
                async with open_membership(core, self.net.sender(address), on_event=record) as driver:
                    task_status.started(driver)
                    await trio.sleep_forever()

        driver: MembershipDriver = await self.nursery.start(run)
        self.drivers[node_id] = driver
        self.net.drivers[address] = driver
        return driver

    def crash(self, node_id: NodeId) -> None:
        self.scopes[node_id].cancel()
        self.net.crashed.add(address_of(node_id))
        del self.drivers[node_id]
        del self.net.drivers[address_of(node_id)]

    def live(self) -> list[NodeId]:
        return sorted(self.drivers)

    def liveness(self, observer: NodeId, subject: NodeId) -> Liveness | None:
        return self.drivers[observer].view()[subject].liveness

    def member_events(
        self, *, about: NodeId | None = None, since: float = 0.0
    ) -> list[tuple[float, NodeId, MemberEvent]]:
        return [
            (t, o, e)
            for t, o, e in self.events
            if isinstance(e, MemberEvent) and t >= since and (about is None or e.node_id == about)
        ]

    def first_time_all(
        self, subject: NodeId, liveness: Liveness, observers: Iterable[NodeId], since: float
    ) -> float | None:
        worst = since
        for obs in observers:
            times = [
                t for t, o, e in self.member_events(about=subject, since=since) if o == obs and e.liveness is liveness
            ]
            if not times:
                return None
            worst = max(worst, times[0])
        return worst


@asynccontextmanager
async def open_cluster(n: int, *, seed: int, config: SwimConfig | None = None) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        net = FakeNetwork(rng=random.Random(seed))
        nursery.start_soon(net.run)
        cluster = Cluster(net=net, table=make_table(n), nursery=nursery, config=config)
        for i in range(n):
            await cluster.start_node(node_name(i))
        yield cluster
        nursery.cancel_scope.cancel()
