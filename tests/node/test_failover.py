"""The node's reaction to a gone or returning member (``borough.node.failover``) and its set of running Raft
clocks (``borough.node.clocks``), with stand-in replicas: which groups are told what, and nothing else."""

from __future__ import annotations

from typing import Any

import attrs
import trio
import trio.testing

from borough.ids import NodeId
from borough.node.clocks import Clocks
from borough.node.failover import STAGGER_TICKS, Failover
from borough.raft.progress import ProgressState
from borough.raft.rawnode import PeerStatus
from borough.raft.records import ConfState
from borough.ring.members import Member, MemberTable
from borough.ring.membership import MemberEvent
from borough.ring.messages import Liveness


@attrs.define
class FakeRaw:
    calls: list[tuple[str, Any]] = attrs.Factory(list)

    def forget_leader(self, campaign_in: int = 0, sure: bool = True) -> None:
        self.calls.append(("forget_leader", (campaign_in, sure)))

    def wake(self) -> None:
        self.calls.append(("wake", None))


@attrs.define
class FakeStatus:
    conf_state: ConfState
    last_index: int = 5
    progress: dict[NodeId, PeerStatus] = attrs.Factory(dict)


@attrs.define
class FakeReplica:
    name: str
    leader: str | None
    voters: tuple[str, ...]
    is_leader: bool = False
    quiesced: bool = False
    matches: dict[str, int] = attrs.Factory(dict)
    raw: FakeRaw = attrs.Factory(FakeRaw)

    def status(self) -> FakeStatus:
        progress = {
            NodeId(n): PeerStatus(
                match=m, next=m + 1, state=ProgressState.REPLICATE, recent_active=True, learner=False, inflight=0
            )
            for n, m in self.matches.items()
        }
        return FakeStatus(conf_state=ConfState(voters=self.voters), progress=progress)

    def command(self, fn: Any) -> None:
        fn(self.raw)


class FakeReplicas:
    def __init__(self, *replicas: FakeReplica) -> None:
        self.replicas = {r.name: r for r in replicas}

    def items(self) -> list[tuple[str, FakeReplica]]:
        return list(self.replicas.items())


def table() -> MemberTable:
    return MemberTable(
        version=3,
        members=tuple(Member(node_id=NodeId(n), address=f"{n}:1") for n in "abc"),
    )


def failover(me: str, *replicas: FakeReplica) -> Failover:
    return Failover(node_id=me, replicas=FakeReplicas(*replicas), members=table)  # type: ignore[arg-type]


def test_followers_of_a_gone_leader_campaign_staggered_by_rank_and_no_one_else_is_touched() -> None:
    led_by_a = FakeReplica("p", leader="a", voters=("a", "b", "c"))
    led_by_b = FakeReplica("q", leader="b", voters=("a", "b", "c"))
    led_here = FakeReplica("r", leader="c", voters=("a", "b", "c"), is_leader=True)
    f = failover("c", led_by_a, led_by_b, led_here)
    f.on_member_event(MemberEvent(node_id=NodeId("a"), liveness=Liveness.SUSPECT, incarnation=0))
    # Of p's remaining voters (b, c), c ranks second: it campaigns STAGGER_TICKS later than b would.
    assert led_by_a.raw.calls == [("forget_leader", (STAGGER_TICKS, False))]  # only suspected
    assert led_by_b.raw.calls == [] and led_here.raw.calls == []
    assert f.campaigns == 1
    on_b = failover("b", FakeReplica("p", leader="a", voters=("a", "b", "c")))
    assert on_b.node_gone("a", "dead") == 1
    assert on_b._replicas.replicas["p"].raw.calls == [("forget_leader", (0, True))]  # type: ignore[attr-defined]


def test_an_unreachable_address_is_the_member_listening_there() -> None:
    p = FakeReplica("p", leader="b", voters=("a", "b", "c"))
    f = failover("a", p)
    f.on_unreachable("nowhere:1")
    assert p.raw.calls == []
    f.on_unreachable("b:1")
    assert p.raw.calls == [("forget_leader", (0, True))]


def test_a_returning_member_wakes_only_quiesced_leaders_it_lags_behind() -> None:
    lagging = FakeReplica("p", leader="a", voters=("a", "b", "c"), is_leader=True, quiesced=True, matches={"b": 3})
    current = FakeReplica("q", leader="a", voters=("a", "b", "c"), is_leader=True, quiesced=True, matches={"b": 5})
    awake = FakeReplica("r", leader="a", voters=("a", "b", "c"), is_leader=True, matches={"b": 3})
    f = failover("a", lagging, current, awake)
    f.on_member_event(MemberEvent(node_id=NodeId("b"), liveness=Liveness.ALIVE, incarnation=1))
    assert lagging.raw.calls == [("wake", None)]
    assert current.raw.calls == [] and awake.raw.calls == []
    assert f.wakes == 1


async def test_clocks_tick_only_running_replicas_and_park_the_ticker_when_none_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clocks = Clocks()
    ticks: list[str] = []

    def p() -> None:
        ticks.append("p")

    def newer_p() -> None:
        ticks.append("p2")

    clocks.run("p", p)
    assert clocks.tick() == 1 and ticks == ["p"]
    clocks.stop("p", newer_p)  # not the clock running under that name: nothing changes
    assert "p" in clocks
    clocks.stop("p", p)
    assert clocks.tick() == 0 and len(clocks) == 0
    woke: list[float] = []

    async def ticker() -> None:
        await clocks.wait_running()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(5)
        assert woke == []  # parked: no timer while nothing runs
        clocks.run("p", newer_p)
    assert woke == [5.0]
    assert (clocks.starts, clocks.stops) == (2, 1)
