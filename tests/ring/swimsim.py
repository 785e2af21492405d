"""A deterministic, synchronous discrete-event simulator for SWIM cores (no trio): fast enough to run many
seeds and long virtual durations in a unit test. Latency, per-node loss, partitions and crashes are seeded.

The trio driver has its own fake network (``fakenet.py``); this one exercises the pure core only.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable

import cbor2

from borough.raft.records import NodeId
from borough.ring.members import Member, MemberTable
from borough.ring.membership import MemberEvent, Outgoing, Swim, SwimConfig, SwimEvent
from borough.ring.messages import Liveness, decode_message, encode_message


def node_name(i: int) -> NodeId:
    return NodeId(f"n{i:02d}")


def assert_no_flapping(events: Iterable[tuple[float, NodeId, MemberEvent]]) -> None:
    """After a heal, each observer's belief about each subject may still pass through SUSPECT or DEAD (a probe
    or a rumour from inside the partition arriving late), but once it is back to ALIVE it stays ALIVE."""
    back: set[tuple[NodeId, NodeId]] = set()
    for t, obs, e in events:
        key = (obs, e.node_id)
        if e.liveness is Liveness.ALIVE:
            back.add(key)
        else:
            assert key not in back, f"{obs} doubted {e.node_id} again at {t:.3f} after seeing it back: {e}"


def make_table(n: int, version: int = 1) -> MemberTable:
    return MemberTable(
        version=version, members=[Member(node_id=node_name(i), address=f"10.0.0.{i}:7000") for i in range(n)]
    )


class SwimSim:
    def __init__(
        self,
        n: int,
        *,
        seed: int,
        config: SwimConfig | None = None,
        latency: tuple[float, float] = (0.001, 0.010),
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency = latency
        self.table = make_table(n)
        self.nodes: dict[NodeId, Swim] = {}
        self.by_address: dict[str, NodeId] = {}
        for m in self.table.members:
            self.nodes[m.node_id] = Swim(
                m.node_id,
                m.address,
                rng=random.Random(self.rng.getrandbits(64)),
                config=config,
                table=self.table,
            )
            self.by_address[m.address] = m.node_id
        self.crashed: set[NodeId] = set()
        self.loss: dict[NodeId, float] = {}
        self.groups: list[set[NodeId]] | None = None
        self.events: list[tuple[float, NodeId, SwimEvent]] = []
        self.sent = 0
        self._heap: list[tuple[float, int, str, object]] = []
        self._n = 0
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        for node_id in self.nodes:
            self._wake(node_id, 0.0)

    # -- faults -------------------------------------------------------------------------------------------
    def crash(self, node_id: NodeId) -> None:
        self.crashed.add(node_id)

    def partition(self, *groups: Iterable[NodeId]) -> None:
        self.groups = [set(g) for g in groups]

    def heal(self) -> None:
        self.groups = None

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._n += 1
        heapq.heappush(self._actions, (when, self._n, action))

    def _connected(self, a: NodeId, b: NodeId) -> bool:
        if a in self.crashed or b in self.crashed:
            return False
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    # -- the loop -----------------------------------------------------------------------------------------
    def _push(self, when: float, kind: str, data: object) -> None:
        self._n += 1
        heapq.heappush(self._heap, (when, self._n, kind, data))

    def _wake(self, node_id: NodeId, when: float) -> None:
        self._push(max(when, self.now), "wake", node_id)

    def _emit(self, src: NodeId, outgoing: list[Outgoing]) -> None:
        for o in outgoing:
            self.sent += 1
            dst = self.by_address[o.address]
            loss = max(self.loss.get(src, 0.0), self.loss.get(dst, 0.0))
            if loss and self.rng.random() < loss:
                continue
            wire = cbor2.dumps(encode_message(o.message))
            delay = self.rng.uniform(*self.latency)
            self._push(self.now + delay, "deliver", (src, dst, wire))

    def _after(self, node_id: NodeId) -> None:
        swim = self.nodes[node_id]
        for e in swim.drain_events():
            self.events.append((self.now, node_id, e))
        self._wake(node_id, swim.next_deadline())

    def run_until(self, end: float) -> None:
        while True:
            t_heap = self._heap[0][0] if self._heap else float("inf")
            t_act = self._actions[0][0] if self._actions else float("inf")
            if min(t_heap, t_act) > end:
                self.now = end
                return
            if t_act <= t_heap:
                when, _, action = heapq.heappop(self._actions)
                self.now = max(self.now, when)
                action()
                continue
            when, _, kind, data = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if kind == "wake":
                node_id = data  # type: ignore[assignment]
                if node_id in self.crashed:
                    continue
                swim = self.nodes[node_id]  # type: ignore[index]
                if swim.next_deadline() > self.now:
                    continue  # a stale wake-up
                self._emit(node_id, swim.tick(self.now))  # type: ignore[arg-type]
                self._after(node_id)  # type: ignore[arg-type]
            else:
                src, dst, wire = data  # type: ignore[misc]
                if not self._connected(src, dst):
                    continue
                swim = self.nodes[dst]
                msg = decode_message(cbor2.loads(wire))
                self._emit(dst, swim.receive(self.now, self.nodes[src].self_address, msg))
                self._after(dst)

    # -- observations ---------------------------------------------------------------------------------------
    def live(self) -> list[NodeId]:
        return [n for n in self.nodes if n not in self.crashed]

    def liveness(self, observer: NodeId, subject: NodeId) -> Liveness | None:
        return self.nodes[observer].liveness(subject)

    def member_events(
        self, *, about: NodeId | None = None, since: float = 0.0
    ) -> list[tuple[float, NodeId, MemberEvent]]:
        return [
            (t, obs, e)
            for t, obs, e in self.events
            if isinstance(e, MemberEvent) and t >= since and (about is None or e.node_id == about)
        ]

    def first_time_all(self, subject: NodeId, liveness: Liveness, observers: Iterable[NodeId]) -> float | None:
        """When the last of ``observers`` first saw ``subject`` in ``liveness`` (None if one never did)."""
        worst = 0.0
        for obs in observers:
            times = [t for t, o, e in self.member_events(about=subject) if o == obs and e.liveness is liveness]
            if not times:
                return None
            worst = max(worst, times[0])
        return worst
