"""Raft ticks follow elapsed time (``borough.node.clocks``): a node that stalled delivers the ticks it missed before
any core sees what arrived meanwhile, a leader counts them (its lease runs out by elapsed time), other roles do
not, and time during which no clock ran is no tick at all."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from borough.node.clocks import Clocks
from borough.node.inbox import Inbox
from borough.node.persist import Turn
from borough.node.rounds import Rounds
from borough.raft.role import Role

pytestmark = pytest.mark.trio


class Recorder:
    def __init__(self) -> None:
        self.calls: list[int] = []  # the ``late`` of each tick

    def __call__(self, late: int = 0) -> None:
        self.calls.append(late)


async def test_ticks_are_due_on_a_schedule_and_a_stall_reports_the_missed_ones_as_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clocks = Clocks(0.1, most_late=10)
    clock = Recorder()
    clocks.run("p", clock)
    start = trio.current_time()
    assert clocks.due == pytest.approx(start + 0.1)
    assert clocks.catch_up() == 0 and clock.calls == []  # nothing due yet
    await trio.sleep_until(clocks.due)
    assert clocks.catch_up() == 1 and clock.calls == [0]
    assert clocks.catch_up() == 0 and clock.calls == [0]  # (the same tick is not delivered twice)
    # A stall of 0.55 s: the ticks due at 0.2, 0.3, 0.4, 0.5 and 0.6 are one tick with four late, and the schedule
    # goes on from 0.7 (it does not drift by the stall).
    await trio.sleep_until(start + 0.65)
    assert clocks.catch_up() == 1 and clock.calls == [0, 4]
    assert clocks.due == pytest.approx(start + 0.7)
    # A stall of 30 s reports at most ``most_late``.
    await trio.sleep(30)
    assert clocks.catch_up() == 1 and clock.calls == [0, 4, 10]


async def test_time_when_no_clock_runs_is_no_tick(autojump_clock: trio.testing.MockClock) -> None:
    clocks = Clocks(0.1, most_late=10)
    clock = Recorder()
    clocks.run("p", clock)
    clocks.stop("p", clock)  # (quiesced)
    await trio.sleep(60)
    assert clocks.catch_up() == 0
    clocks.run("p", clock)  # woken after a minute: a new period starts now, no burst of a minute's ticks
    await trio.sleep(0.1)
    assert clocks.catch_up() == 1 and clock.calls == [0]


@attrs.define
class FakeRaw:
    role: Role
    ticks: int = 0
    calls: list[str] = attrs.Factory(list)

    def tick(self) -> None:
        self.ticks += 1
        self.calls.append("tick")

    def elapse(self, ticks: int) -> None:
        self.ticks += ticks
        self.calls.append(f"elapse {ticks}")


async def test_a_leader_counts_late_ticks_and_a_follower_does_not(autojump_clock: trio.testing.MockClock) -> None:
    for role, counted in ((Role.LEADER, 1 + 7), (Role.FOLLOWER, 1), (Role.CANDIDATE, 1)):
        inbox = Inbox("p", lambda: None)
        inbox.tick(late=7)
        raw = FakeRaw(role)
        inbox.feed(raw, lambda message: None)  # type: ignore[arg-type]
        assert raw.ticks == counted
        # The late ticks first, counted with no heartbeat each (``RawNode.elapse``); then the tick that sends one.
        assert raw.calls == (["elapse 7", "tick"] if role is Role.LEADER else ["tick"])
        inbox.tick()
        inbox.feed(raw, lambda message: None)  # type: ignore[arg-type]
        assert raw.ticks == counted + 1  # (late ticks are counted once)


@attrs.define(eq=False)
class FakeReplica:
    name: str
    log: list[str]

    def prepare(self) -> Turn | None:
        self.log.append(f"prepare {self.name}")
        return None

    def finish(self, turn: Turn) -> None:
        raise AssertionError("no turn was prepared")

    def fail(self, exc: BaseException) -> None:
        raise exc


async def test_a_round_catches_the_clocks_up_before_it_feeds_any_core(autojump_clock: trio.testing.MockClock) -> None:
    log: list[str] = []
    ticked = FakeReplica("ticked", log)

    def before() -> None:
        log.append("catch up")
        rounds.want(ticked)  # a replica the catch-up ticks joins the same round

    class NoWrites:  # (no turn writes anything)
        async def room(self) -> None:
            pass

    committer: Any = NoWrites()
    rounds = Rounds(committer, before=before)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rounds.run)
        rounds.want(FakeReplica("asked", log))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert log == ["catch up", "prepare asked", "prepare ticked"]
    assert rounds.rounds == 1
