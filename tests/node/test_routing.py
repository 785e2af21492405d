"""The router alone: leader cache (bounded, forgetting), NotLeader hints, which failures are retried (decided
on ``provably_not_run`` and ``repeatable``), retries with backoff, deadlines and ``seconds_left``."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from borough.errors import (
    BoroughError,
    NotFound,
    NotLeader,
    RemoteError,
    RemoteProtocolError,
    Timeout,
    Unavailable,
)
from borough.node import routing
from borough.node.protocol import FindLeader, Get, Info, Write
from borough.node.records import Delete
from borough.node.routing import Router, Target, proves_not_run, seconds_left

A, B, C = Target("a", "a:1"), Target("b", "b:1"), Target("c", "c:1")
READ = Info()  # repeatable
WRITE = Write((Delete("k"),))  # not repeatable


SILENT = object()


def make_router(
    answers: dict[str, Any],
    calls: list[str],
    *,
    timeout: float = 5.0,
    located: list[Target] | None = None,
    located_calls: list[int] | None = None,
    fail_locate: list[BaseException] | BaseException | None = None,
) -> Router:
    """A router over ``answers`` (address -> result or exception). ``located_calls`` counts the lookups;
    ``fail_locate`` is an exception every lookup raises, or a list of them the first lookups raise, one each."""

    async def locate(partition: str, create: bool) -> list[Target]:
        await trio.lowlevel.checkpoint()
        if located_calls is not None:
            located_calls.append(1)
        if isinstance(fail_locate, BaseException):
            raise fail_locate
        if fail_locate:
            raise fail_locate.pop(0)
        return list(located if located is not None else [A, B, C])

    async def execute(target: Target, partition: str, op: Any, deadline: float) -> Any:
        await trio.lowlevel.checkpoint()
        probe = isinstance(op, FindLeader)  # before a write to a node not known to lead (marked "?")
        calls.append((target.node_id or target.address) + ("?" if probe else ""))
        answer = answers[target.address]
        if answer is SILENT:
            await trio.sleep_until(deadline)  # a stopped node: the connection stands, nothing comes back
            raise routing.AttemptExpired
        if probe:
            # A node answers a probe as it would the op when it does not lead or sheds load; any other answer
            # in ``answers`` is the op's own (the node leads).
            if isinstance(answer, NotLeader) or proves_not_run(answer):
                raise answer
            return None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return Router(locate=locate, execute=execute, request_timeout=timeout, rng=random.Random(1))


async def test_follows_a_leader_hint_and_caches_the_leader(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[str] = []
    router = make_router({"a:1": NotLeader("p", "c", "c:1"), "b:1": NotLeader("p"), "c:1": "ok"}, calls)
    assert await router.run("p", READ) == "ok"
    assert calls == ["a", "c"]
    assert router.leader_of("p") == C
    calls.clear()
    assert await router.run("p", READ) == "ok"
    assert calls == ["c"]  # straight to the cached leader, no lookup


async def test_skips_unreachable_replicas_and_retries_with_backoff(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[str] = []
    answers: dict[str, Any] = {"a:1": Unavailable("down"), "b:1": NotLeader("p"), "c:1": NotLeader("p")}
    router = make_router(answers, calls)

    async def elect_later() -> None:
        await trio.sleep(0.3)
        answers["b:1"] = "elected"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(elect_later)
        start = trio.current_time()
        assert await router.run("p", READ) == "elected"
    assert 0.3 <= trio.current_time() - start < 0.8
    assert router.retries >= 3 and calls[:3] == ["a", "b", "c"]


async def test_while_a_group_is_elected_the_backoff_stays_short(autojump_clock: trio.testing.MockClock) -> None:
    """Replicas that answer but know no leader (a partition created a moment ago) cost the caller about one
    election, not the election plus a backoff grown towards BACKOFF_MAX; unreachable replicas still back off."""
    answers: dict[str, Any] = {"a:1": NotLeader("p"), "b:1": NotLeader("p"), "c:1": NotLeader("p")}
    router = make_router(answers, [])

    async def elect_later() -> None:
        await trio.sleep(1.0)
        answers["a:1"] = "elected"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(elect_later)
        start = trio.current_time()
        assert await router.run("p", READ) == "elected"
    assert 1.0 <= trio.current_time() - start <= 1.0 + 1.5 * routing.BACKOFF_MAX_LEADERLESS


async def test_times_out_with_the_last_error(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(
        {"a:1": Unavailable("a is down"), "b:1": Unavailable("b is down"), "c:1": Unavailable("c is down")},
        [],
        timeout=2.0,
    )
    start = trio.current_time()
    with pytest.raises(Timeout, match="c is down"):
        await router.run("p", READ)
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_the_callers_deadline_wins(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router({"a:1": NotLeader("p"), "b:1": NotLeader("p"), "c:1": NotLeader("p")}, [], timeout=10.0)
    with pytest.raises(trio.TooSlowError), trio.fail_after(1):
        await router.run("p", READ)


async def test_without_retry_a_lost_connection_is_raised(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[str] = []
    router = make_router({"a:1": NotLeader("p", "b", "b:1"), "b:1": Unavailable("link died"), "c:1": "ok"}, calls)
    with pytest.raises(Unavailable, match="link died"):
        await router.run("p", WRITE)
    assert calls == ["a?", "b?", "b"]  # the NotLeader was safe to follow; the failure after sending was not


async def test_a_node_that_does_not_answer_costs_one_attempt_not_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for op, first in ((READ, "a"), (WRITE, "a?")):
        calls: list[str] = []
        router = make_router({"a:1": SILENT, "b:1": "ok", "c:1": "never"}, calls, timeout=30.0)
        start = trio.current_time()
        assert await router.run("p", op) == "ok"
        assert trio.current_time() - start == pytest.approx(routing.ATTEMPT_TIMEOUT, abs=0.01)
        # A write was only probed at the silent node, never sent there: no ambiguity.
        assert calls == [first, "b"] if op is READ else calls == [first, "b?", "b"]


async def test_a_write_goes_straight_to_the_leader_it_found_and_is_not_bounded_there(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[str] = []
    answers: dict[str, Any] = {"a:1": NotLeader("p", "c", "c:1"), "b:1": "never", "c:1": "written"}
    router = make_router(answers, calls, timeout=30.0)
    assert await router.run("p", WRITE) == "written"
    assert calls == ["a?", "c?", "c"]
    calls.clear()
    assert await router.run("p", WRITE) == "written"
    assert calls == ["c"]  # the cached leader: no probe
    answers["c:1"] = SILENT  # the leader stops with the write in flight: the caller's deadline decides
    with pytest.raises(Timeout):
        await router.run("p", WRITE)
    assert calls == ["c", "c"]


# --- decisions on data --------------------------------------------------------------------------------------------


class Refused(BoroughError):
    """An error no routing code names: only its ``provably_not_run`` says the op did not run."""

    provably_not_run = True


async def test_an_error_that_proves_the_op_did_not_run_is_retried_for_a_write() -> None:
    calls: list[str] = []
    router = make_router({"a:1": Refused("shed before proposing"), "b:1": "written", "c:1": "never"}, calls)
    assert proves_not_run(Refused()) and not proves_not_run(Unavailable()) and not proves_not_run(OSError())
    assert await router.run("p", WRITE) == "written"
    assert calls == ["a?", "b?", "b"]


async def test_an_os_error_after_sending_leaves_a_write_ambiguous() -> None:
    calls: list[str] = []
    router = make_router({"a:1": ConnectionResetError("reset"), "b:1": "written", "c:1": "never"}, calls)
    with pytest.raises(Unavailable, match="may or may not have taken effect: read before retrying"):
        await router.run("p", WRITE)
    assert calls == ["a?", "a"]


@pytest.mark.parametrize(
    "answer",
    [NotFound("k", "p"), RemoteError("ValueError", "bad input"), RemoteProtocolError("garbled reply")],
    ids=lambda exc: type(exc).__name__,
)
@pytest.mark.parametrize("op", [READ, WRITE], ids=["repeatable", "not-repeatable"])
async def test_an_answer_propagates_at_once_without_retry(answer: BoroughError, op: Any) -> None:
    calls: list[str] = []
    located: list[int] = []
    router = make_router({"a:1": answer, "b:1": "ok", "c:1": "ok"}, calls, located_calls=located)
    with pytest.raises(type(answer)) as info:
        await router.run("p", op)
    assert info.value is answer
    assert calls == (["a"] if op.repeatable else ["a?", "a"]) and len(located) == 1 and router.retries == 0


# --- the leader cache ---------------------------------------------------------------------------------------------


async def test_the_leader_cache_forgets_the_least_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "LEADER_CACHE_SIZE", 2)
    calls: list[str] = []
    router = make_router({"a:1": "ok", "b:1": "ok", "c:1": "ok"}, calls)
    await router.run("p1", READ)
    await router.run("p2", READ)
    await router.run("p1", READ)  # p1 used again: p2 is now the least recently used
    await router.run("p3", READ)
    assert [router.leader_of(p) for p in ("p1", "p2", "p3")] == [A, None, A]
    router.learn_leader("p4", B)
    assert [router.leader_of(p) for p in ("p1", "p3", "p4")] == [None, A, B]


async def test_learning_no_leader_forgets_the_cached_one() -> None:
    calls: list[str] = []
    located: list[int] = []
    router = make_router({"a:1": NotLeader("p", "c", "c:1"), "b:1": "ok", "c:1": "ok"}, calls, located_calls=located)
    await router.run("p", READ)
    assert router.leader_of("p") == C and len(located) == 1
    router.learn_leader("p", None)
    router.learn_leader("never-seen", None)  # forgetting an unknown partition is fine
    assert router.leader_of("p") is None
    calls.clear()
    await router.run("p", READ)
    assert len(located) == 2 and calls == ["a", "c"]  # located again, not sent straight to c


def test_forget_only_forgets_the_failing_target() -> None:
    router = make_router({}, [])
    router.learn_leader("p", C)
    router.learn_leader("q", A)
    router._forget("p", A)  # A failed for p, but p's cached leader is C
    assert (router.leader_of("p"), router.leader_of("q")) == (C, A)
    router._forget("p", Target("c", "elsewhere:9"))  # same id, other address: not the cached target
    assert router.leader_of("p") == C
    router._forget("p", C)
    assert (router.leader_of("p"), router.leader_of("q")) == (None, A)


async def test_a_failing_cached_leader_is_forgotten_for_its_partition_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[str] = []
    router = make_router({"a:1": Unavailable("a went away"), "b:1": "ok", "c:1": "ok"}, calls)
    router.learn_leader("p", A)
    router.learn_leader("q", A)
    assert await router.run("p", READ) == "ok"
    assert calls == ["a", "b"]
    assert (router.leader_of("p"), router.leader_of("q")) == (B, A)


# --- locate failures and deadlines --------------------------------------------------------------------------------


async def test_an_unavailable_directory_is_retried_until_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[str] = []
    located: list[int] = []
    failures: list[BaseException] = [Unavailable("directory unreachable")] * 3
    router = make_router({"a:1": "ok", "b:1": "ok", "c:1": "ok"}, calls, located_calls=located, fail_locate=failures)
    assert await router.run("p", READ) == "ok"
    assert len(located) == 4 and calls == ["a"] and router.retries == 3

    tries: list[int] = []
    forever = make_router({}, [], timeout=2.0, located_calls=tries, fail_locate=Unavailable("directory unreachable"))
    start = trio.current_time()
    with pytest.raises(Timeout, match="last error: directory unreachable"):
        await forever.run("p", WRITE)
    assert trio.current_time() - start == pytest.approx(2.0) and len(tries) > 5


async def test_seconds_left_follows_the_innermost_deadline(autojump_clock: trio.testing.MockClock) -> None:
    assert seconds_left() is None
    with trio.fail_after(3):
        assert seconds_left() == pytest.approx(3.0)
        await trio.sleep(1)
        assert seconds_left() == pytest.approx(2.0)
        with trio.move_on_after(0.5):
            assert seconds_left() == pytest.approx(0.5)
            await trio.sleep(0.2)
            assert seconds_left() == pytest.approx(0.3)
        with trio.move_on_after(10):
            assert seconds_left() == pytest.approx(1.8)  # the outer deadline is sooner
            await trio.lowlevel.checkpoint()
    with trio.CancelScope(shield=True):
        assert seconds_left() is None
        await trio.lowlevel.checkpoint()


async def test_seconds_left_is_zero_once_the_deadline_has_passed() -> None:
    with trio.CancelScope(deadline=trio.current_time() - 1) as passed:
        left = seconds_left()
        await trio.lowlevel.checkpoint()
    assert passed.cancelled_caught
    assert left == 0.0  # no time left, not "no deadline" (None)
    with trio.CancelScope() as cancelled:
        cancelled.cancel()
        left = seconds_left()
        await trio.lowlevel.checkpoint()
    assert cancelled.cancelled_caught
    assert left == 0.0


async def test_reads_of_a_cool_partition_go_to_its_leader(autojump_clock: trio.testing.MockClock) -> None:
    """One read at a time: the leader answers (a follower would have to ask it for the read index: a hop more),
    and a caller that knows the leader does not look the partition up first."""
    calls: list[str] = []
    lookups: list[int] = []
    router = make_router({"a:1": "ok", "b:1": "ok", "c:1": "ok"}, calls, located_calls=lookups)
    router.learn_leader("p", A)
    for _ in range(20):
        assert await router.run("p", Get("k")) == "ok"
    assert calls == ["a"] * 20
    assert lookups == []


async def test_stale_reads_of_a_hot_partition_spread_over_the_replicas_and_teach_no_leader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Many stale reads in flight to one partition: routing starts them at random replicas (each answers from
    its own state), so they spread over all of them, and the replica that answered is not taken for the leader
    (a write after it still goes where the leader cache says)."""
    calls: list[str] = []
    router = make_router({"a:1": "ok", "b:1": "ok", "c:1": "ok"}, calls)
    router.learn_leader("p", A)

    async def read() -> None:
        assert await router.run("p", Get("k", consistency="stale")) == "ok"

    async with trio.open_nursery() as nursery:
        for _ in range(60):
            nursery.start_soon(read)
    assert {node: calls.count(node) for node in "abc"} == {node: pytest.approx(20, abs=10) for node in "abc"}
    assert router.leader_of("p") == A
    assert not router._reading  # nothing left behind once the reads are done


async def test_linearizable_reads_of_a_hot_partition_go_to_its_leader(autojump_clock: trio.testing.MockClock) -> None:
    """Many linearizable reads in flight from a caller with no replica of its own: all go to the leader, where
    they share its ReadIndex rounds (a follower would first have to ask the leader for the read index), and no
    lookup is made."""
    calls: list[str] = []
    lookups: list[int] = []
    router = make_router({"a:1": "ok", "b:1": "ok", "c:1": "ok"}, calls, located_calls=lookups)
    router.learn_leader("p", A)

    async def read() -> None:
        assert await router.run("p", Get("k")) == "ok"

    async with trio.open_nursery() as nursery:
        for _ in range(60):
            nursery.start_soon(read)
    assert calls == ["a"] * 60
    assert lookups == []
    assert not router._reading


async def test_a_read_that_a_replica_refuses_goes_on_to_the_next(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[str] = []
    router = make_router({"a:1": NotLeader("p"), "b:1": NotLeader("p"), "c:1": "ok"}, calls)
    for _ in range(10):
        calls.clear()
        assert await router.run("p", Get("k")) == "ok"
        assert calls[-1] == "c" and len(calls) <= 3
