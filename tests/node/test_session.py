"""The routed session alone: a real Directory and Router over a scripted fake transport (no cluster).

Covered: finding a partition through a seed's directory answer, the leader cache, NotLeader hints, which failures
a write is retried after (and which leave its outcome unknown), NotFound for a partition never created, stale
reads of a hosted partition from the local store, running in place on this node, requests with streams, and the
Timeout message."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing

from borough.errors import NotDelivered, NotLeader, Overloaded, Timeout, Unavailable
from borough.kv import encode_value
from borough.node.directory import Directory
from borough.node.protocol import Call, FindLeader, Get, Locate, Members, Op, Scan, Write, decode_call
from borough.node.records import DirectoryRecord, Limits, Put, ScanPage, ScanRange
from borough.node.routing import Target
from borough.node.session import Session
from borough.node.session_table import SessionRef
from borough.node.system_state import SYSTEM
from borough.ring.members import Member, MemberTable
from borough.store.memory import MemoryStore
from borough.wire.records import Reply

SEED = "seed:1"
TABLE = MemberTable(
    version=2,
    members=[
        Member(node_id="a", address="a:1"),
        Member(node_id="b", address="b:1"),
        Member(node_id="c", address="c:1"),
    ],
)
V1, V2 = encode_value("one"), encode_value({"two": 2})


def record(*voters: str, name: str = "p") -> list[Any]:
    return DirectoryRecord(name=name, voters=voters, table_version=TABLE.version).to_list()  # type: ignore[arg-type]


class Net:
    """A fake transport: answers per (address, op name) from a script, and records every call it gets.

    A script entry is a list of answers used in turn (the last one repeats): a reply body, a ``Reply``, or an
    exception to raise. A call nobody scripted fails the test (AssertionError is not something routing
    retries)."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Any]] = {}
        self.sent: list[tuple[str, str, Op]] = []  # (address, partition, op), as decoded from the wire
        self.streams: list[Mapping[str, Any] | None] = []
        self.left: list[float | None] = []

    def on(self, address: str, op_name: str, *answers: Any) -> None:
        self.script[(address, op_name)] = list(answers)

    def seed_knows(self, *voters: str) -> None:
        self.on(SEED, "sys.dir", record(*voters))
        self.on(SEED, "sys.members", TABLE.to_list())

    def ops(self, op_name: str) -> list[tuple[str, Op]]:
        return [(address, op) for address, _, op in self.sent if op.name == op_name]

    async def call(
        self, address: str, body: Any, streams: Mapping[str, Any] | None = None, deadline: float | None = None
    ) -> Reply[Any]:
        await trio.lowlevel.checkpoint()
        partition, op, left = decode_call(body, Limits())  # whatever the session sends must be a valid call
        self.sent.append((address, partition, op))
        self.streams.append(streams)
        self.left.append(left)
        answers = self.script.get((address, op.name))
        if not answers and op.name == "leader":
            # Routing's probe before a write or request to a node not known to lead: the node answers it as
            # it would answer the op, NotLeader (with its hint) or yes.
            scripted = [a[0] for (addr, name), a in self.script.items() if addr == address and a]
            hint = next((a for a in scripted if isinstance(a, NotLeader)), None)
            answers = [hint if hint is not None else None]
        if not answers:
            raise AssertionError(f"unscripted call: {op.name} of {partition!r} to {address}")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer if isinstance(answer, Reply) else Reply(answer)


def make_session(net: Net, *, timeout: float = 5.0, **member: Any) -> Session:
    session: Session

    async def system_call(op: Op) -> Any:
        return await session.system(op)

    directory = Directory(system_call=system_call, seeds=[SEED])
    session = Session(
        directory=directory, call=net.call, limits=Limits(), request_timeout=timeout, rng=random.Random(7), **member
    )
    return session


async def test_a_get_locates_the_partition_through_a_seed_then_asks_a_voter() -> None:
    net = Net()
    net.seed_knows("a", "b")
    net.on("a:1", "get", V1)
    net.on("b:1", "get", V1)
    session = make_session(net)
    assert await session.kv_get("p", "k", "linearizable") == V1
    assert net.sent[:2] == [
        (SEED, SYSTEM, Locate("p", False)),  # a read never registers the partition
        (SEED, SYSTEM, Members()),  # the voters' addresses were not known yet
    ]
    assert net.sent[2:] in ([("a:1", "p", Get("k"))], [("b:1", "p", Get("k"))])  # any replica serves a read
    assert all(left is not None and 0 < left <= 5.0 for left in net.left)  # every call carries the time left
    assert session.router.leader_of("p") is None  # a replica that served a read may be a follower


async def test_the_second_call_goes_straight_to_the_cached_leader() -> None:
    net = Net()
    net.seed_knows("a", "b", "c")
    net.on("a:1", "write", NotLeader("p", "c", "c:1"))
    net.on("c:1", "write", None)
    session = make_session(net)
    await session.kv_write("p", (Put("k", V1),))
    net.sent.clear()
    await session.kv_write("p", (Put("k", V2),))
    assert [(address, op.name) for address, _, op in net.sent] == [("c:1", "write")]  # no directory call


async def test_a_not_leader_hint_is_followed_before_the_other_voters() -> None:
    net = Net()
    net.seed_knows("a", "b", "c")
    net.on("a:1", "write", NotLeader("p", "c", "c:1"))
    net.on("c:1", "write", None)
    session = make_session(net)
    await session.kv_write("p", (Put("k", V1),))
    assert net.ops("sys.dir") == [(SEED, Locate("p", True))]  # a write may register the partition
    # A write with a session may be sent again, so nobody is probed first; a's NotLeader names c, which leads:
    # b is skipped.
    assert net.ops("leader") == []
    ref = SessionRef(session.sequencer.session, 1, 1)
    assert net.ops("write") == [("a:1", Write((Put("k", V1),), ref)), ("c:1", Write((Put("k", V1),), ref))]
    assert session.router.leader_of("p") == Target("c", "c:1")


async def test_a_write_cut_off_after_it_was_sent_is_sent_again_with_the_same_session_and_seq() -> None:
    net = Net()
    net.seed_knows("a", "b")
    net.on("a:1", "write", Unavailable("connection reset by peer"))
    net.on("b:1", "write", None)
    session = make_session(net)
    await session.kv_write("p", (Put("k", V1),))
    await session.kv_write("p", (Put("k", V2),))
    writes = net.ops("write")
    # The partition applies a (session, seq) once however often it arrives: the retry on b is safe.
    assert [address for address, _ in writes] == ["a:1", "b:1", "b:1"]
    refs = [op.session for _, op in writes if isinstance(op, Write)]
    assert refs == [SessionRef(session.sequencer.session, 1, 1)] * 2 + [SessionRef(session.sequencer.session, 2, 2)]
    assert session.sequencer.in_flight("p") == 0
    assert session.router.leader_of("p") == Target("b", "b:1")


async def test_a_write_whose_deadline_runs_out_says_its_outcome_is_unknown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = Net()
    net.seed_knows("a")
    net.on("a:1", "write", Unavailable("connection reset by peer"))
    session = make_session(net, timeout=3.0)
    with pytest.raises(Timeout, match="may or may not have taken effect") as info:
        await session.kv_write("p", (Put("k", V1),))
    assert "connection reset by peer" in str(info.value)
    assert len(net.ops("write")) > 3  # sent again and again until the deadline: always the same seq
    assert {op.session for _, op in net.ops("write") if isinstance(op, Write)} == {
        SessionRef(session.sequencer.session, 1, 1)
    }
    assert session.sequencer.in_flight("p") == 0  # given up: a later write's low passes it


async def test_concurrent_writes_to_a_partition_carry_the_lowest_seq_still_in_flight() -> None:
    net = Net()
    net.seed_knows("a")
    release = trio.Event()
    seen: list[SessionRef] = []

    async def slow_call(
        address: str, body: Any, streams: Mapping[str, Any] | None = None, deadline: float | None = None
    ) -> Reply[Any]:
        _, op, _ = decode_call(body, Limits())
        if isinstance(op, Write) and op.session is not None:
            seen.append(op.session)
            if op.session.seq == 1:
                await release.wait()
            return Reply(None)
        return await net.call(address, body, streams)

    session = make_session(net)
    session._call = slow_call
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.kv_write, "p", (Put("k", V1),))
        await trio.testing.wait_all_tasks_blocked()
        await session.kv_write("p", (Put("k", V2),))  # 1 is still in flight: low stays 1
        await session.kv_write("q", (Put("k", V2),))  # another partition has its own low
        release.set()
    await session.kv_write("p", (Put("k", V2),))
    assert [(r.seq, r.low) for r in seen] == [(1, 1), (2, 1), (3, 3), (4, 4)]


@pytest.mark.parametrize("refusal", [Overloaded("the proposal queue is full"), NotDelivered("no connection")])
async def test_a_write_refused_before_it_ran_is_retried(
    refusal: Exception, autojump_clock: trio.testing.MockClock
) -> None:
    net = Net()
    net.seed_knows("a")  # a single voter: the retry must go to the same node again, after a backoff
    net.on("a:1", "write", refusal, refusal, None)
    session = make_session(net)
    put = Put("k", V1)
    await session.kv_write("p", (put,))
    assert net.ops("write") == [("a:1", Write((put,), SessionRef(session.sequencer.session, 1, 1)))] * 3
    assert session.router.retries == 2


async def test_a_read_is_retried_after_unavailable(autojump_clock: trio.testing.MockClock) -> None:
    net = Net()
    net.seed_knows("a")
    net.on("a:1", "get", Unavailable("connection reset by peer"), V1)
    session = make_session(net)
    assert await session.kv_get("p", "k", "linearizable") == V1
    assert [address for address, _ in net.ops("get")] == ["a:1", "a:1"]


async def test_a_partition_that_was_never_created_reads_as_empty() -> None:
    net = Net()
    net.on(SEED, "sys.dir", None)  # no directory record: the partition does not exist
    session = make_session(net)
    assert await session.kv_get("nowhere", "k", "linearizable") is None
    assert await session.kv_scan("nowhere", ScanRange(), 10, "linearizable") == ScanPage([], False)
    assert [op for _, op in net.ops("sys.dir")] == [Locate("nowhere", False)] * 2  # not registered by a read
    assert {address for address, _, _ in net.sent} == {SEED}  # no data node was asked


def hosted_store() -> MemoryStore:
    store = MemoryStore()
    batch = store.write_batch()
    batch.apply("p", [("put", "a", V1), ("put", b"b", V2), ("put", "c", V1)], 1)
    store.write(batch)
    return store


async def test_a_stale_read_of_a_hosted_partition_reads_the_local_store() -> None:
    net = Net()  # nothing scripted: any call fails the test
    store = hosted_store()
    session = make_session(net, hosted=lambda partition: store if partition == "p" else None)
    assert await session.kv_get("p", "a", "stale") == V1
    assert await session.kv_get("p", b"b", "stale") == V2
    assert await session.kv_get("p", "missing", "stale") is None
    assert await session.kv_scan("p", ScanRange(), 10, "stale") == ScanPage([("a", V1), (b"b", V2), ("c", V1)], False)
    assert await session.kv_scan("p", ScanRange(gt="a", values=False), 1, "stale") == ScanPage([(b"b", None)], True)
    assert net.sent == []


async def test_a_linearizable_read_of_a_hosted_partition_goes_to_the_leader() -> None:
    net = Net()
    net.seed_knows("b")
    net.on("b:1", "get", V2)
    net.on("b:1", "scan", ScanPage([("x", V2)], False).to_list())
    store = hosted_store()
    session = make_session(net, hosted=lambda partition: store)
    assert await session.kv_get("p", "a", "linearizable") == V2  # not the local V1
    assert await session.kv_scan("p", ScanRange(), 5, "linearizable") == ScanPage([("x", V2)], False)
    assert [op for _, op in net.ops("get") + net.ops("scan")] == [Get("a"), Scan(ScanRange(), 5)]


async def test_a_target_that_is_this_node_runs_in_place() -> None:
    net = Net()
    net.seed_knows("a", "b")
    here: list[tuple[str, Op, Mapping[str, Any] | None]] = []

    async def execute_here(partition: str, op: Op, streams: Mapping[str, Any] | None) -> Any:
        await trio.lowlevel.checkpoint()
        here.append((partition, op, streams))
        return V1

    session = make_session(net, me=Target("a", "a:1"), execute_here=execute_here)
    assert await session.kv_get("p", "k", "linearizable") == V1
    assert here == [("p", Get("k"), None)]
    assert not net.ops("get")  # this node's replica is tried first (no network hop): no call at all


async def test_a_request_with_streams_finds_the_leader_then_sends_once() -> None:
    net = Net()
    net.seed_knows("a", "b")
    net.on("a:1", "leader", NotLeader("p", "b", "b:1"))
    net.on("b:1", "leader", None)
    out = trio.testing.MemoryReceiveStream()
    net.on("b:1", "request", Reply({"ok": True}, streams={"out": out}))
    session = make_session(net)

    async def upload() -> Any:
        yield b"payload"

    source = upload()
    result = await session.request("p", {"name": "x", "streams": {"data": source}})
    assert result == {"ok": True, "streams": {"out": out}}  # reply streams are joined back into the result
    assert [(address, op) for address, op in net.ops("leader") + net.ops("request")] == [
        ("a:1", FindLeader()),
        ("b:1", FindLeader()),
        ("b:1", Call({"name": "x"})),  # once, to the leader FindLeader found
    ]
    calls = [(address, op.name, streams) for (address, _, op), streams in zip(net.sent, net.streams, strict=True)]
    assert calls[-1] == ("b:1", "request", {"data": source})
    assert all(streams is None for _, name, streams in calls if name != "request")
    await source.aclose()


async def test_a_request_without_streams_is_sent_once_the_leader_is_known() -> None:
    net = Net()
    net.seed_knows("a")
    net.on("a:1", "request", ["pong"])
    session = make_session(net)
    assert await session.request("p", {"ping": 1}) == ["pong"]
    assert net.ops("leader") == [("a:1", FindLeader())]  # not known to lead yet: probed first
    assert await session.request("p", {"ping": 2}) == ["pong"]
    assert net.ops("leader") == [("a:1", FindLeader())]  # the leader it found: straight away
    sent = net.ops("request")
    assert [(address, op.body) for address, op in sent] == [("a:1", {"ping": 1}), ("a:1", {"ping": 2})]
    # each carries this session's next seq, so routing may send it again (issue 18)
    assert [op.session.seq for _, op in sent if op.session is not None] == [1, 2]


async def test_the_timeout_names_the_last_error(autojump_clock: trio.testing.MockClock) -> None:
    net = Net()
    net.seed_knows("a", "b")
    net.on("a:1", "get", Unavailable("a:1 is restarting"))
    net.on("b:1", "get", Unavailable("b:1 is restarting"))
    session = make_session(net, timeout=1.5)
    start = trio.current_time()
    with pytest.raises(
        Timeout, match=r"partition 'p' within the request timeout of 1\.5 s \(last error: [ab]:1 is rest"
    ):
        await session.kv_get("p", "k", "linearizable")
    assert trio.current_time() - start == pytest.approx(1.5)
    assert len(net.ops("get")) > 4  # it kept trying until the deadline


async def test_the_timeout_names_the_last_error_when_no_seed_answers(autojump_clock: trio.testing.MockClock) -> None:
    net = Net()
    net.on(SEED, "sys.dir", Unavailable("seed:1 refused the connection"))
    session = make_session(net, timeout=1.0)
    with pytest.raises(Timeout, match="last error: .*seed:1 refused the connection"):
        await session.kv_get("p", "k", "linearizable")
    assert len(net.ops("sys.dir")) > 1  # the directory lookup was retried until the deadline
