"""The router alone: leader cache, NotLeader hints, retries with backoff, deadlines."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from borough.errors import NotLeader, Timeout, Unavailable
from borough.node.protocol import Info, Write
from borough.node.records import Delete
from borough.node.routing import Router, Target

A, B, C = Target("a", "a:1"), Target("b", "b:1"), Target("c", "c:1")
READ = Info()  # repeatable
WRITE = Write((Delete("k"),))  # not repeatable


def make_router(
    answers: dict[str, Any], calls: list[str], *, timeout: float = 5.0, located: list[Target] | None = None
) -> Router:
    async def locate(partition: str, create: bool) -> list[Target]:
        await trio.lowlevel.checkpoint()
        return list(located if located is not None else [A, B, C])

    async def execute(target: Target, partition: str, op: Any) -> Any:
        await trio.lowlevel.checkpoint()
        calls.append(target.node_id or target.address)
        answer = answers[target.address]
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
    assert calls == ["a", "b"]  # the NotLeader was safe to follow; the failure after it was not
