"""The node's reaction to a gone or returning member (``borough.node.failover``), the index of its replicas by
leader (``borough.node.leaders``) and its set of running Raft clocks (``borough.node.clocks``), with stand-in
replicas: which groups are told what, and nothing else."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from borough.ids import NodeId
from borough.node.clocks import Clocks
from borough.node.failover import STAGGER_TICKS, Failover
from borough.node.leaders import Leaders
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

    def get(self, name: str) -> FakeReplica | None:
        return self.replicas.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.replicas

    def __len__(self) -> int:
        return len(self.replicas)

    def items(self) -> list[tuple[str, FakeReplica]]:
        raise AssertionError("a member event must not walk every hosted replica")


@attrs.frozen
class FakeDirectory:
    members: MemberTable = MemberTable(
        version=3, members=tuple(Member(node_id=NodeId(n), address=f"{n}:1") for n in "abc")
    )


def failover(me: str, *replicas: FakeReplica) -> Failover:
    """A Failover over ``replicas``, each of which has reported its leader (as a replica's driver does)."""
    hosted = FakeReplicas(*replicas)
    leaders = Leaders(hosted.replicas)
    for r in replicas:
        leaders.changed(r.name, me if r.is_leader else r.leader)
    return Failover(node_id=me, replicas=hosted, leaders=leaders, members=FakeDirectory())  # type: ignore[arg-type]


def test_followers_of_a_gone_leader_campaign_staggered_by_rank_and_no_one_else_is_touched() -> None:
    led_by_a = FakeReplica("p", leader="a", voters=("a", "b", "c"))
    led_by_b = FakeReplica("q", leader="b", voters=("a", "b", "c"))
    led_here = FakeReplica("r", leader="c", voters=("a", "b", "c"), is_leader=True)
    f = failover("c", led_by_a, led_by_b, led_here)
    # Suspected only: no group acts (a busy node is suspected too; thousands of elections would make it worse).
    f.on_member_event(MemberEvent(node_id=NodeId("a"), liveness=Liveness.SUSPECT, incarnation=0))
    assert led_by_a.raw.calls == [] and f.campaigns == 0
    f.on_member_event(MemberEvent(node_id=NodeId("a"), liveness=Liveness.DEAD, incarnation=0))
    # Of p's remaining voters (b, c), c ranks second: it campaigns STAGGER_TICKS later than b would.
    assert led_by_a.raw.calls == [("forget_leader", (STAGGER_TICKS, True))]
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


def test_a_member_event_fixes_up_index_entries_that_lag_their_replicas() -> None:
    p = FakeReplica("p", leader="a", voters=("a", "b", "c"))
    q = FakeReplica("q", leader="a", voters=("a", "b", "c"))
    f = failover("c", p, q)
    # q changed leader without the index hearing of it yet, and p's replica went away: a member event on their
    # old leader's node tells neither, and fixes the index.
    q.leader = "b"
    del f._replicas.replicas["p"]  # type: ignore[attr-defined]
    assert f.node_gone("a", "dead") == 0 and q.raw.calls == []
    assert f._leaders.led_by("a") == [] and f._leaders.led_by("b") == ["q"]
    assert f.node_gone("b", "dead") == 1 and q.raw.calls == [("forget_leader", (STAGGER_TICKS, True))]


def test_a_member_event_touches_only_the_groups_led_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """With many replicas hosted, a node's death visits the groups its leaders lead, nothing else (the fake's
    ``items`` refuses to be walked), and so does a node's return (the groups led here)."""
    replicas = [FakeReplica(f"p{i}", leader="abc"[i % 3], voters=("a", "b", "c")) for i in range(300)]
    for r in replicas:
        r.is_leader = r.leader == "c"
    looked_at: list[str] = []
    status = FakeReplica.status

    def counting(self: FakeReplica) -> FakeStatus:
        looked_at.append(self.name)
        return status(self)

    monkeypatch.setattr(FakeReplica, "status", counting)
    f = failover("c", *replicas)
    assert f.node_gone("a", "dead") == 100
    assert sorted(looked_at) == sorted(r.name for r in replicas if r.leader == "a")
    looked_at.clear()
    assert f.node_back("b") == 0 and looked_at == []  # no leader here is quiesced: none is even looked at


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

    def p(late: int = 0) -> None:
        ticks.append("p")

    def newer_p(late: int = 0) -> None:
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


def test_the_leader_index_follows_changes_and_sweeps_replicas_no_longer_hosted() -> None:
    hosted = {f"p{i}" for i in range(100)}
    leaders = Leaders(hosted)
    for i in range(100):
        leaders.changed(f"p{i}", "ab"[i % 2])
    assert leaders.led_by("a")[:3] == ["p0", "p10", "p12"] and len(leaders.led_by("a")) == 50
    leaders.changed("p0", "b")
    leaders.changed("p2", None)
    assert "p0" not in leaders.led_by("a") and leaders.leader_of("p0") == "b" and len(leaders) == 99
    # The p replicas went away without a report: their entries are swept once the index outgrows what is hosted.
    hosted.clear()
    hosted.update(("q0", "q1"))
    leaders.changed("q0", "a")
    assert len(leaders) == 1 and leaders.led_by("a") == ["q0"] and leaders.led_by("b") == []


async def test_waiting_for_a_new_groups_first_leader(autojump_clock: trio.testing.MockClock) -> None:
    leaders = Leaders(set())
    known: list[tuple[str, float]] = []

    async def waiter(name: str) -> None:
        await leaders.wait_known(name)
        known.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "p")
        nursery.start_soon(waiter, "p")
        nursery.start_soon(waiter, "q")
        await trio.sleep(1)
        leaders.changed("p", "a")
        await trio.sleep(1)
        assert known == [("p", 1.0), ("p", 1.0)]
        nursery.cancel_scope.cancel()  # q's waiter gives up (its caller's deadline)
    assert leaders._waits == {}  # nothing left behind
    await leaders.wait_known("p")  # known: at once
