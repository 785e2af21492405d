"""Handlers that are transactions (issue 18), in the simulator: the counter-and-audit example.

The handler reads a partition's counter, writes it back plus one and appends an audit record (the new count and
the request's id) to the ``audit`` partition. Under any fault schedule Hypothesis draws (crashes, restarts,
partitions, pauses, resets, client cuts), with deadlines long enough to outlast the schedule: no request raises;
each partition's counter equals the number of acknowledged requests to it, their replies are exactly 1..n; and
the audit partition holds exactly one record per increment, naming each request once.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import borough
from borough.node.statemachine import KvStateMachine
from borough.node.transaction import MAX_ATTEMPTS
from borough.testing import check_serializable, record_handler_transactions
from borough.testing.checks import check_leaders, check_replicas
from borough.testing.scenario import Fault, client_host, run_faults, run_simulation
from borough.testing.sim import SimCluster
from borough.testing.strategies import fault_schedules

BUDGET = settings().max_examples
SOAK = os.environ.get("BOROUGH_SOAK") == "1"
AUDIT = "audit"


async def counter_handler(request: borough.Request) -> Any:
    """The README's example: count visits per partition, and audit each one in another partition."""
    count = await request.partition.get("counter", 0) + 1
    await request.partition.put("counter", count)
    await request.other_partition(AUDIT).put(f"{request.partition.name}/{count:06d}", request.body["id"])
    return count


async def _client(
    sim: SimCluster,
    index: int,
    requests: int,
    partitions: int,
    pause: float,
    acked: dict[str, list[int]],
    errors: list[str],
) -> None:
    rng = random.Random(index)
    async with sim.client(request_timeout=120.0, host=client_host(index)) as client:
        for n in range(requests):
            partition = f"acct{rng.randrange(partitions)}"
            await trio.sleep(pause * rng.random())
            try:
                count = await client.request(partition, {"id": f"c{index}-{n}"})
            except borough.BoroughError as exc:
                errors.append(f"client {index} request {n} on {partition}: {exc!r}")
            else:
                acked[partition].append(count)


async def _outboxes_empty(sim: SimCluster) -> None:
    while True:
        owed = [
            replica.name
            for node in sim.running()
            for _, replica in node.node.replicas.items()  # type: ignore[union-attr]
            if replica.is_leader and isinstance(replica.machine, KvStateMachine) and len(replica.machine.outbox)
        ]
        if not owed:
            return
        await trio.sleep(0.5)


async def counter_run(
    seed: int, faults: tuple[Fault, ...], clients: int = 3, requests: int = 8, partitions: int = 2, pause: float = 1.0
) -> list[str]:
    """Run the counter example under ``faults``; the problems found (empty: all held)."""
    acked: dict[str, list[int]] = defaultdict(list)
    problems: list[str] = []
    with record_handler_transactions() as recorded:
        problems += await _counter_run(seed, faults, clients, requests, partitions, pause, acked)
    serial = check_serializable(recorded)
    if not serial.ok:
        problems.append(f"handler transactions are not serializable: {serial.explanation}")
    if not recorded:
        problems.append("no handler transaction was recorded")
    return problems


async def _counter_run(
    seed: int,
    faults: tuple[Fault, ...],
    clients: int,
    requests: int,
    partitions: int,
    pause: float,
    acked: dict[str, list[int]],
) -> list[str]:
    problems: list[str] = []
    async with SimCluster(3, seed=seed, handler=counter_handler) as sim:
        async with trio.open_nursery() as nursery:
            for index in range(clients):
                nursery.start_soon(_client, sim, index, requests, partitions, pause, acked, problems)

            async def faults_then_heal() -> None:
                await run_faults(sim, faults, nursery)
                problems.extend((await check_leaders(sim, leader_bound=60.0)).problems)

            nursery.start_soon(faults_then_heal)
        if problems:
            return problems
        with trio.move_on_after(60.0) as waiting:
            await _outboxes_empty(sim)
        if waiting.cancelled_caught:
            problems.append("effects still owed 60 s after healing")
        problems.extend(await check_replicas(sim))
        async with sim.client(request_timeout=30.0) as reader:
            audit = [(k, v) async for k, v in reader.partition(AUDIT).iterator()]
            for p in range(partitions):
                name = f"acct{p}"
                counter = await reader.partition(name).get("counter", 0)
                replies = sorted(acked[name])
                if replies != list(range(1, len(replies) + 1)) or counter != len(replies):
                    problems.append(f"{name}: counter {counter}, replies {replies}")
                records = [k for k, _ in audit if k.startswith(f"{name}/")]
                if records != [f"{name}/{n:06d}" for n in range(1, counter + 1)]:
                    problems.append(f"{name}: counter {counter}, audit records {records}")
        ids = [v for _, v in audit]
        if len(ids) != len(set(ids)) or len(ids) != sum(len(r) for r in acked.values()):
            problems.append(f"audit names requests {sorted(ids)}, acknowledged {dict(acked)}")
    return problems


def test_counter_and_audit_without_faults_count_every_request_exactly_once() -> None:
    # 8 clients at once on 2 partitions: handler runs of one partition overlap all the time
    assert run_simulation(counter_run, 11, (), 8, 10, 2, 0.001) == []


@settings(max_examples=max(3, BUDGET // 8), derandomize=not SOAK, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), faults=fault_schedules(3, max_faults=5, clients=3))
def test_counter_and_audit_under_fault_schedules(seed: int, faults: tuple[Fault, ...]) -> None:
    problems = run_simulation(counter_run, seed, faults)
    assert not problems, f"seed={seed} faults={faults}\n" + "\n".join(problems)


# --- abort paths: nothing left behind ---------------------------------------------------------------------------


async def test_a_handler_that_raises_leaves_no_write_and_no_effect(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(request: borough.Request) -> Any:
        await request.partition.put("half", 1)
        await request.other_partition(AUDIT).put("effect", 1)
        if request.body == "fail":
            raise LookupError("no such order")
        return "ok"

    async with SimCluster(3, seed=21, handler=handler) as sim, sim.client() as client:
        with pytest.raises(borough.RemoteError, match="no such order"):
            await client.request("acct0", "fail")
        await trio.sleep(5)  # long enough for any effect to be delivered
        assert await client.partition("acct0").get("half", None) is None
        assert await client.partition(AUDIT).get("effect", None) is None
        assert await client.request("acct0", "go") == "ok"
        await trio.sleep(1)
        assert await client.partition(AUDIT).get("effect") == 1


async def test_a_handler_cut_off_by_its_deadline_leaves_nothing(autojump_clock: trio.testing.MockClock) -> None:
    started = trio.Event()

    async def handler(request: borough.Request) -> Any:
        await request.partition.put("slow", 1)
        await request.other_partition(AUDIT).put("slow", 1)
        started.set()
        await trio.sleep(1000)

    async with SimCluster(3, seed=22, handler=handler) as sim, sim.client(request_timeout=5.0) as client:
        with pytest.raises(borough.Timeout):
            await client.request("acct0", None)
        assert started.is_set()
        await trio.sleep(20)
        assert await client.partition("acct0").get("slow", None) is None
        assert await client.partition(AUDIT).get("slow", None) is None


async def test_a_handler_whose_leader_is_lost_mid_run_commits_only_the_rerun(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first run of a request is on a leader that crashes while the handler waits; routing sends the request
    again (same session and seq) and the new leader's run is the one that counts, once."""
    runs: list[str] = []
    crash = trio.Event()

    async def handler(request: borough.Request) -> Any:
        runs.append(request.node.whoami())
        count = await request.partition.get("counter", 0) + 1
        await request.partition.put("counter", count)
        await request.other_partition(AUDIT).put(f"visit/{count}", request.body)
        if len(runs) == 1:
            crash.set()
            await trio.sleep(1000)  # its node dies meanwhile
        return count

    async with SimCluster(3, seed=23, handler=handler) as sim, sim.client(request_timeout=60.0) as client:
        await client.partition("acct0").put("counter", 0)
        async with trio.open_nursery() as nursery:

            async def crash_the_leader() -> None:
                await crash.wait()
                await sim.crash(sim.index_of(runs[0]))

            nursery.start_soon(crash_the_leader)
            assert await client.request("acct0", "first") == 1
        assert len(runs) >= 2 and runs[-1] != runs[0]
        await trio.sleep(5)
        assert await client.partition("acct0").get("counter") == 1
        assert [k async for k in client.partition(AUDIT).iterator(values=False)] == ["visit/1"]


async def test_a_non_transactional_handler_writes_as_it_goes(autojump_clock: trio.testing.MockClock) -> None:
    @borough.non_transactional
    async def handler(request: borough.Request) -> Any:
        await request.partition.put("first", 1)
        await request.other_partition(AUDIT).put("direct", 1)  # applied at once, not held
        raise LookupError("halfway")

    async with SimCluster(3, seed=24, handler=handler) as sim, sim.client() as client:
        with pytest.raises(borough.RemoteError, match="halfway"):
            await client.request("acct0", None)
        assert await client.partition("acct0").get("first") == 1  # the trade-off: what it did stays
        assert await client.partition(AUDIT).get("direct") == 1


async def test_a_run_whose_read_changed_before_its_commit_runs_again(autojump_clock: trio.testing.MockClock) -> None:
    """A plain write lands between the handler's read and its commit (the handler makes it itself, through the
    routed API, which takes no turn): validation refuses the first run's entry and the leader runs it again."""
    runs: list[int] = []

    async def handler(request: borough.Request) -> Any:
        count = await request.partition.get("counter", 0)
        runs.append(count)
        if len(runs) == 1:
            await request.node.partition(request.partition.name).put("counter", 100)
        await request.partition.put("counter", count + 1)
        return count + 1

    with record_handler_transactions() as recorded:
        async with SimCluster(3, seed=25, handler=handler) as sim, sim.client() as client:
            assert await client.request("acct0", None) == 101
            assert runs == [0, 100]
            assert await client.partition("acct0").get("counter") == 101
    assert check_serializable(recorded).ok


async def test_a_run_that_always_conflicts_gives_up_with_the_reason(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(request: borough.Request) -> Any:
        count = await request.partition.get("counter", 0)
        await request.node.partition(request.partition.name).put("counter", count + 1000)
        await request.partition.put("counter", count + 1)

    async with SimCluster(3, seed=26, handler=handler) as sim, sim.client(request_timeout=3.0) as client:
        with pytest.raises(borough.Timeout):  # each try gave up (Overloaded: nothing applied), so routing retried
            await client.request("acct0", None)
        # every run's own plain write landed; no run's transaction did
        assert (await client.partition("acct0").get("counter")) % 1000 == 0
        gave_up = [n.node.transactions.conflicts for n in sim.nodes if n.node is not None]
        assert max(gave_up) >= MAX_ATTEMPTS


async def test_no_write_skew_through_a_range_read(autojump_clock: trio.testing.MockClock) -> None:
    """The on-call example: a doctor may go off call only if another is still on call, judged by iterating the
    roster. Run for every doctor at once, at most all but one go off call (without validating the range
    read, each sees the others on call and all go: write skew)."""

    async def off_call(request: borough.Request) -> Any:
        on = [k async for k, v in request.partition.iterator(gte="doc/", lt="doc0") if v == "on"]
        await trio.sleep(0.01)  # the runs would interleave here, were they not one at a time and validated
        if len(on) >= 2 and f"doc/{request.body}" in on:
            await request.partition.put(f"doc/{request.body}", "off")
            return True
        return False

    with record_handler_transactions() as recorded:
        async with SimCluster(3, seed=27, handler=off_call) as sim, sim.client() as client:
            roster = client.partition("ward")
            await roster.batch([("put", f"doc/{n}", "on") for n in range(5)])
            results: list[bool] = []

            async def go(n: int) -> None:
                results.append(await client.request("ward", n))

            async with trio.open_nursery() as nursery:
                for n in range(5):
                    nursery.start_soon(go, n)
            on = [k async for k, v in roster.iterator() if v == "on"]
            assert len(on) == 1 and results.count(True) == 4
    assert check_serializable(recorded).ok


async def test_a_key_inserted_into_an_iterated_range_before_the_commit_is_a_conflict(
    autojump_clock: trio.testing.MockClock,
) -> None:
    counts: list[int] = []

    async def count_docs(request: borough.Request) -> Any:
        docs = [k async for k in request.partition.iterator(gte="doc/", lt="doc0", values=False)]
        counts.append(len(docs))
        if len(counts) == 1:  # a phantom appears after the read (a plain write: it takes no turn)
            await request.node.partition(request.partition.name).put("doc/new", "on")
        await request.partition.put("census", len(docs))
        return len(docs)

    async with SimCluster(3, seed=28, handler=count_docs) as sim, sim.client() as client:
        await client.partition("ward").batch([("put", f"doc/{n}", "on") for n in range(3)])
        assert await client.request("ward", None) == 4
        assert counts == [3, 4]
        assert await client.partition("ward").get("census") == 4


async def test_a_run_that_raised_on_a_view_that_changed_under_it_runs_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The handler checks an invariant (a == b); a plain write changes both between its two reads, so the first
    run sees a mix and raises: that is no answer (its reads changed), so it runs again and succeeds."""
    runs: list[tuple[int, int]] = []

    async def handler(request: borough.Request) -> Any:
        p = request.partition
        a = await p.get("a")
        if not runs:
            await request.node.partition(p.name).batch([("put", "a", 2), ("put", "b", 2)])
        b = await p.get("b")
        runs.append((a, b))
        if a != b:
            raise ValueError(f"invariant broken: a={a} b={b}")
        return a

    async with SimCluster(3, seed=29, handler=handler) as sim, sim.client() as client:
        await client.partition("acct0").batch([("put", "a", 1), ("put", "b", 1)])
        assert await client.request("acct0", None) == 2
        assert runs == [(1, 2), (2, 2)]
