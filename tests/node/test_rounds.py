"""The node's rounds (``borough.node.rounds``): the Readies of every replica with work are carried out in one pass,
with one write for the round, so many partitions with one write each cost what one partition with many does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from borough.errors import StorageError
from borough.node.persist import Turn
from borough.node.replica import Replica
from borough.node.rounds import Rounds

from .replica_harness import FakeHost, bootstrap, make_replica, open_host, settle, wait_until

pytestmark = pytest.mark.trio


async def _leaders(
    host: FakeHost, nursery: trio.Nursery, count: int, ended: list[BaseException] | None = None
) -> list[Replica]:
    """``count`` single-voter groups on ``host``, each led by its replica and with its first entry applied; what
    ends a replica's task goes in ``ended``."""
    replicas = []

    async def run(replica: Replica) -> None:
        try:
            await replica.run()
        except Exception as exc:
            assert ended is not None, exc
            ended.append(exc)

    for i in range(count):
        await bootstrap(host, [host.node_id], f"p{i}")
        replica = make_replica(host, f"p{i}")
        nursery.start_soon(run, replica)
        replica.campaign()
        replicas.append(replica)
    await wait_until(lambda: all(r.is_leader and r.applied >= 1 for r in replicas))
    return replicas


async def test_one_write_each_in_64_groups_is_one_synced_write(autojump_clock: trio.testing.MockClock) -> None:
    async with open_host("a") as host, trio.open_nursery() as nursery:
        replicas = await _leaders(host, nursery, 64)
        committer = host.committer
        committer.syncs.clear()
        committer.hold()
        results: list[Any] = []

        async def put(replica: Replica) -> None:
            results.append(await replica.propose(f"{replica.name}-k".encode()))

        for replica in replicas:
            nursery.start_soon(put, replica)
        await settle()
        # All 64 Readies were prepared in one round, and wait on one commit (not 64).
        assert committer.waiting == 1 and committer.syncs == [True]
        committer.release()
        await wait_until(lambda: len(results) == 64)
        assert sorted(results) == sorted((f"{r.name}-k", 2) for r in replicas)
        # A single voter commits its entry at once: the same write persisted and applied all 64.
        assert committer.syncs == [True]
        nursery.cancel_scope.cancel()


async def test_a_failed_turn_ends_only_its_replica(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_host("a") as host, trio.open_nursery() as nursery:
        ended: list[BaseException] = []
        replicas = await _leaders(host, nursery, 3, ended)
        bad = replicas[1]
        original = Replica.prepare

        def prepare(self: Replica) -> Turn | None:
            if self is bad:
                raise RuntimeError("a bug in one group's turn")
            return original(self)

        monkeypatch.setattr(Replica, "prepare", prepare)
        results = []
        for replica in replicas:
            if replica is not bad:
                results.append(await replica.propose(b"x"))
        bad.tick()
        await wait_until(lambda: bool(ended))
        assert results == [("x", 2), ("x", 2)] and len(ended) == 1 and "a bug" in str(ended[0])
        assert replicas[0].is_leader and replicas[2].is_leader
        nursery.cancel_scope.cancel()


class _Taker:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self._log = log

    def prepare(self) -> Turn | None:
        self._log.append(self.name)
        return None

    def finish(self, turn: Turn) -> None:
        raise AssertionError("nothing was prepared")

    def fail(self, exc: BaseException) -> None:
        raise AssertionError(exc)


async def test_a_round_takes_at_most_its_limit_and_the_rest_go_next(autojump_clock: trio.testing.MockClock) -> None:
    async with open_host("a") as host, trio.open_nursery() as nursery:
        rounds = Rounds(host.committer, limit=8)  # type: ignore[arg-type]
        log: list[str] = []
        takers = [_Taker(f"t{i}", log) for i in range(20)]
        for taker in takers:
            rounds.want(taker)
            rounds.want(taker)  # asking twice before the round is one turn
        nursery.start_soon(rounds.run)
        await settle()
        assert log == [t.name for t in takers] and rounds.rounds == 3 and rounds.turns == 20
        nursery.cancel_scope.cancel()


def _logged_rounds(host: FakeHost) -> tuple[Rounds, list[str]]:
    """Rounds whose ``after`` (the node's outbox flush) is logged as "after", and the log the takers share."""
    log: list[str] = []
    return Rounds(host.committer, after=lambda: log.append("after")), log


class _Writer:
    """A turn taker whose turn writes one batch; ``finish`` does what the test says. ``plan`` says how many
    entries the turn appends and applies (what the round judges its load by)."""

    def __init__(self, name: str, host: FakeHost, log: list[str], finish_error: BaseException | None = None) -> None:
        self.plan = SimpleNamespace(entries=(), apply=())
        self.name = name
        self._host = host
        self._log = log
        self._error = finish_error

    def prepare(self) -> Turn | None:
        self._log.append(f"prepare {self.name}")
        batch = self._host.store.write_batch()
        batch.apply(self.name, [("put", "k", b"\x01")], 1)
        return Turn(None, self.plan, {}, batch, True)  # type: ignore[arg-type]

    def finish(self, turn: Turn) -> None:
        self._log.append(f"finish {self.name}")
        if self._error is not None:
            raise self._error

    def fail(self, exc: BaseException) -> None:
        self._log.append(f"fail {self.name}: {exc}")


async def test_after_runs_once_a_round_is_prepared_and_once_its_write_is_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_host("a") as host, trio.open_nursery() as nursery:
        rounds, log = _logged_rounds(host)
        nursery.start_soon(rounds.run)
        host.committer.hold()
        rounds.want(_Writer("x", host, log))
        rounds.want(_Writer("y", host, log))
        await settle()
        # The messages the turns queued while preparing leave as the round ends, not a pass later.
        assert log == ["prepare x", "prepare y", "after"] and host.committer.waiting == 1
        host.committer.release()
        await settle()
        # Both turns are finished by the write's callback, and what they queued is flushed right after.
        assert log[3:] == ["finish x", "finish y", "after"]
        nursery.cancel_scope.cancel()


async def test_a_store_failure_while_finishing_a_turn_stops_the_rounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_host("a") as host:
        log: list[str] = []
        rounds = Rounds(host.committer)
        rounds.want(_Writer("x", host, log, finish_error=StorageError("the disk is gone")))
        with pytest.raises(StorageError, match="the disk is gone"):
            await rounds.run()
        assert log == ["prepare x", "finish x"]


class _Leader:
    """A turn taker whose turn queues messages that may leave before its write (as a leader's appends), then
    builds its batch."""

    def __init__(self, name: str, rounds: Rounds, log: list[str]) -> None:
        self.name = name
        self._rounds = rounds
        self._log = log

    def prepare(self) -> Turn | None:
        self._log.append(f"send {self.name}")
        self._rounds.flush_if_lone()
        self._log.append(f"batch {self.name}")
        return None

    def finish(self, turn: Turn) -> None:
        raise AssertionError("nothing was prepared")

    def fail(self, exc: BaseException) -> None:
        raise AssertionError(exc)


@pytest.mark.parametrize("turns", [1, 2])
async def test_a_lone_turns_early_messages_leave_before_its_batch_is_built(
    autojump_clock: trio.testing.MockClock, turns: int
) -> None:
    async with open_host("a") as host, trio.open_nursery() as nursery:
        rounds, log = _logged_rounds(host)
        for i in range(turns):
            rounds.want(_Leader(f"t{i}", rounds, log))
        nursery.start_soon(rounds.run)
        await settle()
        if turns == 1:  # flushed at once: the appends do not wait for the batch
            assert log == ["send t0", "after", "batch t0", "after"]
        else:  # one flush for the round: one frame per peer for every turn's messages
            assert log == ["send t0", "batch t0", "send t1", "batch t1", "after"]
        nursery.cancel_scope.cancel()


class _Follower(_Writer):
    """A turn taker whose finished turn queues a message (as a follower's acknowledgement), then advances."""

    def __init__(self, name: str, host: FakeHost, log: list[str], rounds: Rounds) -> None:
        super().__init__(name, host, log)
        self._rounds = rounds

    def finish(self, turn: Turn) -> None:
        self._log.append(f"ack {self.name}")
        self._rounds.flush_if_lone()
        self._log.append(f"advance {self.name}")


@pytest.mark.parametrize("turns", [1, 2])
async def test_a_lone_writes_acknowledgement_leaves_before_its_core_is_advanced(
    autojump_clock: trio.testing.MockClock, turns: int
) -> None:
    async with open_host("a") as host, trio.open_nursery() as nursery:
        rounds, log = _logged_rounds(host)
        host.committer.hold()
        for i in range(turns):
            rounds.want(_Follower(f"t{i}", host, log, rounds))
        nursery.start_soon(rounds.run)
        await settle()
        log.clear()
        host.committer.release()
        await settle()
        if turns == 1:
            assert log == ["ack t0", "after", "advance t0", "after"]
        else:
            assert log == ["ack t0", "advance t0", "ack t1", "advance t1", "after"]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _idle_rounds() -> AsyncIterator[tuple[FakeHost, Rounds, list[str], trio.Nursery]]:
    """Logged rounds (``_logged_rounds``) whose task runs and waits for work; cancelled on the way out."""
    async with open_host("a") as host, trio.open_nursery() as nursery:
        rounds, log = _logged_rounds(host)
        nursery.start_soon(rounds.run)
        await settle()  # (the round task waits for work)
        yield host, rounds, log, nursery
        nursery.cancel_scope.cancel()


async def test_a_round_asked_for_while_a_reader_dispatches_runs_in_its_leave(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _idle_rounds() as (host, rounds, log, nursery):
        rounds.enter()
        rounds.want(_Leader("x", rounds, log))
        await trio.lowlevel.checkpoint()  # (as the reader must not: nothing woke the round task)
        assert log == [] and rounds.rounds == 0
        rounds.enter()  # (two readers' runs may nest only in tests, but the count holds)
        rounds.leave()
        assert log == []
        rounds.leave()
        # The round ran in ``leave``: no task switch between the frame and what it sends.
        assert log == ["send x", "after", "batch x", "after"] and rounds.inline_rounds == 1


async def test_a_reader_leaves_the_round_to_the_task_when_other_tasks_are_runnable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _idle_rounds() as (host, rounds, log, nursery):
        other = trio.Event()
        nursery.start_soon(other.wait)
        await settle()
        rounds.enter()
        rounds.want(_Leader("x", rounds, log))
        other.set()  # (a task runnable now may add its own input to the round: it runs first)
        rounds.leave()
        assert log == [] and rounds.inline_rounds == 0
        await settle()
        assert log == ["send x", "after", "batch x", "after"] and rounds.rounds == 1


async def test_a_reader_leaves_the_round_to_the_task_when_the_writes_are_at_their_cap(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _idle_rounds() as (host, rounds, log, nursery):
        full = [True]  # (the batches waiting for the next synced write are at their cap while this holds)
        monkeypatch.setattr(type(host.committer), "has_room", property(lambda self: not full[0]))
        monkeypatch.setattr(type(host.committer.inner), "has_room", property(lambda self: not full[0]))
        rounds.enter()
        rounds.want(_Leader("x", rounds, log))
        rounds.leave()
        await settle()
        # The round waits, in its task, for room: the reader does not write past the cap.
        assert log == [] and rounds.inline_rounds == 0
        full[0] = False
        host.committer.inner._space.unpark_all()
        await settle()
        assert log == ["send x", "after", "batch x", "after"]


async def test_a_failure_in_a_round_run_in_a_readers_leave_stops_the_rounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_host("a") as host:
        failed = RuntimeError("a bug in the round")

        def before() -> None:
            raise failed

        rounds = Rounds(host.committer, before=before)
        with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="a bug in the round")):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(rounds.run)
                await settle()
                rounds.enter()
                rounds.want(_Taker("x", []))
                rounds.leave()  # (never raises into the reader: the round task raises it)
                await settle()


async def test_after_a_round_of_many_entries_a_readers_round_waits_for_the_round_tasks_pass(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _idle_rounds() as (host, rounds, log, nursery):
        busy = _Writer("busy", host, log)
        busy.plan = SimpleNamespace(entries=(1, 2), apply=())  # (two requests' entries in one turn)
        rounds.enter()
        rounds.want(busy)
        rounds.leave()
        assert rounds.inline_rounds == 1
        await settle()
        log.clear()
        # Requests come faster than one at a time: the round task's pass gathers whatever else is runnable.
        rounds.enter()
        rounds.want(_Leader("x", rounds, log))
        rounds.leave()
        assert log == [] and rounds.inline_rounds == 1
        await settle()
        assert log == ["send x", "after", "batch x", "after"]
        # ... and once a round carries one at a time again, a reader's round runs in its step again.
        log.clear()
        rounds.enter()
        rounds.want(_Leader("y", rounds, log))
        rounds.leave()
        assert log == ["send y", "after", "batch y", "after"] and rounds.inline_rounds == 2
