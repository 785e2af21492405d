"""``borough.node.quick.QuickCalls``: which gets it takes (stale ones of a hosted partition, linearizable ones on
its leader) and which it leaves to the ordinary way, and that its answers are the ordinary way's answers."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from borough.errors import BoroughError, NotFound, NotLeader, Overloaded, RemoteError
from borough.kv import encode_value
from borough.node.protocol import Get, Write
from borough.node.quick import QuickCalls
from borough.node.records import Put
from borough.node.session_table import SessionRef
from borough.node.statemachine import KvStateMachine
from borough.node.system_state import SYSTEM
from borough.node.waiters import Waiter
from borough.raft.records import Entry
from borough.testing import SimCluster
from borough.wire.records import IncomingCall

from .fakes_server import CALLER, Rig, incoming, make_rig, put_data

P = "users"


class Replica:
    """The part of a replica quick gets use: whether it leads, and a read queue of real waiters."""

    def __init__(self, *, is_leader: bool = True, refuse: BoroughError | None = None) -> None:
        self.is_leader = is_leader
        self.refuse = refuse
        self.reads: list[Waiter] = []

    def read_nowait(self) -> Waiter:
        if self.refuse is not None:
            raise self.refuse
        waiter = Waiter()
        self.reads.append(waiter)
        return waiter


class Answer:
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    def reply(self, body: Any) -> None:
        self.got.append(("reply", body))

    def fail(self, error: BaseException) -> None:
        self.got.append(("fail", error))


def make(rig: Rig, replicas: dict[str, Replica]) -> tuple[QuickCalls, list[tuple[str, float]], list[tuple[Any, Any]]]:
    ops: list[tuple[str, float]] = []
    learned: list[tuple[Any, Any]] = []
    quick = QuickCalls(
        node_id="n1",
        limits=rig.server.limits,
        roles=rig.server._roles,
        store=rig.store,
        replica=replicas.get,
        learn_address=lambda node_id, address: learned.append((node_id, address)),
        on_op=lambda: lambda name, seconds: ops.append((name, seconds)),
    )
    return quick, ops, learned


async def ordinary(rig: Rig, call: IncomingCall) -> tuple[str, Any]:
    try:
        return ("reply", await rig.server.handle_call(call))
    except BoroughError as exc:
        return ("fail", exc)


@pytest.mark.parametrize("key", ["alice", "nobody", b"\x00raw"])
async def test_a_stale_get_of_a_hosted_partition_is_answered_at_once_as_the_ordinary_way_answers(
    autojump_clock: trio.testing.MockClock, key: str | bytes
) -> None:
    rig = make_rig()
    rig.host(P)
    put_data(rig.store, P, {"alice": {"age": 30}, b"\x00raw": [1, 2]})
    quick, ops, learned = make(rig, {P: Replica(is_leader=False)})
    answer = Answer()
    call = incoming(P, Get(key, "stale"))
    assert quick.try_call(call, answer)
    assert answer.got == [await ordinary(rig, call)]
    assert [name for name, _ in ops] == ["get"] and learned == [(CALLER.node_id, CALLER.address)]


async def test_a_linearizable_get_on_the_leader_is_answered_once_its_read_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    rig.host(P)
    put_data(rig.store, P, {"alice": 1})
    replica = Replica()
    quick, ops, _ = make(rig, {P: replica})
    answer = Answer()
    call = incoming(P, Get("alice"))
    assert quick.try_call(call, answer)
    assert answer.got == [] and len(replica.reads) == 1
    put_data(rig.store, P, {"alice": 2})  # applied before the read is served: the answer reads it
    await trio.sleep(0.25)
    replica.reads[0].succeed()
    assert answer.got == [await ordinary(rig, call)]
    assert ops == [("get", pytest.approx(0.25))]


async def test_a_linearizable_get_whose_read_fails_fails_with_its_error(autojump_clock: trio.testing.MockClock) -> None:
    rig = make_rig()
    replica = Replica()
    quick, _, _ = make(rig, {P: replica})
    answer = Answer()
    assert quick.try_call(incoming(P, Get("alice")), answer)
    lost = NotLeader(P, "n2", "n2:1")
    replica.reads[0].fail(lost)
    assert answer.got == [("fail", lost)]


async def test_a_store_that_fails_mid_answer_gives_an_internal_error_not_a_crash(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig()
    replica = Replica()
    quick, _, _ = make(rig, {P: replica})

    def broken(*args: Any) -> Any:
        raise KeyError("secret internal state")

    monkeypatch.setattr("borough.node.quick.read_value", broken)
    answer = Answer()
    assert quick.try_call(incoming(P, Get("alice")), answer)
    replica.reads[0].succeed()  # (runs in the replica's turn: it must not raise)
    [(kind, error)] = answer.got
    assert kind == "fail" and isinstance(error, RemoteError) and "secret" not in str(error)


@pytest.mark.parametrize(
    ("why", "partition", "op", "replica"),
    [
        ("a write", P, Write((Put("k", b"v"),)), Replica()),
        ("a partition not hosted here", "elsewhere", Get("k"), None),
        ("_system", SYSTEM, Get("k"), Replica()),
        ("a follower's linearizable read", P, Get("k"), Replica(is_leader=False)),
        ("a read its replica refuses", P, Get("k"), Replica(refuse=Overloaded("full"))),
    ],
)
async def test_gets_it_cannot_answer_alone_go_the_ordinary_way(
    autojump_clock: trio.testing.MockClock, why: str, partition: str, op: Any, replica: Replica | None
) -> None:
    rig = make_rig()
    quick, ops, learned = make(rig, {partition: replica} if replica is not None else {})
    answer = Answer()
    assert not quick.try_call(incoming(partition, op), answer), why
    assert answer.got == [] and ops == [] and learned == [] and quick.taken == 0
    assert replica is None or replica.reads == []


@pytest.mark.parametrize(
    "body",
    [
        "not a list",
        ["get", P],
        ["get", P, ["k"], 1.0],  # args short
        ["get", P, [b"k" * 100_000, "linearizable"], 1.0],  # key over the limit
        ["get", P, ["k", "sloppy"], 1.0],
        ["get", "", ["k", "stale"], 1.0],
        ["get", P, ["k", "stale"], -1],
    ],
)
async def test_malformed_gets_go_the_ordinary_way_which_refuses_them(
    autojump_clock: trio.testing.MockClock, body: Any
) -> None:
    rig = make_rig()
    quick, _, _ = make(rig, {P: Replica(), "": Replica()})
    call = IncomingCall(peer=CALLER, body=body, streams={})
    assert not quick.try_call(call, Answer())
    with pytest.raises(BoroughError):
        await rig.server.handle_call(call)


async def test_a_clients_gets_are_answered_by_the_leaders_quick_path_in_a_cluster(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """End to end (three simulated nodes, a client that is no member): the leader answers the client's gets,
    linearizable and stale, through its quick path, with what was written; a missing key is still NotFound."""
    async with SimCluster(3, seed=31) as sim, sim.client() as client:
        p = client.partition("quick")
        for n in range(5):
            await p.put(f"k{n}", {"n": n})
        leader = (await p.info()).leader
        node = next(sn.node for sn in sim.nodes if sn.node is not None and sn.node.node_id == leader)
        assert node is not None
        quick = node.transport.on_quick_call
        assert quick is not None
        taken = quick.__self__.taken  # type: ignore[attr-defined]
        for n in range(5):
            assert await p.get(f"k{n}") == {"n": n}
        assert await p.get("k0", consistency="stale") == {"n": 0}  # (a cool partition's: read at its leader)
        with pytest.raises(NotFound):
            await p.get("missing")
        assert quick.__self__.taken >= taken + 6  # type: ignore[attr-defined]


# --- writes -------------------------------------------------------------------------------------------------------

SESSION = SessionRef(b"s" * 16, 1, 1)


class Leader(Replica):
    """A leading replica with a real state machine whose proposals the test settles."""

    def __init__(self, rig: Rig, *, refuse: BoroughError | None = None) -> None:
        super().__init__(refuse=refuse)
        self.machine = KvStateMachine(P, rig.store, now=trio.current_time)
        self.proposals: list[tuple[bytes, Waiter]] = []

    def propose_nowait(self, data: bytes) -> Waiter:
        if self.refuse is not None:
            raise self.refuse
        waiter = Waiter()
        self.proposals.append((data, waiter))
        return waiter


async def test_a_write_with_a_session_on_the_leader_is_proposed_at_once_and_answered_when_applied(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    leader = Leader(rig)
    quick, ops, learned = make(rig, {P: leader})
    answer = Answer()
    write = Write((Put("k", encode_value("v")),), SESSION)
    assert quick.try_call(incoming(P, write), answer)
    [(data, waiter)] = leader.proposals
    assert data[:1] and answer.got == [] and quick.taken == 1 and quick.pending == 1  # (proposed, not applied)
    # The entry it proposed is the one the ordinary way proposes: the session rides with it.
    writes, results = leader.machine.apply([Entry(term=1, index=1, data=data)])
    assert writes  # (the put)
    await trio.sleep(0.5)
    waiter.succeed(results.get(1))
    assert answer.got == [("reply", write.encode_result(results.get(1)))] and quick.pending == 0
    assert ops == [("write", pytest.approx(0.5))] and learned == [(CALLER.node_id, CALLER.address)]
    # Applied once: the same entry again is a duplicate of (session, seq), a no-op.
    again, _ = leader.machine.apply([Entry(term=1, index=2, data=data)])
    assert again == []


@pytest.mark.parametrize(
    ("outcome", "expect"),
    [
        ("lost", NotLeader),  # its entry lost to a leader change: safe to retry, the router does
        ("refused", Overloaded),  # the session table refused it: nothing applied
        ("bug", RemoteError),  # anything else is ours: an internal error, never our internals
    ],
)
async def test_a_write_that_is_not_applied_fails_with_what_the_ordinary_way_raises(
    autojump_clock: trio.testing.MockClock, outcome: str, expect: type[BaseException]
) -> None:
    rig = make_rig()
    leader = Leader(rig)
    quick, _, _ = make(rig, {P: leader})
    answer = Answer()
    assert quick.try_call(incoming(P, Write((Put("k", encode_value("v")),), SESSION)), answer)
    [(_, waiter)] = leader.proposals
    if outcome == "lost":
        waiter.fail(NotLeader(P, "n2", "n2:1"))
    else:
        waiter.succeed(Overloaded("window full") if outcome == "refused" else KeyError("secret internal state"))
    [(kind, error)] = answer.got
    assert kind == "fail" and isinstance(error, expect) and "secret" not in str(error)


@pytest.mark.parametrize(
    ("why", "partition", "session", "leads", "refuse"),
    [
        ("a write without a session", P, None, True, None),
        ("a follower", P, SESSION, False, None),
        ("_system", SYSTEM, SESSION, True, None),
        ("a partition not hosted here", "elsewhere", SESSION, True, None),
        ("a proposal its replica refuses", P, SESSION, True, Overloaded("full")),
    ],
)
async def test_writes_it_cannot_take_go_the_ordinary_way(
    autojump_clock: trio.testing.MockClock,
    why: str,
    partition: str,
    session: SessionRef | None,
    leads: bool,
    refuse: BoroughError | None,
) -> None:
    rig = make_rig()
    leader = Leader(rig, refuse=refuse)
    leader.is_leader = leads
    quick, ops, _ = make(rig, {P: leader, SYSTEM: leader})
    answer = Answer()
    assert not quick.try_call(incoming(partition, Write((Put("k", encode_value("v")),), session)), answer), why
    assert answer.got == [] and ops == [] and quick.taken == 0 and leader.proposals == []


async def test_a_clients_writes_are_answered_by_the_leaders_quick_path_exactly_once_in_a_cluster(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """End to end: once the group has a leader, a client's puts go through its quick path, and what they wrote
    is there (each write once: a counter of writes applied matches the puts made)."""
    async with SimCluster(3, seed=32) as sim, sim.client() as client:
        p = client.partition("quick-writes")
        await p.put("k", 0)
        leader = (await p.info()).leader
        node = next(sn.node for sn in sim.nodes if sn.node is not None and sn.node.node_id == leader)
        quick = node.transport.on_quick_call
        assert quick is not None
        taken = quick.__self__.taken  # type: ignore[attr-defined]
        for n in range(1, 11):
            await p.put("k", n)
            await p.put(f"k{n}", n)
        assert quick.__self__.taken == taken + 20  # type: ignore[attr-defined]
        assert await p.get("k") == 10 and [await p.get(f"k{n}") for n in range(1, 11)] == list(range(1, 11))


class _Rounds:
    """What ``LoneCallHooks`` tells the node's rounds, logged."""

    def __init__(self) -> None:
        self.log: list[Any] = []

    def enter(self) -> None:
        self.log.append("enter")

    def leave(self, *, inline: bool = True) -> None:
        self.log.append(("leave", inline))


async def test_a_clients_round_runs_in_its_reader_only_while_its_call_is_the_one_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rig = make_rig()
    replica = Replica()
    quick, _, _ = make(rig, {P: replica})
    rounds = _Rounds()
    hooks = quick.hooks(rounds)  # type: ignore[arg-type]
    answers = [Answer(), Answer()]
    hooks.enter()
    assert quick.try_call(incoming(P, Get("alice")), answers[0]) and quick.pending == 1
    hooks.leave()  # a lone client's read: its round may run in the reader
    hooks.enter()
    assert quick.try_call(incoming(P, Get("bob")), answers[1]) and quick.pending == 2
    hooks.leave()  # two in flight: the round task's pass, where calls arriving together share a round
    replica.reads[0].succeed()
    replica.reads[1].fail(NotLeader(P, "n2", "n2:1"))
    assert quick.pending == 0 and all(len(a.got) == 1 for a in answers)
    stale = Answer()
    assert quick.try_call(incoming(P, Get("alice", consistency="stale")), stale) and quick.pending == 0
    assert rounds.log == ["enter", ("leave", True), "enter", ("leave", False)]
